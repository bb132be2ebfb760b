"""Bias, loss and optimiser kernels against the NumPy reference; loss gradients against
finite differences."""
import numpy as np
import pytest

import fastnn as fnn

from conftest import assert_close, numerical_gradient, random

SHAPES = [(1, 1), (1, 7), (13, 1), (3, 31), (67, 129), (5, 200)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bias_add_and_grad(shape, dtype, rng, numba_ops, reference):
    x = random(rng, shape, dtype)
    b = random(rng, shape[1], dtype)
    out = np.empty_like(x)
    assert numba_ops.bias_add(x, b, out) is out
    assert_close(out, x + b, dtype)
    assert numba_ops.bias_add(x, b, x) is x          # in place
    assert_close(x, out, dtype)
    g = np.empty(shape[1], dtype)
    assert numba_ops.bias_grad(out, g) is g and g.dtype == dtype
    expected = reference.bias_grad(out.astype(np.float64), np.empty(shape[1]))
    assert_close(g, expected, dtype, atol_scale=shape[0])
    numba_ops.bias_grad(out, g, True)                 # accumulate
    assert_close(g, 2 * expected, dtype, atol_scale=shape[0])


# the last two exceed the serial limits (SERIAL_MAX elements; MSE's SERIAL_MAX_BYTES_MSE):
# their kernels run in parallel tasks of rows
LOSS_SHAPES = [(1, 1), (1, 10), (7, 3), (31, 10), (129, 17), (523, 17), (2053, 23)]


def make_targets(loss, shape, dtype, rng):
    if loss == "softmax_xent":
        return rng.integers(0, shape[1], size=shape[0])
    if loss == "softmax_xent_soft":
        t = rng.random(shape).astype(dtype) + 0.1
        return (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    if loss == "bce_logits":
        return rng.random(shape).astype(dtype)
    return random(rng, shape, dtype)


LOSSES = ["softmax_xent", "softmax_xent_soft", "bce_logits", "mse"]


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=str)
@pytest.mark.parametrize("loss", LOSSES)
def test_loss_kernel_matches_reference(loss, shape, dtype, rng, numba_ops, reference):
    z = random(rng, shape, dtype, scale=3.0)
    t = make_targets(loss, shape, dtype, rng)
    grad = np.empty_like(z)
    value = getattr(numba_ops, loss)(z, t, grad)
    assert grad.dtype == dtype
    t64 = t if t.dtype.kind == "i" else t.astype(np.float64)
    ref_grad = np.empty(shape)
    ref_value = getattr(reference, loss)(z.astype(np.float64), t64, ref_grad)
    assert value == pytest.approx(ref_value, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(grad, ref_grad, dtype, atol_scale=1e-2)


def weighted_args(loss, shape, dtype, rng):
    """The weighted twin's extra arguments: pos_weight for BCE, then row shares (random,
    never all equal)."""
    extra = (rng.random(shape[1]).astype(dtype) * 3,) if loss == "bce_logits" else ()
    return extra + ((rng.random(shape[0]) + 0.1).astype(dtype) / shape[0],)


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=str)
@pytest.mark.parametrize("loss", LOSSES)
def test_weighted_loss_kernel_matches_reference(loss, shape, dtype, rng, numba_ops, reference):
    """The fused kernels of the class/sample-weighted losses against the NumPy backend."""
    z = random(rng, shape, dtype, scale=3.0)
    t = make_targets(loss, shape, dtype, rng)
    extra = weighted_args(loss, shape, dtype, rng)
    grad = np.empty_like(z)
    value = getattr(numba_ops, f"{loss}_weighted")(z, t, *extra, grad)
    assert grad.dtype == dtype
    as64 = [a if a.dtype.kind == "i" else a.astype(np.float64) for a in (z, t, *extra)]
    ref_grad = np.empty(shape)
    ref_value = getattr(reference, f"{loss}_weighted")(*as64, ref_grad)
    assert value == pytest.approx(ref_value, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(grad, ref_grad, dtype, atol_scale=1 / shape[0])   # rows scaled by ~1/batch


@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "weighted"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("loss", LOSSES)
def test_loss_gradient_matches_finite_differences(loss, backend, weighted, rng):
    """Each loss and its class/sample-weighted twin against central differences."""
    be = fnn.get_backend(backend)
    z = random(rng, (5, 4), np.float64, scale=2.0)
    t = make_targets(loss, (5, 4), np.float64, rng)
    extra = weighted_args(loss, (5, 4), np.float64, rng) if weighted else ()
    kernel = getattr(be, f"{loss}_weighted" if weighted else loss)
    grad = np.empty_like(z)
    kernel(z, t, *extra, grad)
    numeric = numerical_gradient(lambda: kernel(z, t, *extra, np.empty_like(z)), z)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_cross_entropy_values():
    be = fnn.get_backend("numba")
    z = np.log(np.array([[0.7, 0.2, 0.1], [0.25, 0.5, 0.25]]))
    loss = be.softmax_xent(z, np.array([0, 1]), np.empty_like(z))
    assert loss == pytest.approx(-(np.log(0.7) + np.log(0.5)) / 2)
    onehot = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert be.softmax_xent_soft(z, onehot, np.empty_like(z)) == pytest.approx(loss)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_losses_finite_at_extreme_logits(backend, dtype):
    be = fnn.get_backend(backend)
    z = np.array([[1000, -1000], [-1000, 1000], [1e4, -1e4]], dtype=dtype)
    for loss, t in [("softmax_xent", np.array([1, 1, 1])),
                    ("bce_logits", np.array([[0, 1], [1, 0], [0, 1]], dtype=dtype))]:
        grad = np.empty_like(z)
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            value = getattr(be, loss)(z, t, grad)
        assert np.isfinite(value) and np.isfinite(grad).all()
        assert value > 100          # confidently wrong predictions cost a lot


@pytest.mark.parametrize("size", [1, 7, 1031])
def test_sgd_updates(size, dtype, rng, numba_ops, reference):
    p = random(rng, size, dtype)
    g = random(rng, size, dtype)
    expected = reference.sgd_update(p.astype(np.float64), g.astype(np.float64), 0.1, 0.01)
    assert numba_ops.sgd_update(p, g, 0.1, 0.01) is p
    assert_close(p, expected, dtype)
    for nesterov in (False, True):
        p = random(rng, size, dtype)
        v = random(rng, size, dtype)
        p64, v64 = p.astype(np.float64), v.astype(np.float64)
        reference.sgd_momentum_update(p64, g.astype(np.float64), v64, 0.1, 0.9, 0.01, nesterov)
        numba_ops.sgd_momentum_update(p, g, v, 0.1, 0.9, 0.01, nesterov)
        assert_close(p, p64, dtype)
        assert_close(v, v64, dtype)


@pytest.mark.parametrize("size", [7, 1031, 100_003])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_momentum_stores_subnormal_velocities_as_zero(size, dtype, backend, rng):
    """A velocity that decays below the smallest normal float becomes exactly zero (the
    same in both backends), normal ones and NaN are kept; the parameter moves as before."""
    from fastnn.backends import get_backend
    ops = get_backend(backend)
    tiny = np.finfo(dtype).tiny
    v = random(rng, size, dtype)
    v[::3] = tiny * 1.05          # * 0.9 -> subnormal
    v[1::3] = tiny * 4            # * 0.9 -> still normal
    v[-1] = np.nan
    g = np.zeros(size, dtype)     # a dead unit: no gradient
    p = random(rng, size, dtype)
    p_before = p.copy()
    expected = v.astype(np.float64) * 0.9
    ops.sgd_momentum_update(p, g, v, 0.1, 0.9, 0.0, False)
    finite = v[:-1]
    assert np.all(v[::3][:-1] == 0)
    assert not np.any((finite != 0) & (np.abs(finite) < tiny))      # no subnormal left
    np.testing.assert_allclose(v[1::3][:-1], expected[1::3][:-1], rtol=1e-6)
    assert np.isnan(v[-1]) and np.isnan(p[-1])
    step = np.float64(0.1) * v[:-1]
    err = np.abs(p[:-1] - (p_before[:-1] - step))
    assert np.all(err <= 4 * np.finfo(dtype).eps * (np.abs(p_before[:-1]) + np.abs(step)))


@pytest.mark.parametrize("size", [1, 7, 1031])
def test_clipping_kernels(size, dtype, rng, numba_ops):
    x = random(rng, size, dtype, scale=3.0)
    assert numba_ops.sum_of_squares(x) == pytest.approx(float((x.astype(np.float64) ** 2).sum()))
    y = x.copy()
    numba_ops.clip_inplace(y, 1.5)
    np.testing.assert_array_equal(y, np.clip(x, -1.5, 1.5))
    numba_ops.scale_inplace(y, 0.5)
    assert_close(y, np.clip(x, -1.5, 1.5) * 0.5, dtype)


# --------------------------------------------------------------------------- NaN and sizes
@pytest.mark.parametrize("loss", LOSSES)
def test_nan_logit_makes_the_loss_nan(loss, dtype, rng, numba_ops, reference):
    """A NaN prediction makes the loss NaN (diverging training must be seen), and for the
    softmax losses the whole gradient row of that sample NaN; the reference agrees."""
    z = random(rng, (4, 10), dtype, scale=3.0)
    z[2, 3] = np.nan
    t = make_targets(loss, (4, 10), dtype, rng)
    for backend in (numba_ops, reference):
        grad = np.empty_like(z)
        assert np.isnan(getattr(backend, loss)(z, t, grad))
        if loss.startswith("softmax"):
            assert np.isnan(grad[2]).all() and not np.isnan(grad[[0, 1, 3]]).any()
        else:
            assert np.isnan(grad[2, 3]) and np.isnan(grad).sum() == 1


def _loss_sizes():
    from fastnn.kernels import losses as L
    sizes = set()
    for t in (L.SERIAL_MAX, L.SERIAL_MAX + L.CHUNK):
        sizes |= {t - 10, t, t + 10}                  # rows of 10 classes
    for itemsize in (4, 8):
        t = L.SERIAL_MAX_BYTES_MSE // (3 * itemsize)
        sizes |= {t - t % 10 - 10, t - t % 10, t - t % 10 + 10}
    return sorted(sizes)


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_around_the_parallel_threshold(loss, dtype, rng, numba_ops, reference):
    for n in _loss_sizes():
        shape = (n // 10, 10)
        z = random(rng, shape, dtype, scale=3.0)
        t = make_targets(loss, shape, dtype, rng)
        grad = np.empty_like(z)
        value = getattr(numba_ops, loss)(z, t, grad)
        t64 = t if t.dtype.kind == "i" else t.astype(np.float64)
        ref_grad = np.empty(shape)
        ref_value = getattr(reference, loss)(z.astype(np.float64), t64, ref_grad)
        assert value == pytest.approx(ref_value, rel=1e-5 if dtype == np.float32 else 1e-12)
        assert_close(grad, ref_grad, dtype, atol_scale=1 / shape[0])   # rows scaled by ~1/batch


def _optim_sizes():
    from fastnn.kernels import optim as O
    sizes = set()
    for n_arrays in (1, 2, 3):
        for itemsize in (4, 8):
            t = O.SERIAL_MAX_BYTES // (n_arrays * itemsize)
            sizes |= {t - 1, t, t + 1, t + O.CHUNK + 1}
    return sorted(sizes)


def test_optimisers_around_the_parallel_threshold(dtype, rng, numba_ops, reference):
    for size in _optim_sizes():
        g = random(rng, size, dtype)
        p = random(rng, size, dtype)
        p64 = reference.sgd_update(p.astype(np.float64), g.astype(np.float64), 0.1, 0.01)
        numba_ops.sgd_update(p, g, 0.1, 0.01)
        assert_close(p, p64, dtype)
        for nesterov in (False, True):
            p = random(rng, size, dtype)
            v = random(rng, size, dtype)
            p64, v64 = p.astype(np.float64), v.astype(np.float64)
            reference.sgd_momentum_update(p64, g.astype(np.float64), v64, 0.1, 0.9, 0.01,
                                          nesterov)
            numba_ops.sgd_momentum_update(p, g, v, 0.1, 0.9, 0.01, nesterov)
            assert_close(p, p64, dtype)
            assert_close(v, v64, dtype)
        x = random(rng, size, dtype, scale=3.0)
        assert numba_ops.sum_of_squares(x) == pytest.approx(
            float((x.astype(np.float64) ** 2).sum()), rel=1e-12)
        y = x.copy()
        y[size // 2] = np.nan
        numba_ops.clip_inplace(y, 1.5)
        expected = np.clip(x, -1.5, 1.5)
        expected[size // 2] = np.nan
        np.testing.assert_array_equal(y, expected)          # NaN stays NaN
        numba_ops.scale_inplace(y, 0.5)
        np.testing.assert_array_equal(y, expected * dtype(0.5))


def test_bias_around_the_parallel_threshold(dtype, rng, numba_ops, reference):
    from fastnn.kernels import bias as B
    for cols in (7, 64, 300):
        for total in (B.SERIAL_MAX_BYTES // (2 * np.dtype(dtype).itemsize),
                      B.SERIAL_MAX_BYTES // np.dtype(dtype).itemsize):
            for rows in (total // cols - 1, total // cols + 1):
                x = random(rng, (rows, cols), dtype)
                b = random(rng, cols, dtype)
                out = numba_ops.bias_add(x, b, np.empty_like(x))
                assert_close(out, x + b, dtype)
                x_in = x.copy()
                numba_ops.bias_add(x_in, b, x_in)
                np.testing.assert_array_equal(x_in, out)
                g = numba_ops.bias_grad(x, np.empty(cols, dtype))
                expected = reference.bias_grad(x.astype(np.float64), np.empty(cols))
                assert_close(g, expected, dtype, atol_scale=rows)
                numba_ops.bias_grad(x, g, True)
                assert_close(g, 2 * expected, dtype, atol_scale=rows)
