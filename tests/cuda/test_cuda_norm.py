"""LayerNorm, BatchNorm and dropout on the GPU (:mod:`fastnn.kernels.cuda.norm`,
:mod:`fastnn.kernels.cuda.dropout`) against the NumPy reference, and dropout masks equal
to the CPU's.

Shapes are tiny (every simulated GPU thread is a Python thread) but cover one row, one
feature, rows longer than a block of THREADS (128) threads, more than one column strip
(32 columns) and more rows than a column has threads (8).
"""
import numpy as np
import pytest

from cudatest import assert_close, device_random, needs_cuda
from fastnn.backends import numpy_ops

pytestmark = [
    needs_cuda,
    # The simulator runs the dropout hash on NumPy uint64 scalars, which warn when the
    # multiply wraps modulo 2**64 (as it must; hardware wraps silently).
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

SHAPES = [(1, 1), (1, 130), (9, 3), (2, 37)]
AFFINE = ["gamma+beta", "none"]
EPS = 1e-5


def to_device(*arrays):
    from numba import cuda
    return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]


def empty(shape, dtype):
    from numba import cuda
    return cuda.device_array(shape, dtype=dtype)


def params(rng, n, dtype, which):
    if which == "none":
        return (np.empty(0, dtype),) * 2
    return ((rng.standard_normal(n)).astype(dtype), rng.standard_normal(n).astype(dtype))


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def test_ptx_signatures_cover_every_kernel_in_both_dtypes():
    from fastnn.kernels.cuda import dropout, norm
    names = sorted(name for name, _, _ in norm.PTX_SIGNATURES + dropout.PTX_SIGNATURES)
    kernels = ("layer_norm_forward", "layer_norm_dx", "layer_norm_param_grad",
               "batch_norm_train", "batch_norm_eval", "batch_norm_backward",
               "batch_norm_backward_eval", "dropout_forward", "dropout_backward")
    assert names == sorted(f"{k}_{t}" for k in kernels for t in ("float32", "float64"))


@pytest.mark.parametrize("which", AFFINE)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_layer_norm(shape, which, dtype, rng):
    from fastnn.kernels.cuda import norm
    rows, n = shape
    x, d_x = device_random(rng, shape, dtype, scale=2.0)
    dy, d_dy = device_random(rng, shape, dtype)
    gamma, beta = params(rng, n, dtype, which)
    d_gamma, d_beta = to_device(gamma, beta)
    d_y, d_mean, d_rstd = empty(shape, dtype), empty(rows, dtype), empty(rows, dtype)
    assert norm.layer_norm_forward(d_x, d_gamma, d_beta, EPS, d_y, d_mean, d_rstd) is d_y
    ref = [np.empty(shape), np.empty(rows), np.empty(rows)]
    numpy_ops.layer_norm_forward(*f64(x, gamma, beta), EPS, *ref)
    for got, want in zip((d_y, d_mean, d_rstd), ref):
        assert_close(got, want, dtype, rtol32=1e-4, atol_scale=1e-1)
    # backward, accumulating into the parameter gradients
    dg = np.full(n if gamma.size else 0, 0.5, dtype)
    db = np.full(n, -0.25, dtype)
    d_dg, d_db = to_device(dg, db)
    d_dx = empty(shape, dtype)
    assert norm.layer_norm_backward(d_dy, d_x, d_gamma, d_mean, d_rstd, d_dx, d_dg, d_db,
                                    True) is d_dx
    ref_grads = [np.empty(shape), dg.astype(np.float64), db.astype(np.float64)]
    numpy_ops.layer_norm_backward(*f64(dy, x, gamma), *ref[1:], *ref_grads, True)
    for got, want in zip((d_dx, d_dg, d_db), ref_grads):
        assert_close(got, want, dtype, rtol32=1e-4, atol_scale=1.0)
    # in place: dx written over dy (the parameter gradients read dy first)
    assert norm.layer_norm_backward(d_dy, d_x, d_gamma, d_mean, d_rstd, d_dy, d_dg, d_db,
                                    False) is d_dy
    assert_close(d_dy, ref_grads[0], dtype, rtol32=1e-4, atol_scale=1.0)


