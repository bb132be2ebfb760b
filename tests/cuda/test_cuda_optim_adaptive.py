"""The CUDA Adam and RMSprop kernels against the NumPy backend, and the optimisers
training on the "cuda" backend as on the CPU.

Sizes are tiny (every simulated GPU thread is a Python thread) but include 1, a prime
and several 128-thread blocks, with a ragged last block.
"""
import numpy as np
import pytest

import fastnn as fnn
from fastnn.backends import numpy_ops
from cudatest import assert_close, needs_cuda

pytestmark = needs_cuda

SIZES = [1, 37, 300]


def _to_device(*arrays):
    from numba import cuda
    return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("amsgrad, l2, param_decay", [(False, 0.0, 1.0), (False, 0.05, 1.0),
                                                      (True, 0.0, 0.999)])
def test_adam_update(size, amsgrad, l2, param_decay, dtype, rng):
    from fastnn.kernels.cuda import optim
    p = rng.standard_normal(size).astype(dtype)
    g = rng.standard_normal(size).astype(dtype)
    m = (0.1 * rng.standard_normal(size)).astype(dtype)
    v = (0.01 * rng.random(size)).astype(dtype)
    v_max = (0.01 * rng.random(size)).astype(dtype) if amsgrad else np.empty(0, dtype)
    device = _to_device(p, g, m, v, v_max)
    for t in (1, 2):
        args = (1e-2 / (1 - 0.9 ** t), 0.9, 0.999, 1e-8, l2, param_decay,
                np.sqrt(1 - 0.999 ** t))
        assert optim.adam_update(*device, *args) is device[0]
        numpy_ops.adam_update(p, g, m, v, v_max, *args)
    for got, want in zip([device[0], *device[2:]], (p, m, v, v_max)):
        assert_close(got, want, dtype)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("centered, momentum", [(False, 0.0), (True, 0.0), (False, 0.9),
                                                (True, 0.5)])
def test_rmsprop_update(size, centered, momentum, dtype, rng):
    from fastnn.kernels.cuda import optim
    p = rng.standard_normal(size).astype(dtype)
    g = rng.standard_normal(size).astype(dtype)
    sq = (rng.random(size) + 0.5).astype(dtype)
    ga = (0.1 * rng.standard_normal(size)).astype(dtype) if centered else np.empty(0, dtype)
    buf = rng.standard_normal(size).astype(dtype) if momentum else np.empty(0, dtype)
    device = _to_device(p, g, sq, ga, buf)
    for _ in range(2):
        args = (1e-2, 0.99, 1e-8, 0.01, momentum)
        assert optim.rmsprop_update(*device, *args) is device[0]
        numpy_ops.rmsprop_update(p, g, sq, ga, buf, *args)
    for got, want in zip([device[0], *device[2:]], (p, sq, ga, buf)):
        assert_close(got, want, dtype)


def test_decaying_state_below_the_smallest_normal_is_stored_as_zero(dtype, rng):
    from fastnn.kernels.cuda import optim
    tiny = np.finfo(dtype).tiny
    size = 7
    g = np.zeros(size, dtype)
    m = rng.standard_normal(size).astype(dtype)
    v = np.abs(rng.standard_normal(size)).astype(dtype)
    m[::3], v[::3] = tiny * 1.05, tiny * 1.0005       # subnormal after * 0.9 / * 0.999
    p = rng.standard_normal(size).astype(dtype)
    device = _to_device(p, g, m, v, np.empty(0, dtype))
    optim.adam_update(*device, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0, 1.0)
    numpy_ops.adam_update(p, g, m, v, np.empty(0, dtype), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0,
                          1.0)
    for got, want in ((device[2], m), (device[3], v)):
        got = got.copy_to_host()
        assert np.all(got[::3] == 0)
        assert_close(got, want, dtype)
    sq = np.abs(rng.standard_normal(size)).astype(dtype)
    ga = rng.standard_normal(size).astype(dtype)
    buf = rng.standard_normal(size).astype(dtype)
    sq[::3], ga[::3], buf[::3] = tiny * 1.005, tiny * 1.005, tiny * 1.05
    device = _to_device(p, g, sq, ga, buf)
    optim.rmsprop_update(*device, 1e-2, 0.99, 1e-8, 0.0, 0.9)
    for state in device[2:]:
        assert np.all(state.copy_to_host()[::3] == 0)


@pytest.mark.parametrize("make", [
    lambda: fnn.Adam(lr=1e-2, amsgrad=True),
    lambda: fnn.AdamW(lr=1e-2, weight_decay=0.1),
    lambda: fnn.RMSprop(lr=1e-2, momentum=0.9, centered=True),
], ids=["adam_amsgrad", "adamw", "rmsprop_centered_momentum"])
def test_training_with_adaptive_optimizers_matches_the_cpu(make):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 5)), rng.integers(0, 3, 16)
    weights = {}
    for backend in ("numba", "cuda"):
        model = fnn.Sequential(fnn.Linear(5, 4), fnn.Tanh(), fnn.Linear(4, 3),
                               dtype="float64", backend=backend, seed=2)
        model.compile(optimizer=make(), loss="cross_entropy")
        model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        weights[backend] = model.state_dict()
        if backend == "cuda":
            state = model.optimizer.state_dict()       # host copies, Python int steps
            assert all(type(s["step"]) is int and s["step"] == 4 for s in state["state"])
            assert all(type(v) is np.ndarray for s in state["state"] for k, v in s.items()
                       if k != "step")
    for name in weights["numba"]:
        np.testing.assert_allclose(weights["cuda"][name], weights["numba"][name], rtol=1e-10,
                                   atol=1e-13, err_msg=name)
