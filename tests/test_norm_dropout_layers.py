"""BatchNorm1d, LayerNorm and Dropout as layers: PyTorch's documented behaviour (written
out from the formulas), train/eval modes, buffers, any-rank inputs, finite differences,
saving and loading."""
import numpy as np
import pytest

import fastnn as fnn
from gradcheck import check_model_gradients

BACKENDS = ["numba", "numpy"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_norm_matches_the_formula_on_3d_inputs(backend, rng):
    ln = fnn.LayerNorm(7, eps=1e-5)
    ln.weight.data[...] = rng.normal(size=7)
    ln.bias.data[...] = rng.normal(size=7)
    model = fnn.Sequential(ln, dtype="float64").to(backend)
    x = rng.normal(size=(3, 5, 7)) * 4 + 2
    y = model(x)
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)                  # biased, as PyTorch
    expected = (x - mean) / np.sqrt(var + 1e-5) * ln.weight.data + ln.bias.data
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_norm_backward_matches_finite_differences(backend, rng):
    model = fnn.Sequential(fnn.Linear(5, 6), fnn.LayerNorm(6), fnn.Linear(6, 3),
                           dtype="float64", seed=4).to(backend)
    model[1].weight.data[...] = rng.normal(size=6)
    model[1].bias.data[...] = rng.normal(size=6)
    check_model_gradients(model, rng.normal(size=(2, 4, 5)), rng, model.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_training_statistics_and_running_estimates(backend, rng):
    bn = fnn.BatchNorm1d(4, momentum=0.1)
    model = fnn.Sequential(bn, dtype="float64").to(backend)
    x = rng.normal(size=(6, 3, 4)) * 3 + 1               # stats over 18 values per feature
    y = model(x)
    flat = x.reshape(-1, 4)
    mean, var = flat.mean(axis=0), flat.var(axis=0)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var * 18 / 17, rtol=1e-12)
    assert bn.num_batches_tracked[0] == 1
    model.eval()
    y_eval = model(x)
    np.testing.assert_allclose(
        y_eval, (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-5), rtol=1e-12)
    assert bn.num_batches_tracked[0] == 1              # evaluation does not update


def test_batch_norm_cumulative_average_with_momentum_none(rng):
    bn = fnn.BatchNorm1d(3, momentum=None)
    model = fnn.Sequential(bn, dtype="float64")
    batches = [rng.normal(size=(5, 3)) + i for i in range(3)]
    for b in batches:
        model(b)
    np.testing.assert_allclose(bn.running_mean, np.mean([b.mean(axis=0) for b in batches],
                                                        axis=0), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batch_norm_backward_matches_finite_differences(backend, mode, rng):
    model = fnn.Sequential(fnn.Linear(3, 5), fnn.BatchNorm1d(5), fnn.Linear(5, 2),
                           dtype="float64", seed=5).to(backend)
    bn = model[1]
    bn.weight.data[...] = rng.normal(size=5)
    bn.bias.data[...] = rng.normal(size=5)
    bn.running_mean[...] = rng.normal(size=5)
    bn.running_var[...] = rng.uniform(0.5, 2.0, size=5)
    bn.momentum = 0.0                      # the checks re-run the forward many times
    getattr(model, mode)()
    check_model_gradients(model, rng.normal(size=(6, 3)), rng, model.parameters())


def test_batch_norm_refuses_a_single_value_per_feature_in_training():
    bn = fnn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than one value per feature"):
        fnn.Sequential(bn)(np.ones((1, 3)))
    bn.eval()
    fnn.Sequential(bn)(np.ones((1, 3)))


def test_normalisation_arguments_are_checked():
    with pytest.raises(ValueError, match="eps"):
        fnn.LayerNorm(4, eps=0)
    with pytest.raises(ValueError, match="momentum"):
        fnn.BatchNorm1d(4, momentum=1.5)
    with pytest.raises(ValueError, match="last axis"):
        fnn.LayerNorm((3, 4))
    assert fnn.BatchNorm1d(4, affine=False).parameters() == []
    assert [n for n, _ in fnn.LayerNorm(4, bias=False).named_parameters()] == ["weight"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_inverted_and_the_identity_in_eval(backend, rng):
    drop = fnn.Dropout(0.3, seed=11)
    model = fnn.Sequential(drop, dtype="float64").to(backend)
    x = rng.normal(size=(200, 50)) + 3.0
    y = model(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-12)
    assert abs(kept.mean() - 0.7) < 4 * np.sqrt(0.21 / x.size)
    g = rng.normal(size=x.shape)
    np.testing.assert_allclose(model.backward(g, input_grad=True), np.where(kept, g / 0.7, 0))
    model.eval()
    np.testing.assert_array_equal(model(x), x)


def test_dropout_streams_are_reproducible_and_continue_after_loading(tmp_path, rng):
    x = rng.normal(size=(8, 16)) + 3.0
    a = fnn.Sequential(fnn.Linear(16, 16), fnn.Dropout(0.5), dtype="float64", seed=1)
    b = fnn.Sequential(fnn.Linear(16, 16), fnn.Dropout(0.5), dtype="float64", seed=1)
    first = a(x)
    np.testing.assert_array_equal(first, b(x))               # same seed, same masks
    assert not np.array_equal((a(x) != 0), (first != 0))     # the stream moves on
    a.save(tmp_path / "d.fnn")
    loaded = fnn.load(tmp_path / "d.fnn")
    loaded.train()
    np.testing.assert_array_equal(loaded(x), a(x))           # the same next mask
    with fnn.use_backend("numpy"):
        c = fnn.Sequential(fnn.Linear(16, 16), fnn.Dropout(0.5), dtype="float64", seed=1)
        np.testing.assert_array_equal(c(x), first)           # and on every backend
    assert fnn.Dropout(1.0, seed=0).p == 1.0
    np.testing.assert_array_equal(fnn.Sequential(fnn.Dropout(1.0, seed=0))(x), 0)
    with pytest.raises(ValueError, match="p must be <= 1"):
        fnn.Dropout(1.5)


def test_a_model_with_batchnorm_and_dropout_trains_saves_and_loads(tmp_path, rng):
    x = rng.normal(size=(300, 10)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = fnn.Sequential(fnn.Linear(10, 32, init="he_normal"), fnn.BatchNorm1d(32),
                           fnn.ReLU(), fnn.Dropout(0.2), fnn.Linear(32, 2), seed=0)
    model.compile(optimizer=fnn.Adam(lr=0.01), loss="cross_entropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=8, batch_size=30, validation_data=(x, y), verbose=0)
    assert history.history["val_accuracy"][-1] > 0.9
    assert not model.training
    model.save(tmp_path / "bn.fnn")
    loaded = fnn.load(tmp_path / "bn.fnn")
    loaded.eval()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded[1].running_var, model[1].running_var)