@pytest.mark.parametrize("which", AFFINE)
@pytest.mark.parametrize("shape", [(2, 1), (3, 40), (19, 5)], ids=str)
def test_batch_norm(shape, which, dtype, rng):
    from fastnn.kernels.cuda import norm
    rows, n = shape
    x, d_x = device_random(rng, shape, dtype, scale=2.0)
    x += dtype(3)                                     # an offset: the pivot at work
    d_x = to_device(x)[0]
    dy, d_dy = device_random(rng, shape, dtype)
    gamma, beta = params(rng, n, dtype, which)
    running = [rng.standard_normal(n).astype(dtype), (rng.random(n) + 0.5).astype(dtype)]
    d_gamma, d_beta, d_rm, d_rv = to_device(gamma, beta, *running)
    d_y, d_mean, d_rstd = empty(shape, dtype), empty(n, dtype), empty(n, dtype)
    assert norm.batch_norm_forward_train(d_x, d_gamma, d_beta, EPS, 0.3, d_rm, d_rv, d_y,
                                         d_mean, d_rstd) is d_y
    run_ref = f64(*running)
    ref = [np.empty(shape), np.empty(n), np.empty(n)]
    numpy_ops.batch_norm_forward_train(*f64(x, gamma, beta), EPS, 0.3, *run_ref, *ref)
    for got, want in zip((d_y, d_mean, d_rstd, d_rm, d_rv), ref + run_ref):
        assert_close(got, want, dtype, rtol32=1e-4, atol_scale=1e-1)
    d_eval = empty(shape, dtype)
    assert norm.batch_norm_forward_eval(d_x, d_gamma, d_beta, EPS, d_rm, d_rv, d_eval) is d_eval
    assert_close(d_eval, numpy_ops.batch_norm_forward_eval(*f64(x, gamma, beta), EPS, *run_ref,
                                                           np.empty(shape)),
                 dtype, rtol32=1e-4, atol_scale=1e-1)
    dg = np.full(n if gamma.size else 0, 0.5, dtype)
    db = np.full(n, -0.25, dtype)
    d_dg, d_db = to_device(dg, db)
    d_dx = empty(shape, dtype)
    assert norm.batch_norm_backward(d_dy, d_x, d_gamma, d_mean, d_rstd, d_dx, d_dg, d_db,
                                    True) is d_dx
    ref_grads = [np.empty(shape), dg.astype(np.float64), db.astype(np.float64)]
    numpy_ops.batch_norm_backward(*f64(dy, x, gamma), *ref[1:], *ref_grads, True)
    for got, want in zip((d_dx, d_dg, d_db), ref_grads):
        assert_close(got, want, dtype, rtol32=1e-4, atol_scale=1.0)
    # without tracking running statistics, and in place
    none = to_device(np.empty(0, dtype))[0]
    assert norm.batch_norm_forward_train(d_x, d_gamma, d_beta, EPS, 0.3, none, none, d_x,
                                         d_mean, d_rstd) is d_x
    assert_close(d_x, ref[0], dtype, rtol32=1e-4, atol_scale=1e-1)


