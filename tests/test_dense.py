"""Fused dense-layer operations: Numba against the NumPy reference, and fused Sequential
stages against the same layers run one by one."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn.kernels.activations import ACTIVATIONS
from fastnn.kernels.dense import FROM_OUTPUT

from conftest import assert_close, random

PARAMS = {"sigmoid": (2.0,), "leaky_relu": (0.1,), "elu": (0.8,), "piecewise_linear": (-1.0, 0.5)}
SHAPES = [(1, 1, 1), (1, 7, 3), (13, 5, 1), (31, 67, 129), (300, 33, 257)]   # (batch, in, out)


def params_for(name):
    return PARAMS.get(name, tuple(ACTIVATIONS[name].values()))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(FROM_OUTPUT))
def test_dense_forward_backward_match_reference(name, shape, dtype, rng, numba_ops, reference):
    batch, fan_in, fan_out = shape
    x, w = random(rng, (batch, fan_in), dtype), random(rng, (fan_in, fan_out), dtype, 0.5)
    b, dy = random(rng, fan_out, dtype), random(rng, (batch, fan_out), dtype)
    params = params_for(name)
    ref = {}
    for label, ops in (("numba", numba_ops), ("numpy", reference)):
        y = np.empty((batch, fan_out), dtype)
        assert ops.dense_forward(x, w, b, y, name, *params) is y
        dz, dx = np.empty_like(dy), np.empty_like(x)
        dw, db = np.full_like(w, 0.5), np.full_like(b, 0.25)       # accumulate into these
        ops.dense_backward(dy, x, w, y, dz, dw, db, dx, True, True, name, *params)
        ref[label] = (y, dz, dw, db, dx)
    for got, want, what in zip(ref["numba"], ref["numpy"], ("y", "dz", "dw", "db", "dx")):
        assert got.dtype == dtype, what
        assert_close(got, want, dtype, rtol32=2e-4, atol_scale=max(fan_in, batch) * 1e-1)


def test_dense_without_bias_and_without_dx(rng, numba_ops, reference):
    x, w = random(rng, (9, 4), np.float64), random(rng, (4, 6), np.float64)
    dy = random(rng, (9, 6), np.float64)
    outs = []
    for ops in (numba_ops, reference):
        y = ops.dense_forward(x, w, None, np.empty((9, 6)), "tanh")
        dw = np.empty_like(w)
        assert ops.dense_backward(dy, x, w, y, np.empty_like(dy), dw, None, None, False,
                                  False, "tanh") is None
        outs.append((y, dw))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-12)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_fused_stages_equal_separate_layers(backend, rng):
    acts = [fnn.ReLU(), fnn.Sigmoid(beta=1.5), fnn.ELU(0.5), fnn.GELU(), fnn.Softplus(),
            fnn.LeakyReLU(0.2), fnn.Tanh()]
    widths = [11, 13, 7, 9, 5, 8, 6, 10, 3]
    layers = []
    for i, act in enumerate(acts):
        layers += [fnn.Linear(widths[i], widths[i + 1], dtype="float64"), act]
    layers.append(fnn.Linear(widths[len(acts)], widths[-1], dtype="float64"))
    model = fnn.Sequential(*layers, backend=backend, seed=0)
    assert len(model._stages) < len(layers)          # fusion happened (not for GELU)
    x = random(rng, (17, 11), np.float64)
    g = random(rng, (17, 3), np.float64)
    out = model(x)
    model.zero_grad()
    dx = model.backward(g, input_grad=True)
    grads = [p.grad.copy() for p in model.parameters()]
    # the same layers, one at a time
    with fnn.use_backend(backend):
        h = x
        for layer in layers:
            h = layer(h)
        np.testing.assert_allclose(h, out, rtol=1e-12)
        model.zero_grad()
        for layer in reversed(layers):
            g = layer.backward(g)
    np.testing.assert_allclose(g, dx, rtol=1e-10, atol=1e-12)
    for p, expected in zip(model.parameters(), grads):
        np.testing.assert_allclose(p.grad, expected, rtol=1e-10, atol=1e-12)


def test_negative_alpha_is_not_fused():
    model = fnn.Sequential(fnn.Linear(3, 4), fnn.LeakyReLU(-0.5), fnn.Linear(4, 2))
    assert len(model._stages) == 3
