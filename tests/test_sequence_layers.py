"""Sequence layers (Embedding, PositionalEmbedding, SinusoidalPositionalEncoding, MeanPool,
FirstToken, Residual) on the module protocol: the formulas written out, integer inputs,
every backward against central finite differences (float64), output shapes, modes,
saving and loading, and a small sequence classifier that fit() trains."""
import numpy as np
import pytest

import fastnn as fnn
from gradcheck import check_model_gradients

BACKENDS = ["numba", "numpy"]


def _seq_model(vocab=11, dim=6, max_len=9, classes=3, seed=0, dtype="float64"):
    """Embedding -> PositionalEmbedding -> Residual(Linear) -> MeanPool -> Linear."""
    return fnn.Sequential(fnn.Embedding(vocab, dim), fnn.PositionalEmbedding(max_len, dim),
                          fnn.Residual(fnn.Linear(dim, dim)), fnn.MeanPool(),
                          fnn.Linear(dim, classes), dtype=dtype, seed=seed)


# --------------------------------------------------------------------------- Embedding
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(4,), (3, 5), (2, 3, 4)], ids=str)
def test_embedding_looks_up_rows(shape, backend, dtype, rng):
    emb = fnn.Embedding(13, 7, dtype=dtype, seed=1)
    model = fnn.Sequential(emb, dtype=dtype).to(backend)
    x = rng.integers(0, 13, shape)
    y = model(x)
    assert y.shape == shape + (7,) and y.dtype == dtype
    np.testing.assert_array_equal(y, emb.weight.data[x])
    assert model.output_shape(shape) == shape + (7,)
    for ids in (x.astype(np.int32), x.astype(np.uint8), x.tolist()):
        np.testing.assert_array_equal(model(ids), y)


