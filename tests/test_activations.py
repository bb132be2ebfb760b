"""Every activation kernel against the NumPy reference, and every derivative against
central finite differences."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn.kernels.activations import ACTIVATIONS, NOT_DIFFERENTIABLE, ROW_WISE

from conftest import assert_close, numerical_gradient, random

NAMES = sorted(ACTIVATIONS)
SHAPES = [(1, 1), (1, 7), (13, 1), (3, 31), (67, 129)]
# Non-default parameters too, so a kernel that ignores its parameter is caught.
PARAMS = {"sigmoid": {"beta": 2.5}, "leaky_relu": {"alpha": 0.2}, "elu": {"alpha": 0.7},
          "piecewise_linear": {"x_min": -1.5, "x_max": 0.75}}


def params_for(name):
    return tuple({**ACTIVATIONS[name], **PARAMS.get(name, {})}.values())


def kernels(backend, name):
    return getattr(backend, f"{name}_forward"), getattr(backend, f"{name}_backward")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_kernel_matches_reference(name, shape, dtype, rng, numba_ops, reference):
    x = random(rng, shape, dtype, scale=2.0)
    dy = random(rng, shape, dtype)
    params = params_for(name)
    fwd, bwd = kernels(numba_ops, name)
    ref_fwd, ref_bwd = kernels(reference, name)
    out = np.empty_like(x)
    y = fwd(x, out, *params)
    assert y is out and y.dtype == dtype
    y_ref = ref_fwd(x.astype(np.float64), np.empty(shape), *params)
    assert_close(y, y_ref, dtype, rtol32=1e-5, atol_scale=1e-1)
    g = np.empty_like(x)
    assert bwd(dy, x, y, g, *params) is g and g.dtype == dtype
    g_ref = ref_bwd(dy.astype(np.float64), x.astype(np.float64), y_ref, np.empty(shape), *params)
    assert_close(g, g_ref, dtype, rtol32=1e-5, atol_scale=1e-1)


@pytest.mark.parametrize("name", NAMES)
def test_kernels_work_in_place(name, rng, numba_ops):
    x = random(rng, (5, 11), np.float64)
    dy = random(rng, (5, 11), np.float64)
    params = params_for(name)
    fwd, bwd = kernels(numba_ops, name)
    y = fwd(x, np.empty_like(x), *params)
    g = bwd(dy, x, y, np.empty_like(x), *params)
    x_in = x.copy()
    assert fwd(x_in, x_in, *params) is x_in
    np.testing.assert_array_equal(x_in, y)
    dy_in = dy.copy()
    bwd(dy_in, x, y, dy_in, *params)
    np.testing.assert_array_equal(dy_in, g)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("name", sorted(set(NAMES) - NOT_DIFFERENTIABLE))
def test_backward_matches_finite_differences(name, backend, rng):
    be = fnn.get_backend(backend)
    fwd, bwd = kernels(be, name)
    params = params_for(name)
    x = random(rng, (4, 6), np.float64, scale=1.5)
    if name in ("relu", "leaky_relu", "elu", "piecewise_linear"):
        # keep clear of the kinks, where the derivative is one-sided
        kinks = [0.0] if name != "piecewise_linear" else list(params)
        for k in kinks:
            x[np.abs(x - k) < 1e-2] += 0.05
    w = random(rng, (4, 6), np.float64)  # loss = sum(w * f(x)), so d loss / dy = w

    def loss():
        return float((w * fwd(x, np.empty_like(x), *params)).sum())

    y = fwd(x, np.empty_like(x), *params)
    analytic = bwd(w, x, y, np.empty_like(x), *params)
    np.testing.assert_allclose(analytic, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)


def test_step_has_zero_gradient(rng, numba_ops):
    x = random(rng, (3, 4), np.float64)
    y = numba_ops.step_forward(x, np.empty_like(x))
    np.testing.assert_array_equal(y, (x >= 0).astype(float))
    g = numba_ops.step_backward(np.ones_like(x), x, y, random(rng, (3, 4), np.float64))
    np.testing.assert_array_equal(g, 0)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_softmax_rows_sum_to_one_at_extremes(backend, dtype):
    be = fnn.get_backend(backend)
    x = np.array([[1000, -1000, 0], [-1000, -1000, -1000], [1000, 1000, 999],
                  [5, 5, 5]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = be.softmax_forward(x, np.empty_like(x))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(y[0], [1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(y[3], [1 / 3] * 3, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_finite_at_large_inputs(name, dtype, backend):
    x = np.array([[-1e4, -1000, -30, 0, 30, 1000, 1e4]], dtype=dtype)
    params = params_for(name)
    fwd, bwd = kernels(fnn.get_backend(backend), name)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # no overflow warnings
        y = fwd(x, np.empty_like(x), *params)
        g = bwd(np.ones_like(x), x, y, np.empty_like(x), *params)
    assert np.isfinite(y).all() and np.isfinite(g).all(), (y, g)


def test_worked_example_sigmoid_of_dense_unit():
    # inputs (2, 3), weights (0.5, -0.2), bias 0.1: z = 1.0 - 0.6 + 0.1 = 0.5, sigma(z) ~ 0.622
    layer = fnn.Linear(2, 1, dtype="float64")
    layer.weight.data[:] = [[0.5], [-0.2]]
    layer.bias.data[:] = [0.1]
    z = layer(np.array([[2.0, 3.0]]))
    assert z[0, 0] == pytest.approx(0.5)
    assert fnn.Sigmoid()(z)[0, 0] == pytest.approx(0.6225, abs=1e-4)


def test_sigmoid_slope_beta():
    x = np.array([[0.5, -2.0]])
    np.testing.assert_allclose(fnn.Sigmoid(beta=3.0)(x), 1 / (1 + np.exp(-3.0 * x)))


def test_every_activation_has_a_layer_and_reference():
    from fastnn.backends import numpy_ops
    for name in NAMES:
        assert fnn.Activation(name).name == name
        assert callable(getattr(numpy_ops, f"{name}_forward"))
        assert callable(getattr(numpy_ops, f"{name}_backward"))
    assert ROW_WISE <= set(NAMES) and NOT_DIFFERENTIABLE <= set(NAMES)


def test_activation_layer_errors():
    with pytest.raises(ValueError, match="valid names"):
        fnn.Activation("swishy")
    with pytest.raises(TypeError, match="unknown parameter"):
        fnn.Activation("relu", alpha=0.1)
    with pytest.raises(ValueError, match="x_min < x_max"):
        fnn.PiecewiseLinear(x_min=1.0, x_max=0.0)


# --------------------------------------------------------------------------- NaN and sizes
@pytest.mark.parametrize("name", NAMES)
def test_nan_in_nan_out(name, dtype, rng, numba_ops, reference):
    """A NaN input gives NaN out, so diverging training is seen.  Exceptions: the step
    maps NaN to 0 (its output is a 0/1 mask: NaN is not >= 0, as in the reference) and
    softmax makes the whole row NaN.  The NumPy reference agrees."""
    x = random(rng, (3, 40), dtype)
    x[1, 7] = np.nan
    params = params_for(name)
    for backend in (numba_ops, reference):
        y = getattr(backend, f"{name}_forward")(x, np.empty_like(x), *params)
        if name == "step":
            assert y[1, 7] == 0
            assert not np.isnan(y).any()
        elif name == "softmax":
            assert np.isnan(y[1]).all()
            assert not np.isnan(y[[0, 2]]).any()
        else:
            assert np.isnan(y[1, 7])
            assert np.isnan(y).sum() == 1


def _threshold_sizes():
    """Element counts around every serial/parallel switch and chunk edge of the
    element-wise kernels, for both dtypes (the cheap kernels switch on bytes)."""
    from fastnn.kernels import activations as A
    sizes = set()
    for t in (A.SERIAL_MAX_TRANSCENDENTAL, A.SERIAL_MAX_TRANSCENDENTAL + A.CHUNK_TRANSCENDENTAL):
        sizes |= {t - 1, t, t + 1}
    for n_arrays in (1, 2, 3, 4):
        for itemsize in (4, 8):
            t = A.SERIAL_MAX_BYTES // (n_arrays * itemsize)
            sizes |= {t - 1, t, t + 1}
    t = A.SERIAL_MAX_BYTES // 8 + A.CHUNK_CHEAP      # first size with a partial last chunk
    sizes |= {t - 1, t, t + 1}
    return sorted(sizes)


@pytest.mark.parametrize("name", NAMES)
def test_sizes_around_the_parallel_threshold(name, dtype, rng, numba_ops, reference):
    """Serial and parallel paths, partial last chunks and the in-place variants all give
    the reference result."""
    params = params_for(name)
    fwd, bwd = kernels(numba_ops, name)
    ref_fwd, ref_bwd = kernels(reference, name)
    for n in _threshold_sizes():
        shape = (n // 7, 7) if name in ROW_WISE else (1, n)   # softmax: rows of 7
        x = random(rng, shape, dtype, scale=2.0)
        dy = random(rng, shape, dtype)
        y = fwd(x, np.empty_like(x), *params)
        y_ref = ref_fwd(x.astype(np.float64), np.empty(shape), *params)
        assert_close(y, y_ref, dtype, rtol32=1e-5, atol_scale=1e-1)
        # the backward kernel on its own inputs: with y_ref instead of y, the forward's
        # last-ulp errors would be amplified in 1 - y**2 where tanh(x) is near ±1
        g = bwd(dy, x, y, np.empty_like(x), *params)
        g_ref = ref_bwd(dy.astype(np.float64), x.astype(np.float64), y.astype(np.float64),
                        np.empty(shape), *params)
        assert_close(g, g_ref, dtype, rtol32=1e-5, atol_scale=1e-1)
        x_in = x.copy()
        fwd(x_in, x_in, *params)
        np.testing.assert_array_equal(x_in, y)
        dy_in = dy.copy()
        bwd(dy_in, x, y, dy_in, *params)
        np.testing.assert_array_equal(dy_in, g)
