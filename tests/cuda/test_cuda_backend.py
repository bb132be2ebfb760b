"""The "cuda" backend through the public API: same operations as the CPU backends, the
same training results, parameters kept on the device, host state_dicts.

Run under the simulator (``NUMBA_ENABLE_CUDASIM=1``) or on a GPU; shapes are tiny
because every simulated GPU thread is a Python thread.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fnn
from fastnn.backends import OPERATIONS
from fastnn.backends.memory import is_device_array
from cudatest import needs_cuda

pytestmark = needs_cuda


def _data(n=24, features=7, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features))
    y = rng.integers(0, classes, n)
    return x, y


def _model(backend, dtype="float64", seed=3):
    return fnn.Sequential(fnn.Linear(7, 5, init="he_normal", bias_init=0.01), fnn.ReLU(),
                          fnn.Linear(5, 4), fnn.Tanh(), fnn.Linear(4, 3),
                          dtype=dtype, backend=backend, seed=seed)


# Operations the GPU backend deliberately lacks (an error naming them when used): none.
CUDA_GAPS = set()


def test_cuda_backend_provides_every_operation():
    cuda_ops = fnn.get_backend("cuda")
    numba_ops = fnn.get_backend("numba")
    assert cuda_ops.memory == "cuda"
    assert set(OPERATIONS) - set(cuda_ops.provided_by) == CUDA_GAPS
    for op in OPERATIONS:
        assert callable(getattr(numba_ops, op))
        if op in CUDA_GAPS:
            with pytest.raises(NotImplementedError, match=op):
                getattr(cuda_ops, op)
        else:
            assert callable(getattr(cuda_ops, op))
            assert cuda_ops.provided_by[op] == "fastnn.backends.cuda_ops"


def test_batch_norm_backward_in_evaluation_mode_as_on_the_cpu():
    """Fine-tuning with frozen statistics: BatchNorm1d's evaluation-mode backward on the
    GPU gives the CPU's input and parameter gradients (3-D input, both BatchNorm forms)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 2, 4))
    grad = rng.normal(size=(5, 2, 3))
    running = [(rng.normal(size=6), rng.uniform(0.5, 2.0, 6)) for _ in range(2)]
    grads = {}
    for backend in ("numba", "cuda"):
        model = fnn.Sequential(fnn.Linear(4, 6), fnn.BatchNorm1d(6), fnn.ReLU(),
                               fnn.BatchNorm1d(6, affine=False), fnn.Linear(6, 3),
                               dtype="float64", seed=9)
        for bn, (mean, var) in zip((model[1], model[3]), running):
            bn.running_mean[...] = mean
            bn.running_var[...] = var
        model.to(backend).eval()
        model(x)
        model.zero_grad()
        dx = fnn.get_backend(backend).to_numpy(model.backward(grad, input_grad=True))
        grads[backend] = [dx] + [fnn.get_backend(backend).to_numpy(p.grad)
                                 for p in model.parameters()]
    for got, want in zip(grads["cuda"], grads["numba"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_parameters_live_on_the_device_and_state_dict_is_host():
    model = _model("cuda")
    assert all(is_device_array(p.data) for p in model.parameters())
    state = model.state_dict()
    assert all(type(v) is np.ndarray for v in state.values())
    reference = _model("numba").state_dict()
    for name in state:
        np.testing.assert_array_equal(state[name], reference[name])    # same seed, same init
    doubled = {k: 2 * v for k, v in state.items()}
    model.load_state_dict(doubled)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, doubled[name])
    model.to("numba")
    assert not any(is_device_array(p.data) for p in model.parameters())
    np.testing.assert_array_equal(model.state_dict()["0.weight"], doubled["0.weight"])


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 2e-4)])
def test_short_training_run_matches_the_cpu_backend(dtype, rtol):
    x, y = _data()
    histories, weights = {}, {}
    for backend in ("numba", "cuda"):
        model = _model(backend, dtype)
        model.compile(optimizer=fnn.SGD(lr=0.1, momentum=0.9, clip_norm=5.0),
                      loss="cross_entropy", metrics=["accuracy"])
        histories[backend] = model.fit(x, y, epochs=2, batch_size=16, shuffle=True, seed=1,
                                       verbose=0).history
        weights[backend] = model.state_dict()
        if backend == "cuda":
            proba = model.predict_proba(x[:5])
            labels = model.predict(x[:5])
            assert type(proba) is np.ndarray and type(labels) is np.ndarray
            np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
            np.testing.assert_array_equal(labels, proba.argmax(axis=1))
    np.testing.assert_allclose(histories["cuda"]["loss"], histories["numba"]["loss"], rtol=rtol)
    assert histories["cuda"]["accuracy"] == histories["numba"]["accuracy"]
    for name in weights["numba"]:
        np.testing.assert_allclose(weights["cuda"][name], weights["numba"][name], rtol=rtol,
                                   atol=rtol)