def test_embedding_initialisation():
    emb = fnn.Embedding(4000, 50, seed=0)
    assert emb.weight.dtype == np.float32 and emb.weight.shape == (4000, 50)
    assert abs(emb.weight.data.std() - 1.0) < 0.01 and abs(emb.weight.data.mean()) < 0.01
    small = fnn.Embedding(4000, 50, init=0.02, seed=0)
    assert abs(small.weight.data.std() - 0.02) < 0.001
    padded = fnn.Embedding(10, 4, padding_idx=-1, seed=0)
    assert padded.padding_idx == 9 and not padded.weight.data[9].any()
    with pytest.raises(ValueError, match="standard deviation"):
        fnn.Embedding(10, 4, init="uniform")
    with pytest.raises(ValueError, match="padding_idx"):
        fnn.Embedding(10, 4, padding_idx=10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_backward_matches_finite_differences(backend, rng):
    """The gradient of sum(w * out) with respect to the table; ids repeat."""
    model = fnn.Sequential(fnn.Embedding(6, 4, seed=2), dtype="float64").to(backend)
    x = np.array([[5, 1, 1], [0, 5, 5]])
    check_model_gradients(model, x, rng, input_grad=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_gradient_accumulates_and_zero_grad_clears_unused_rows(backend, rng):
    emb = fnn.Embedding(8, 3, dtype="float64", seed=3)
    model = fnn.Sequential(emb).to(backend)
    g = rng.normal(size=(2, 3, 3))
    expected = np.zeros((8, 3))
    for ids in ([[1, 2, 1], [7, 1, 2]], [[4, 4, 1], [0, 0, 0]]):
        model(ids)
        model.backward(g)                                   # no zero_grad: accumulates
        np.add.at(expected, np.array(ids).reshape(-1), g.reshape(-1, 3))
        np.testing.assert_allclose(emb.weight.grad, expected, rtol=1e-12)
    model.zero_grad()
    model([[3, 3, 3], [3, 3, 3]])
    model.backward(g)
    np.testing.assert_allclose(emb.weight.grad[3], g.reshape(-1, 3).sum(axis=0), rtol=1e-12)
    assert not np.delete(emb.weight.grad, 3, axis=0).any()   # dense gradient: the rest is 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_padding_row_is_zero_and_never_trained(optimizer, rng):
    model = fnn.Sequential(fnn.Embedding(10, 4, padding_idx=0), fnn.MeanPool(),
                           fnn.Linear(4, 2), seed=0)
    opt = fnn.SGD(lr=0.5, momentum=0.9, weight_decay=0.1) if optimizer == "sgd" else \
        fnn.Adam(lr=0.1, weight_decay=0.1)
    model.compile(optimizer=opt, loss="cross_entropy")
    x = rng.integers(0, 10, (40, 6))
    x[:, ::2] = 0
    model.fit(x, rng.integers(0, 2, 40), epochs=3, batch_size=8, verbose=0)
    assert not model[0].weight.data[0].any()
    assert model[0].weight.data[1:].all()


def test_embedding_inputs_are_checked():
    model = fnn.Sequential(fnn.Embedding(5, 3), fnn.MeanPool(), fnn.Linear(3, 2))
    with pytest.raises(TypeError, match=r"integer indices.*astype\(np.int64\)"):
        model(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="integer indices"):
        model(np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match=r"index 5, outside \[0, 5\)"):
        model(np.array([[0, 5, 1]]))
    with pytest.raises(ValueError, match=r"index -1, outside"):
        model(np.array([[0, -1, 1]]))
    with pytest.raises(ValueError, match=r"index 4294967296"):
        model(np.array([[2**32]], np.uint64))
    with pytest.raises(ValueError, match="empty batch"):
        model(np.zeros((0, 3), np.int64))
    with pytest.raises(ValueError, match="empty axis"):
        model(np.zeros((2, 0), np.int64))
    with pytest.raises(ValueError, match="scalar"):
        model(np.int64(3))
    with pytest.raises(TypeError, match="first layer"):
        fnn.Sequential(fnn.Linear(3, 3), fnn.Embedding(5, 3))(np.ones((2, 3)))
    x = np.array([[0, 1, 2]])
    before = x.copy()
    model(x)
    np.testing.assert_array_equal(x, before)                 # ids are not modified


# --------------------------------------------------------------------------- positions
@pytest.mark.parametrize("backend", BACKENDS)
def test_positional_embedding_adds_its_rows(backend, rng, dtype):
    pos = fnn.PositionalEmbedding(9, 5, dtype=dtype, seed=0)
    model = fnn.Sequential(pos, dtype=dtype).to(backend)
    x = rng.normal(size=(3, 7, 5)).astype(dtype)
    np.testing.assert_allclose(model(x), x + pos.weight.data[:7], rtol=1e-6)
    assert abs(fnn.PositionalEmbedding(500, 64, seed=0).weight.data.std() - 0.02) < 1e-3
    with pytest.raises(ValueError, match=r"max_len=9, got seq = 10"):
        model(rng.normal(size=(2, 10, 5)))
    with pytest.raises(ValueError, match=r"\(batch, seq, dim\)"):
        model(rng.normal(size=(2, 5)))
    with pytest.raises(ValueError, match="max_len=9"):
        model.output_shape((None, 12, 5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_positional_embedding_backward_matches_finite_differences(backend, rng):
    """Rows past the sequence get zero gradient."""
    model = fnn.Sequential(fnn.Linear(3, 4), fnn.PositionalEmbedding(6, 4), fnn.Tanh(),
                           dtype="float64", seed=1).to(backend)
    check_model_gradients(model, rng.normal(size=(2, 4, 3)), rng)
    assert not model[1].weight.grad[4:].any()


def test_sinusoidal_table_is_the_vaswani_formula():
    table = fnn.sequence.sinusoid_table(50, 7)
    for pos in (0, 1, 13, 49):
        for i in range(7):
            angle = pos / 10000 ** ((i - i % 2) / 7)
            expected = np.sin(angle) if i % 2 == 0 else np.cos(angle)
            assert table[pos, i] == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sinusoidal_encoding_adds_the_table_and_passes_gradients(backend, rng, dtype):
    enc = fnn.SinusoidalPositionalEncoding(6, max_len=8)
    model = fnn.Sequential(enc, dtype=dtype).to(backend)
    x = rng.normal(size=(2, 5, 6)).astype(dtype)
    expected = x + fnn.sequence.sinusoid_table(8, 6)[:5]
    np.testing.assert_allclose(model(x), expected, rtol=1e-6, atol=1e-6)
    g = rng.normal(size=x.shape)
    np.testing.assert_allclose(model.backward(g, input_grad=True), g.astype(dtype))
    assert model.parameters() == [] and model.state_dict() == {}      # nothing to save
    with pytest.raises(ValueError, match=r"max_len=8, got seq = 9"):
        model(rng.normal(size=(1, 9, 6)))


def test_sinusoidal_encoding_backward_matches_finite_differences(rng):
    model = fnn.Sequential(fnn.Linear(3, 4), fnn.SinusoidalPositionalEncoding(4, 10),
                           fnn.Tanh(), fnn.Linear(4, 2), dtype="float64", seed=2)
    check_model_gradients(model, rng.normal(size=(2, 5, 3)), rng)


# --------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("backend", BACKENDS)
def test_mean_pool_over_any_axis(backend, rng, dtype):
    x = rng.normal(size=(2, 3, 4, 5)).astype(dtype)
    for axis, reduced in ((1, 1), (-2, 2), (3, 3), (-1, 3)):
        model = fnn.Sequential(fnn.MeanPool(axis), dtype=dtype).to(backend)
        y = model(x)
        np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=reduced), rtol=1e-5,
                                   atol=1e-6)
        assert y.shape == model.output_shape(x.shape)
        g = rng.normal(size=y.shape).astype(dtype)
        dx = model.backward(g, input_grad=True)
        np.testing.assert_allclose(dx, np.broadcast_to(np.expand_dims(g, reduced) /
                                                       x.shape[reduced], x.shape), rtol=1e-6)
    assert fnn.MeanPool().output_shape((None, None, 16)) == (None, 16)
    with pytest.raises(ValueError, match="batch"):
        fnn.MeanPool(0)
    with pytest.raises(ValueError, match="besides the batch axis"):
        fnn.MeanPool(-3).output_shape((4, 16))


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_token(backend, rng, dtype):
    model = fnn.Sequential(fnn.FirstToken(), dtype=dtype).to(backend)
    x = rng.normal(size=(3, 4, 5)).astype(dtype)
    np.testing.assert_array_equal(model(x), x[:, 0])
    g = rng.normal(size=(3, 5)).astype(dtype)
    dx = model.backward(g, input_grad=True)
    np.testing.assert_array_equal(dx[:, 0], g)
    assert not dx[:, 1:].any()
    x4 = rng.normal(size=(2, 3, 2, 5)).astype(dtype)
    np.testing.assert_array_equal(model(x4), x4[:, 0])
    assert model.output_shape((None, 7, 5)) == (None, 5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pool", ["mean", "first"])
def test_pooling_backward_matches_finite_differences(pool, backend, rng):
    layer = fnn.MeanPool() if pool == "mean" else fnn.FirstToken()
    model = fnn.Sequential(fnn.Linear(3, 5), fnn.Tanh(), layer, fnn.Linear(5, 2),
                           dtype="float64", seed=3).to(backend)
    check_model_gradients(model, rng.normal(size=(2, 4, 3)), rng)


# --------------------------------------------------------------------------- Residual
@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_adds_its_input(backend, rng):
    inner = fnn.Sequential(fnn.Linear(4, 7), fnn.Tanh(), fnn.Linear(7, 4))
    model = fnn.Sequential(fnn.Residual(inner), dtype="float64", seed=4).to(backend)
    x = rng.normal(size=(3, 2, 4))
    a, b = inner[0], inner[2]
    expected = x + np.tanh(x @ a.weight.data + a.bias.data) @ b.weight.data + b.bias.data
    np.testing.assert_allclose(model(x), expected, rtol=1e-12)
    assert [n for n, _ in model.named_parameters()] == [
        "0.module.0.weight", "0.module.0.bias", "0.module.2.weight", "0.module.2.bias"]
    check_model_gradients(model, x, rng)


def test_residual_shapes_modes_and_config():
    with pytest.raises(ValueError, match=r"keeps the shape.*\(None, 4\) to \(None, 3\)"):
        fnn.Residual(fnn.Linear(4, 3))
    with pytest.raises(TypeError, match="Module"):
        fnn.Residual(lambda x: x)
    res = fnn.Residual(fnn.Sequential(fnn.Linear(4, 4), fnn.Dropout(0.5)))
    res.eval()
    assert not res.module[1].training
    res.train()
    assert res.module[1].training
    assert res.n_features == 4
    spec = fnn.module.module_spec(res)
    assert spec["type"] == "Residual" and spec["config"]["module"]["type"] == "Sequential"
    rebuilt = fnn.module.module_from_spec(spec)
    assert isinstance(rebuilt.module[1], fnn.Dropout) and rebuilt.module[1].p == 0.5


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("backend", BACKENDS)
def test_sequence_model_backward_matches_finite_differences(backend, rng):
    model = _seq_model().to(backend)
    check_model_gradients(model, rng.integers(0, 11, (3, 7)), rng, input_grad=False)


def test_backends_agree_on_a_sequence_model(rng):
    x = rng.integers(0, 11, (4, 9))
    g = rng.normal(size=(4, 3))
    results = {}
    for backend in BACKENDS:
        model = fnn.Sequential(fnn.Embedding(11, 6, padding_idx=2),
                               fnn.SinusoidalPositionalEncoding(6, 9),
                               fnn.Residual(fnn.Sequential(fnn.Linear(6, 8), fnn.GELU(),
                                                           fnn.Linear(8, 6))),
                               fnn.FirstToken(), fnn.Linear(6, 3), dtype="float64",
                               seed=5).to(backend)
        y = model(x)
        model.zero_grad()
        model.backward(g)
        results[backend] = [y] + [p.grad.copy() for p in model.parameters()]
    for a, b in zip(*results.values()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_save_and_load_round_trip(tmp_path, rng):
    model = fnn.Sequential(fnn.Embedding(11, 6, padding_idx=0, init=0.5),
                           fnn.PositionalEmbedding(9, 6),
                           fnn.Residual(fnn.Linear(6, 6)), fnn.MeanPool(),
                           fnn.Linear(6, 3), seed=0)
    model.compile(optimizer=fnn.Adam(lr=0.01), loss="cross_entropy", metrics=["accuracy"])
    x, y = rng.integers(0, 11, (20, 9)), rng.integers(0, 3, 20)
    model.fit(x, y, epochs=1, batch_size=5, verbose=0)
    model.save(tmp_path / "seq.fnn")
    loaded = fnn.load(tmp_path / "seq.fnn")
    assert repr(loaded) == repr(model)
    assert loaded[0].padding_idx == 0 and loaded[0].init == 0.5
    assert loaded.input_kind == "indices" and loaded.index_bound == 11
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    # the optimiser state came along: training continues identically
    model.fit(x, y, epochs=1, batch_size=5, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=5, shuffle=False, verbose=0)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)


def test_a_sequence_classifier_learns_whether_a_token_occurs():
    """Label: does token 1 occur in the sequence (about half do)?  Bag-of-tokens models
    solve it; fit() with integer inputs trains one to high accuracy."""
    rng = np.random.default_rng(0)
    n, seq, vocab = 1200, 12, 20
    x = rng.integers(2, vocab, (n, seq))
    has = rng.random(n) < 0.5
    x[has, rng.integers(0, seq, has.sum())] = 1
    y = has.astype(np.int64)
    model = fnn.Sequential(fnn.Embedding(vocab, 16), fnn.PositionalEmbedding(seq, 16),
                           fnn.Residual(fnn.Sequential(fnn.Linear(16, 32), fnn.ReLU(),
                                                       fnn.Linear(32, 16))),
                           fnn.MeanPool(), fnn.Linear(16, 2), seed=0)
    model.compile(optimizer=fnn.Adam(lr=0.01), loss="cross_entropy", metrics=["accuracy"])
    history = model.fit(x[:1000], y[:1000], epochs=15, batch_size=32,
                        validation_data=(x[1000:], y[1000:]), seed=0, verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.95
    assert (model.predict(x[1000:]) == y[1000:]).mean() >= 0.95
    with pytest.raises(ValueError, match=r"index 20, outside \[0, 20\)"):
        model.fit(np.full((4, seq), 20), y[:4], verbose=0)
    with pytest.raises(TypeError, match="integer indices"):
        model.predict(x[:4].astype(np.float32))
