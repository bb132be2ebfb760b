"""compile/fit/evaluate/predict, reproducibility, state_dict, optimiser behaviour."""
import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fnn


def blobs(n=600, d=10, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def make_model(d=10, k=3, seed=0, **kw):
    return fnn.Sequential(fnn.Linear(d, 16, init="he_normal"), fnn.ReLU(), fnn.Linear(16, k),
                          seed=seed, **kw)


def test_fit_learns_and_reports(capsys):
    x, y = blobs()
    model = make_model()
    model.compile(optimizer=fnn.SGD(lr=0.1, momentum=0.9), loss="cross_entropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, batch_size=32, validation_data=blobs(seed=1),
                        seed=0, verbose=0)
    assert capsys.readouterr().out == ""
    h = history.history
    assert set(h) >= {"loss", "accuracy", "val_loss", "val_accuracy", "samples_per_second"}
    assert len(h["loss"]) == 5 and h["loss"][-1] < h["loss"][0]
    assert h["accuracy"][-1] > 0.95
    result = model.evaluate(x, y)
    assert result["accuracy"] > 0.95 and result["loss"] < 0.2
    labels = model.predict(x)
    assert labels.shape == (600,) and labels.dtype.kind == "i"
    assert np.mean(labels == y) == pytest.approx(result["accuracy"])
    proba = model.predict_proba(x[:7])
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), labels[:7])


def test_verbose_progress_output(capsys):
    x, y = blobs(n=100)
    model = make_model()
    model.compile(loss="cross_entropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=50, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "samples/s" in out and "loss:" in out and "accuracy:" in out


def test_same_seed_same_result():
    x, y = blobs()
    runs = []
    for _ in range(2):
        model = make_model(seed=7)
        model.compile(optimizer=fnn.SGD(lr=0.05, momentum=0.9), loss="cross_entropy")
        model.fit(x, y, epochs=2, batch_size=64, seed=3, verbose=0)
        runs.append(model.state_dict())
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key])
    other = make_model(seed=8).state_dict()
    assert not np.array_equal(other["0.weight"], make_model(seed=7).state_dict()["0.weight"])


def test_state_dict_round_trip_predicts_identically():
    x, y = blobs()
    model = make_model()
    model.compile(optimizer=fnn.SGD(lr=0.1), loss="cross_entropy")
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    state = model.state_dict()
    clone = make_model(seed=99)
    clone.load_state_dict(state)
    np.testing.assert_array_equal(clone(x), model(x))
    state["0.weight"][...] = 0                    # a copy: the model is not affected
    assert model.parameters()[0].data.any()
    bad = dict(state)
    bad["2.weight"] = np.ones((3, 3))
    with pytest.raises(ValueError, match="shape"):
        clone.load_state_dict(bad)
    with pytest.raises(ValueError, match="missing"):
        clone.load_state_dict({"0.weight": state["0.weight"]})


def test_explicit_protocol_equals_fit():
    """fit() is exactly the documented hand-written loop."""
    x, y = blobs(n=256)
    a, b = make_model(seed=1), make_model(seed=1)
    a.compile(optimizer=fnn.SGD(lr=0.1, momentum=0.5), loss="cross_entropy")
    a.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    loss_fn, opt = fnn.CrossEntropyLoss(), fnn.SGD(b.parameters(), lr=0.1, momentum=0.5)
    for xb, yb in fnn.batches(x, y, batch_size=64):
        logits = b(xb)
        loss, grad = loss_fn(logits, yb)
        opt.zero_grad(); b.backward(grad); opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)


@pytest.mark.parametrize("loss,targets", [
    ("bce_with_logits", lambda y: (y == 1).astype(np.float32)),
    ("mse", lambda y: np.eye(3, dtype=np.float32)[y]),
    ("cross_entropy", lambda y: np.eye(3, dtype=np.float32)[y]),     # one-hot targets
])
def test_other_losses_train(loss, targets):
    x, y = blobs()
    t = targets(y)
    model = make_model(k=1 if loss == "bce_with_logits" else 3)
    metrics = ["mae"] if loss == "mse" else ["accuracy"]
    model.compile(optimizer=fnn.SGD(lr=0.05, momentum=0.9), loss=loss, metrics=metrics)
    h = model.fit(x, t, epochs=4, batch_size=32, seed=0, verbose=0).history
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    if loss == "bce_with_logits":
        assert h["accuracy"][-1] > 0.9
        assert set(np.unique(model.predict(x))) <= {0, 1}
        p = model.predict_proba(x[:5])
        assert p.shape == (5, 1) and ((p > 0) & (p < 1)).all()


def test_backends_train_alike():
    x, y = blobs(n=256)
    results = {}
    for backend in ("numba", "numpy"):
        model = make_model(seed=5, backend=backend)
        model.compile(optimizer=fnn.SGD(lr=0.05, momentum=0.9), loss="cross_entropy")
        model.fit(x, y, epochs=2, batch_size=32, seed=0, verbose=0)
        results[backend] = model.state_dict()
    for key in results["numba"]:
        np.testing.assert_allclose(results["numba"][key], results["numpy"][key],
                                   rtol=1e-4, atol=1e-5)


def test_backend_selection():
    assert fnn.get_backend().name == "numba"
    with fnn.use_backend("numpy") as be:
        assert be.name == "numpy" and fnn.get_backend().name == "numpy"
    assert fnn.get_backend().name == "numba"
    fnn.set_backend("numpy")
    try:
        assert fnn.get_backend().name == "numpy"
    finally:
        fnn.set_backend("numba")
    with pytest.raises(ValueError, match="valid names: numba, numpy, cuda"):
        fnn.get_backend("tpu")
    model = make_model(backend="numpy")
    assert model.backend == "numpy"