@pytest.mark.parametrize("which", AFFINE)
@pytest.mark.parametrize("shape", [(1, 1), (3, 40), (19, 5)], ids=str)
def test_batch_norm_backward_eval(shape, which, dtype, rng):
    """Evaluation mode's backward (running statistics constant) against the reference:
    accumulating into the parameter gradients, without them, and in place (dx = dy)."""
    from fastnn.kernels.cuda import norm
    rows, n = shape
    x, d_x = device_random(rng, shape, dtype, scale=2.0)
    dy, d_dy = device_random(rng, shape, dtype)
    gamma, _ = params(rng, n, dtype, which)
    running = [rng.standard_normal(n).astype(dtype), (rng.random(n) + 0.5).astype(dtype)]
    d_gamma, d_rm, d_rv = to_device(gamma, *running)
    dg = np.full(n if gamma.size else 0, 0.5, dtype)
    db = np.full(n, -0.25, dtype)
    d_dg, d_db = to_device(dg, db)
    d_dx = empty(shape, dtype)
    assert norm.batch_norm_backward_eval(d_dy, d_x, d_gamma, EPS, d_rm, d_rv, d_dx, d_dg,
                                         d_db, True) is d_dx
    ref = [np.empty(shape), dg.astype(np.float64), db.astype(np.float64)]
    numpy_ops.batch_norm_backward_eval(*f64(dy, x, gamma), EPS, *f64(*running), *ref, True)
    for got, want in zip((d_dx, d_dg, d_db), ref):
        assert_close(got, want, dtype, rtol32=1e-4, atol_scale=1.0)
    none = to_device(np.empty(0, dtype))[0]
    assert norm.batch_norm_backward_eval(d_dy, d_x, d_gamma, EPS, d_rm, d_rv, d_dy, none,
                                         none, False) is d_dy
    assert_close(d_dy, ref[0], dtype, rtol32=1e-4, atol_scale=1.0)


def test_equal_rows_and_columns_are_finite(dtype):
    from fastnn.kernels.cuda import norm
    x = np.full((4, 3), 2.5, dtype)
    gamma, beta = np.ones(3, dtype), np.arange(3, dtype=dtype)
    d_x, d_gamma, d_beta = to_device(x, gamma, beta)
    d_y = empty((4, 3), dtype)
    norm.layer_norm_forward(d_x, d_gamma, d_beta, EPS, d_y, empty(4, dtype), empty(4, dtype))
    assert_close(d_y, np.broadcast_to(beta, (4, 3)), dtype, rtol32=1e-5, rtol64=1e-9)
    none = to_device(np.empty(0, dtype))[0]
    norm.batch_norm_forward_train(d_x, d_gamma, d_beta, EPS, 0.1, none, none, d_y,
                                  empty(3, dtype), empty(3, dtype))
    assert_close(d_y, np.broadcast_to(beta, (4, 3)), dtype, rtol32=1e-5, rtol64=1e-9)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("shape", [(1,), (7, 45), (2, 3, 50)], ids=str)
def test_dropout_mask_equals_the_cpu_one(shape, p, dtype, rng):
    """The same seed and offset give the same mask on the GPU, the Numba CPU kernels and
    the NumPy reference; the values and the backward follow it."""
    import fastnn as fnn
    from fastnn.kernels.cuda import dropout
    x, d_x = device_random(rng, shape, dtype)
    dy, d_dy = device_random(rng, shape, dtype)
    d_y, d_mask = empty(shape, dtype), empty(shape, np.uint8)
    seed, offset = 2**63 + 12345, 2**64 - 100        # large values, and a wrap of the counter
    assert dropout.dropout_forward(d_x, p, seed, offset, d_y, d_mask) is d_y
    for backend in ("numba", "numpy"):
        y, mask = np.empty_like(x), np.empty(shape, np.uint8)
        fnn.get_backend(backend).dropout_forward(x, p, seed, offset, y, mask)
        np.testing.assert_array_equal(d_mask.copy_to_host(), mask)
        np.testing.assert_array_equal(d_y.copy_to_host(), y)
    d_dx = empty(shape, dtype)
    assert dropout.dropout_backward(d_dy, d_mask, p, d_dx) is d_dx
    dx = numpy_ops.dropout_backward(dy, mask, p, np.empty_like(dy))
    np.testing.assert_array_equal(d_dx.copy_to_host(), dx)
    # no mask stored: the same output
    d_y2 = empty(shape, dtype)
    dropout.dropout_forward(d_x, p, seed, offset, d_y2, empty(0, np.uint8))
    np.testing.assert_array_equal(d_y2.copy_to_host(), y)