def test_a_training_step_moves_only_the_batch_and_the_loss(monkeypatch):
    """Per step: the batch and its labels go to the device, the loss value (and the
    accuracy count) come back; parameters, gradients, optimiser state and activations
    never leave the device."""
    from numba import cuda
    x, y = _data(n=16)
    model = _model("cuda")
    model.compile(optimizer=fnn.SGD(lr=0.1, momentum=0.9), loss="cross_entropy",
                  metrics=["accuracy"])
    model.fit(x[:8], y[:8], epochs=1, batch_size=8, verbose=0)     # warm-up: state placed
    counts = {"to_device": 0, "to_host": 0}
    real_to_device = cuda.to_device
    array_type = type(model[0].weight.data)
    real_to_host = array_type.copy_to_host

    def to_device(*args, **kwargs):
        counts["to_device"] += 1
        return real_to_device(*args, **kwargs)

    def to_host(self, *args, **kwargs):
        counts["to_host"] += 1
        return real_to_host(self, *args, **kwargs)

    monkeypatch.setattr(cuda, "to_device", to_device)
    monkeypatch.setattr(array_type, "copy_to_host", to_host)
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)   # two steps
    assert counts == {"to_device": 4, "to_host": 4}


def test_device_arrays_through_the_explicit_protocol():
    from numba import cuda
    x, y = _data(n=9)
    model = _model("cuda")
    logits = model(cuda.to_device(x))
    assert is_device_array(logits)
    loss, grad = fnn.CrossEntropyLoss()(logits, y)
    assert is_device_array(grad) and np.isfinite(loss)
    model.zero_grad()
    model.backward(grad)
    cpu = _model("numba")
    cpu_loss, cpu_grad = fnn.CrossEntropyLoss()(cpu(x), y)
    cpu.zero_grad()
    cpu.backward(cpu_grad)
    assert loss == pytest.approx(cpu_loss, rel=1e-10)
    for p, q in zip(model.parameters(), cpu.parameters()):
        np.testing.assert_allclose(p.grad.copy_to_host(), q.grad, rtol=1e-9, atol=1e-12)
    # an optimiser without a backend steps where the parameters live
    for m in (model, cpu):
        fnn.SGD(m.parameters(), lr=0.1, momentum=0.9).step()
    for name, value in cpu.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value, rtol=1e-9, atol=1e-12)
    with pytest.raises(TypeError, match="float32 device array"):
        model(cuda.to_device(x.astype(np.float32)))
    with pytest.raises(ValueError, match="features"):
        model(cuda.to_device(np.ascontiguousarray(x[:, :3])))


def test_save_and_load_a_cuda_model(tmp_path):
    x, y = _data(n=8)
    model = _model("cuda")
    model.compile(optimizer=fnn.SGD(lr=0.1, momentum=0.9), loss="cross_entropy")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fnn.load(path)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)


