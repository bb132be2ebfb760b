"""compile(metrics=[...]): accuracy, top-k accuracy, mse, mae, rmse against NumPy formulas,
on the training epoch (several uneven batches), validation data and evaluate."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn.backends import numpy_ops
from fastnn.metrics import TopKAccuracy, get_metric

# ----------------------------------------------------------------------------- formulas


def accuracy(outputs, labels):
    return np.mean(np.argmax(outputs, axis=1) == labels)


def top_k_accuracy(outputs, labels, k):
    """Distinct outputs: the label is among the indices of the k largest."""
    best = np.argsort(-outputs, axis=1)[:, :k]
    return np.mean([label in row for label, row in zip(labels, best)])


def mse(outputs, targets):
    return np.mean((outputs.astype(np.float64) - targets) ** 2)


def mae(outputs, targets):
    return np.mean(np.abs(outputs.astype(np.float64) - targets))


# ----------------------------------------------------------------------------- operations


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("rows, cols", [(1, 1), (13, 7), (64, 10)])
def test_metric_sums_of_the_backends(backend, rows, cols, dtype, rng):
    ops = fnn.get_backend(backend)
    outputs = rng.standard_normal((rows, cols)).astype(dtype)
    targets = rng.standard_normal((rows, cols)).astype(dtype)
    labels = rng.integers(0, cols, rows)
    for k in (1, 2, 5, cols):
        assert ops.top_k_matches(outputs, labels, k) == round(
            top_k_accuracy(outputs, labels, k) * rows)
        onehot = np.eye(cols, dtype=dtype)[labels]
        soft = onehot * 0.7 + 0.3 / cols                  # argmax still the label
        assert ops.top_k_matches_soft(outputs, soft, k) == ops.top_k_matches(outputs, labels, k)
    assert ops.top_k_matches(outputs, labels, 1) == round(accuracy(outputs, labels) * rows)
    expected = np.sum((outputs.astype(np.float64) - targets) ** 2)
    got = ops.squared_error_sum(outputs, targets)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-6 if dtype == np.float32 else 1e-12)


def test_top_k_ties_count_as_in_and_nan_as_out():
    """TensorFlow's in_top_k: a class tied with the k-th largest is in the top k; a NaN
    score at the label never is."""
    outputs = np.array([[1.0, 1.0, 1.0, 0.0],      # label 2 tied with the largest: in at k=1
                        [3.0, 2.0, 2.0, 2.0],      # label 3: one larger, k=1 out, k=2 in
                        [np.nan, 0.0, 1.0, 2.0]])  # label 0 is NaN: out for every k
    labels = np.array([2, 3, 0])
    assert numpy_ops.top_k_matches(outputs, labels, 1) == 1
    assert numpy_ops.top_k_matches(outputs, labels, 2) == 2
    assert numpy_ops.top_k_matches(outputs, labels, 4) == 2


# ----------------------------------------------------------------------------- fit / evaluate


def _frozen(model):
    """An optimiser whose steps change nothing (lr far below the weights' resolution), so
    the training metrics of an epoch are those of the model before it, batch after batch."""
    return fnn.SGD(lr=1e-300)


def _classifier(k=7, head=None):
    layers = [fnn.Linear(5, 12, init="he_normal"), fnn.Tanh(), fnn.Linear(12, k)]
    return fnn.Sequential(*layers, *([head] if head else []), dtype="float64", seed=4)


def _data(rng, n, k=7):
    return rng.standard_normal((n, 5)), rng.integers(0, k, n)


@pytest.mark.parametrize("onehot", [False, True])
def test_classification_metrics_of_fit_and_evaluate(onehot, rng):
    x, y = _data(rng, 37)                     # batches of 10: 10, 10, 10, 7
    xv, yv = _data(rng, 23)
    model = _classifier()
    model.compile(optimizer=_frozen(model), loss="cross_entropy",
                  metrics=["accuracy", "top_k_accuracy", "top_2_accuracy",
                           TopKAccuracy(3), "acc"])
    assert model.metrics == ("accuracy", "top_k_accuracy", "top_2_accuracy",
                             "top_3_accuracy")
    out, out_val = model(x), model(xv)
    target = (lambda labels: np.eye(7)[labels]) if onehot else (lambda labels: labels)
    h = model.fit(x, target(y), epochs=1, batch_size=10, validation_data=(xv, target(yv)),
                  shuffle=True, seed=0, verbose=0).history
    for prefix, o, labels in (("", out, y), ("val_", out_val, yv)):
        assert h[f"{prefix}accuracy"] == [pytest.approx(accuracy(o, labels))]
        assert h[f"{prefix}top_k_accuracy"] == [pytest.approx(top_k_accuracy(o, labels, 5))]
        assert h[f"{prefix}top_2_accuracy"] == [pytest.approx(top_k_accuracy(o, labels, 2))]
        assert h[f"{prefix}top_3_accuracy"] == [pytest.approx(top_k_accuracy(o, labels, 3))]
    result = model.evaluate(xv, target(yv), batch_size=4)
    assert result["top_3_accuracy"] == pytest.approx(top_k_accuracy(out_val, yv, 3))
    assert 0 < result["top_2_accuracy"] < result["top_3_accuracy"] < 1  # a real test


def test_top_k_accuracy_after_a_softmax_layer_ranks_the_probabilities(rng):
    x, y = _data(rng, 29)
    model = _classifier(head=fnn.Softmax())
    model.compile(optimizer=_frozen(model), loss="categorical_crossentropy",
                  metrics=["top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy"])
    assert model.metrics == ("top_k_accuracy",)
    probabilities = model(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1)
    assert model.evaluate(x, y, batch_size=8)["top_k_accuracy"] == pytest.approx(
        top_k_accuracy(probabilities, y, 5))


def test_regression_metrics_rmse_is_over_all_samples_not_a_mean_of_batches(rng):
    x, xv = rng.standard_normal((37, 5)), rng.standard_normal((23, 5))
    t, tv = rng.standard_normal((37, 3)) * 2, rng.standard_normal((23, 3)) * 2
    model = fnn.Sequential(fnn.Linear(5, 8), fnn.ReLU(), fnn.Linear(8, 3), dtype="float64",
                           seed=1)
    model.compile(optimizer=_frozen(model), loss="mse",
                  metrics=["mse", "mean_absolute_error", "rmse", "root_mean_squared_error"])
    assert model.metrics == ("mse", "mae", "rmse")
    out, out_val = model(x), model(xv)
    h = model.fit(x, t, epochs=2, batch_size=10, validation_data=(xv, tv), shuffle=False,
                  verbose=0).history
    for prefix, o, targets in (("", out, t), ("val_", out_val, tv)):
        assert h[f"{prefix}mse"] == [pytest.approx(mse(o, targets))] * 2
        assert h[f"{prefix}mae"] == [pytest.approx(mae(o, targets))] * 2
        assert h[f"{prefix}rmse"] == [pytest.approx(np.sqrt(mse(o, targets)))] * 2
        assert h[f"{prefix}mse"][0] == pytest.approx(h[f"{prefix}loss"][0])
    batch_rmses = [np.sqrt(mse(out[i:i + 10], t[i:i + 10])) for i in range(0, 37, 10)]
    assert abs(np.mean(batch_rmses) - h["rmse"][0]) > 1e-3     # the distinction is seen
    result = model.evaluate(xv, tv, batch_size=6)
    assert result["rmse"] == pytest.approx(np.sqrt(mse(out_val, tv)))
    assert result["mae"] == pytest.approx(mae(out_val, tv))


def test_metrics_are_not_weighted_the_loss_is(rng):
    """As Keras's ``metrics`` (not ``weighted_metrics``): class_weight and sample_weight
    scale the training loss, the metrics stay the plain means."""
    x, y = _data(rng, 40)
    runs = {}
    for name, kw in (("plain", {}), ("class", {"class_weight": {0: 5.0, 3: 0.1}}),
                     ("sample", {"sample_weight": rng.uniform(0.1, 3.0, 40)})):
        model = _classifier()
        model.compile(optimizer=_frozen(model), loss="cross_entropy",
                      metrics=["accuracy", "top_3_accuracy"])
        out = model(x)
        runs[name] = model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0, **kw).history
        assert runs[name]["top_3_accuracy"] == [pytest.approx(top_k_accuracy(out, y, 3))]
        assert runs[name]["accuracy"] == [pytest.approx(accuracy(out, y))]
    assert runs["class"]["loss"] != pytest.approx(runs["plain"]["loss"])
    assert runs["sample"]["loss"] != pytest.approx(runs["plain"]["loss"])


def test_metrics_the_loss_cannot_report_are_refused():
    model = _classifier()
    with pytest.raises(ValueError, match=r"'rmse' is not defined for CrossEntropyLoss"):
        model.compile(loss="cross_entropy", metrics=["rmse"])
    with pytest.raises(ValueError, match=r"supports \['mse', 'mae', 'rmse'\]"):
        model.compile(loss="mse", metrics=["top_k_accuracy"])
    with pytest.raises(ValueError, match="'accuracy' is not defined for MSELoss"):
        model.compile(loss="mse", metrics=["accuracy"])
    with pytest.raises(ValueError, match="unknown metric 'f1'; valid names: acc, accuracy"):
        model.compile(loss="cross_entropy", metrics=["f1"])
    with pytest.raises(ValueError, match="integer k >= 1"):
        model.compile(loss="cross_entropy", metrics=["top_0_accuracy"])
    with pytest.raises(TypeError, match="a metric is a name"):
        model.compile(loss="cross_entropy", metrics=[len])
    model.compile(loss="bce_with_logits", metrics="accuracy")   # one name is a list of one
    assert model.metrics == ("accuracy",)
    assert get_metric("ACCURACY") is get_metric("acc")


def test_saved_model_keeps_its_metrics(tmp_path, rng):
    x, y = _data(rng, 20)
    model = _classifier()
    model.compile(loss="cross_entropy", metrics=[TopKAccuracy(2), "accuracy"])
    model.save(tmp_path / "m.fnn")
    loaded = fnn.load(tmp_path / "m.fnn")
    assert loaded.metrics == ("top_2_accuracy", "accuracy")
    assert loaded.evaluate(x, y) == pytest.approx(model.evaluate(x, y))