def test_cuda_without_a_gpu_is_one_clear_error():
    """Where no GPU/driver exists, asking for "cuda" says what is missing and how to
    install it (in a fresh process: the simulator variable must not be set)."""
    code = ("import fastnn as fnn\n"
            "try:\n"
            "    fnn.Sequential(fnn.Linear(2, 2), backend='cuda')\n"
            "except fnn.BackendUnavailableError as exc:\n"
            "    print('ERROR', exc)\n"
            "else:\n"
            "    print('GPU')\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    if out.startswith("GPU"):
        pytest.skip("this machine has a usable CUDA GPU")
    assert "NVIDIA GPU" in out and 'pip install "fastnn[cuda13]"' in out
    assert "NUMBA_ENABLE_CUDASIM=1" in out


def test_divergence_is_an_error():
    x, y = blobs()
    x[0] *= 1e30
    model = make_model()
    model.compile(optimizer=fnn.SGD(lr=10.0), loss="cross_entropy")
    with pytest.raises(fnn.TrainingDivergedError, match="loss became"):
        model.fit(x.astype(np.float32), y, epochs=3, verbose=0, shuffle=False)


def test_gradient_clipping():
    x, y = blobs(n=64)
    model = make_model()
    logits = model(x)
    _, grad = fnn.CrossEntropyLoss()(logits, y)
    model.zero_grad()
    model.backward(grad * 1000)
    grads = [p.grad.copy() for p in model.parameters()]
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    before = [p.data.copy() for p in model.parameters()]
    fnn.SGD(model.parameters(), lr=1.0, clip_norm=1.0).step()
    steps = [b - p.data for b, p in zip(before, model.parameters())]
    step_norm = np.sqrt(sum((s.astype(np.float64) ** 2).sum() for s in steps))
    assert norm > 10 and step_norm == pytest.approx(1.0, rel=1e-4)
    model.zero_grad(); model.backward(grad * 1000)
    before = [p.data.copy() for p in model.parameters()]
    fnn.SGD(model.parameters(), lr=1.0, clip_value=0.01).step()
    assert max(np.abs(b - p.data).max() for b, p in zip(before, model.parameters())) <= 0.01 + 1e-7


def test_optimizer_state_round_trip():
    model = make_model()
    opt = fnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = blobs(n=64)
    _, grad = fnn.CrossEntropyLoss()(model(x), y)
    opt.zero_grad(); model.backward(grad); opt.step()
    state = opt.state_dict()
    assert any(s["velocity"].any() for s in state["state"])
    opt2 = fnn.SGD(model.parameters(), lr=0.5, momentum=0.9)
    opt2.load_state_dict(state)
    assert opt2.lr == 0.1
    for a, b in zip(opt.state, opt2.state):
        np.testing.assert_array_equal(a["velocity"], b["velocity"])


def test_api_errors_are_clear():
    model = make_model()
    x, y = blobs(n=20)
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y)
    with pytest.raises(ValueError, match="valid names"):
        model.compile(loss="hinge")
    with pytest.raises(ValueError, match="valid names"):
        model.compile(optimizer="adagrad")
    model.compile(loss="cross_entropy", metrics=["accuracy"])
    with pytest.raises(ValueError, match="label 3, outside \\[0, 3\\)"):
        model.fit(x, np.full(20, 3))
    with pytest.raises(ValueError, match="label -1"):
        model.fit(x, np.full(20, -1))
    with pytest.raises(ValueError, match=r"label 7, .*np.unique\(y, return_inverse=True\)"):
        model.fit(x, np.where(y == 0, 3, 7))      # labels {3, 7}: the message says how to map
    with pytest.raises(ValueError, match="19 labels but the batch has 20"):
        model.fit(x, y[:19])
    with pytest.raises(ValueError, match="whole-number"):
        model.fit(x, y + 0.5)
    with pytest.raises(ValueError, match="lr must be > 0"):
        fnn.SGD(lr=-0.1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.fit(x, y, batch_size=0)
    with pytest.raises(ValueError, match="not defined"):
        model.compile(loss="mse", metrics=["accuracy"])
    with pytest.warns(UserWarning, match="Softmax"):
        fnn.Sequential(fnn.Linear(10, 3), fnn.Softmax()).compile(loss="cross_entropy")


def test_read_only_and_non_contiguous_inputs_give_the_same_answer():
    x, y = blobs(n=128)
    model = make_model()
    model.compile(optimizer=fnn.SGD(lr=0.05), loss="cross_entropy", metrics=["accuracy"])
    expected = model(x)
    frozen = x.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(model(frozen), expected)
    strided = np.repeat(x, 2, axis=1)[:, ::2]                 # a non-contiguous view
    np.testing.assert_array_equal(model(strided), expected)
    np.testing.assert_array_equal(model(np.asfortranarray(x)), expected)
    labels = y.copy()
    labels.flags.writeable = False
    before = frozen.copy()
    model.fit(frozen, labels, epochs=1, batch_size=32, verbose=0)   # trains, never writes x
    np.testing.assert_array_equal(frozen, before)


@pytest.mark.parametrize("loss", [fnn.CrossEntropyLoss(), fnn.BCEWithLogitsLoss(),
                                  fnn.MSELoss(), fnn.CrossEntropyLoss(from_logits=False)])
def test_loss_called_on_3d_predictions_names_the_shape(loss):
    """A loss is per row: (batch, steps, outputs) predictions get a ValueError naming
    the shape and the reshape, before any kernel sees them (found by hypothesis)."""
    pred = np.random.default_rng(0).random((2, 3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"2-D \(batch, outputs\), got shape \(2, 3, 4\)"):
        loss(pred, np.zeros(2, dtype=np.int64))