def test_importing_fastnn_does_not_import_cuda():
    code = ("import sys, numpy as np, fastnn as fnn\n"
            "m = fnn.Sequential(fnn.Linear(3, 2), fnn.ReLU(), seed=0)\n"
            "m(np.ones((2, 3)))\n"
            "print(sorted(k for k in sys.modules if k.startswith(('numba.cuda', \n"
            "      'numba_cuda.numba', 'fastnn.kernels.cuda', 'fastnn.backends.cuda'))))\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.strip()
    assert out == "[]"


def test_moving_a_model_between_gpu_and_cpu_keeps_training_state():
    """``model.to`` moves parameters at once and the optimiser's momentum on its next
    step, in both directions; training continues as if it had stayed on one device."""
    x, y = _data(n=16)
    runs = {}
    for route in (("cuda", "numba"), ("numba", "numba")):
        model = _model(route[0])
        model.compile(optimizer=fnn.SGD(lr=0.1, momentum=0.9), loss="cross_entropy")
        model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
        model.to(route[1])
        assert not any(is_device_array(p.data) for p in model.parameters())
        model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
        assert not any(is_device_array(v) for s in model.optimizer.state for v in s.values())
        runs[route] = model.state_dict()
    for name, value in runs[("numba", "numba")].items():
        np.testing.assert_allclose(runs[("cuda", "numba")][name], value, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss, metric", [("bce_with_logits", "accuracy"), ("mse", "mae")])
def test_other_losses_and_metrics_match_the_cpu_backend(loss, metric):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 7))
    y = (rng.random((12, 3)) > 0.5).astype(np.float64)
    logs = {}
    for backend in ("numba", "cuda"):
        model = _model(backend)
        model.compile(optimizer=fnn.SGD(lr=0.05), loss=loss, metrics=[metric])
        logs[backend] = model.fit(x, y, epochs=1, batch_size=6, shuffle=False,
                                  verbose=0).history
    for key in ("loss", metric):
        np.testing.assert_allclose(logs["cuda"][key], logs["numba"][key], rtol=1e-9)


@pytest.mark.parametrize("loss", [fnn.CrossEntropyLoss(weight=[0.5, 2.0, 1.0]),
                                  fnn.BCEWithLogitsLoss(pos_weight=[3.0, 0.5, 1.0]),
                                  fnn.MSELoss()], ids=["xent", "bce", "mse"])
def test_weighted_losses_train_as_on_the_cpu(loss):
    """Class weights / pos_weight and sample weights run the GPU's weighted loss kernels:
    the same losses and weights as the CPU backend after an epoch."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 7))
    y = (rng.integers(0, 3, 12) if isinstance(loss, fnn.CrossEntropyLoss)
         else (rng.random((12, 3)) > 0.5).astype(np.float64))
    sample_weight = rng.uniform(0.2, 2.0, 12)
    runs = {}
    for backend in ("numba", "cuda"):
        model = _model(backend)
        model.compile(optimizer=fnn.SGD(lr=0.05), loss=loss)
        history = model.fit(x, y, epochs=1, batch_size=6, shuffle=False, verbose=0,
                            sample_weight=sample_weight).history
        runs[backend] = (history["loss"], model.state_dict())
    np.testing.assert_allclose(runs["cuda"][0], runs["numba"][0], rtol=1e-9)
    for name, value in runs["numba"][1].items():
        np.testing.assert_allclose(runs["cuda"][1][name], value, rtol=1e-9, atol=1e-12)


def test_normalisation_and_dropout_layers_train_as_on_the_cpu():
    """LayerNorm, BatchNorm1d (running statistics on the device) and Dropout (the same
    counter-based masks) in a model trained on the GPU: the same losses and weights as
    on the CPU backend, 3-D inputs included."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 2, 5))
    y = rng.normal(size=(12, 2, 3))
    results = {}
    for backend in ("numba", "cuda"):
        model = fnn.Sequential(fnn.Linear(5, 6), fnn.BatchNorm1d(6), fnn.ReLU(),
                               fnn.Dropout(0.25), fnn.LayerNorm(6), fnn.Linear(6, 3),
                               dtype="float64", seed=7).to(backend)
        opt = fnn.Adam(model.parameters(), lr=0.01)
        losses = []
        for _ in range(3):
            out = model(x)
            grad = 2 * (fnn.get_backend(backend).to_numpy(out) - y) / y.size
            losses.append(float(np.mean((fnn.get_backend(backend).to_numpy(out) - y) ** 2)))
            opt.zero_grad()
            model.backward(grad)
            opt.step()
        model.eval()
        results[backend] = (losses, model.state_dict(),
                            fnn.get_backend(backend).to_numpy(model(x)))
    np.testing.assert_allclose(results["cuda"][0], results["numba"][0], rtol=1e-10)
    for name, value in results["numba"][1].items():
        # (0.bias feeds BatchNorm, which cancels it: its gradient is rounding noise ~1e-10)
        np.testing.assert_allclose(results["cuda"][1][name], value, rtol=1e-7, atol=1e-8,
                                   err_msg=name)
    # (Adam divides by sqrt(v): the noise of that bias reaches the outputs at ~1e-9)
    np.testing.assert_allclose(results["cuda"][2], results["numba"][2], rtol=1e-7, atol=1e-10)
