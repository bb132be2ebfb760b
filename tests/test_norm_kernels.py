"""LayerNorm and BatchNorm kernels: the Numba backend against the NumPy reference, every
backward against central finite differences, edge values, in-place use, and results that
do not depend on the thread count."""
import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn.kernels import batch_norm as bn_kernels, layer_norm as ln_kernels, norm

from conftest import assert_close, numerical_gradient, random

EPS = 1e-5
# 1 row, 1 feature, primes, and shapes that are not multiples of the blocks
# (LN_ROW_BLOCK = 32, BN_ROW_BLOCK = 64, BN_COLUMN_BLOCK = 512), some large enough to run
# on the thread pool (operands over SERIAL_MAX_BYTES).
SHAPES = [(1, 1), (1, 7), (13, 1), (5, 3), (67, 129), (130, 1031), (301, 257)]
AFFINE = ["gamma+beta", "gamma", "beta", "none"]


def affine_params(rng, n_features, dtype, which):
    gamma = random(rng, n_features, dtype) if "gamma" in which else np.empty(0, dtype)
    beta = random(rng, n_features, dtype) if "beta" in which else np.empty(0, dtype)
    return gamma, beta


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


# --------------------------------------------------------------------------- calls
def layer_norm(ops, x, gamma, beta, eps=EPS):
    """(y, mean, rstd) of the forward, checking the in-place contract."""
    y, mean, rstd = np.empty_like(x), np.empty(x.shape[0], x.dtype), np.empty(x.shape[0], x.dtype)
    assert ops.layer_norm_forward(x, gamma, beta, eps, y, mean, rstd) is y
    return y, mean, rstd


def layer_norm_grads(ops, dy, x, gamma, mean, rstd, dgamma=None, dbeta=None, accumulate=False):
    n = x.shape[1]
    dx = np.empty_like(x)
    dgamma = np.empty(n if gamma.size else 0, x.dtype) if dgamma is None else dgamma
    dbeta = np.empty(n, x.dtype) if dbeta is None else dbeta
    assert ops.layer_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta,
                                   accumulate) is dx
    return dx, dgamma, dbeta


def batch_norm(ops, x, gamma, beta, eps=EPS, momentum=0.1, running=None):
    n = x.shape[1]
    y, mean, rstd = np.empty_like(x), np.empty(n, x.dtype), np.empty(n, x.dtype)
    rm, rv = running if running is not None else (np.empty(0, x.dtype), np.empty(0, x.dtype))
    assert ops.batch_norm_forward_train(x, gamma, beta, eps, momentum, rm, rv, y, mean,
                                        rstd) is y
    return y, mean, rstd


def batch_norm_grads(ops, dy, x, gamma, mean, rstd, dgamma=None, dbeta=None, accumulate=False):
    n = x.shape[1]
    dx = np.empty_like(x)
    dgamma = np.empty(n if gamma.size else 0, x.dtype) if dgamma is None else dgamma
    dbeta = np.empty(n, x.dtype) if dbeta is None else dbeta
    assert ops.batch_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta,
                                   accumulate) is dx
    return dx, dgamma, dbeta


def tolerances(n_sum):
    """(float32 rtol, atol scale) for results that sum ``n_sum`` terms of size ~1."""
    return 1e-4, max(1.0, np.sqrt(n_sum))


# --------------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("which", AFFINE)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_layer_norm_matches_reference(shape, which, dtype, rng, numba_ops, reference):
    rows, n = shape
    x = random(rng, shape, dtype, 2.0) + dtype(0.5)
    dy = random(rng, shape, dtype)
    gamma, beta = affine_params(rng, n, dtype, which)
    y, mean, rstd = layer_norm(numba_ops, x, gamma, beta)
    y_ref, mean_ref, rstd_ref = layer_norm(reference, *f64(x, gamma, beta))
    rtol32, atol = tolerances(rows)
    for got, want in ((y, y_ref), (mean, mean_ref), (rstd, rstd_ref)):
        assert got.dtype == dtype
        assert_close(got, want, dtype, rtol32=rtol32, atol_scale=1e-1)
    grads = layer_norm_grads(numba_ops, dy, x, gamma, mean, rstd)
    grads_ref = layer_norm_grads(reference, *f64(dy, x, gamma, mean_ref, rstd_ref))
    for got, want in zip(grads, grads_ref):
        assert got.dtype == dtype
        assert_close(got, want, dtype, rtol32=rtol32, rtol64=1e-11, atol_scale=atol)


def test_layer_norm_accumulates_parameter_gradients(rng, numba_ops, reference):
    x, dy = random(rng, (37, 11), np.float64), random(rng, (37, 11), np.float64)
    gamma = random(rng, 11, np.float64)
    for ops in (numba_ops, reference):
        _, mean, rstd = layer_norm(ops, x, gamma, np.empty(0))
        _, dg, db = layer_norm_grads(ops, dy, x, gamma, mean, rstd)
        acc_g, acc_b = np.full(11, 0.5), np.full(11, -0.25)
        layer_norm_grads(ops, dy, x, gamma, mean, rstd, acc_g, acc_b, accumulate=True)
        np.testing.assert_allclose(acc_g, dg + 0.5, rtol=1e-12)
        np.testing.assert_allclose(acc_b, db - 0.25, rtol=1e-12)
        # absent outputs are skipped: dx alone
        dx, _, _ = layer_norm_grads(ops, dy, x, gamma, mean, rstd, np.empty(0), np.empty(0))
        dx_full, _, _ = layer_norm_grads(ops, dy, x, gamma, mean, rstd)
        np.testing.assert_array_equal(dx, dx_full)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("which", ["gamma+beta", "none"])
def test_layer_norm_backward_matches_finite_differences(backend, which, rng):
    ops = fnn.get_backend(backend)
    x = random(rng, (4, 7), np.float64, 1.5)
    gamma, beta = affine_params(rng, 7, np.float64, which)
    w = random(rng, (4, 7), np.float64)        # loss = sum(w * y): d loss / dy = w

    def loss():
        return float((w * layer_norm(ops, x, gamma, beta, eps=1e-3)[0]).sum())

    _, mean, rstd = layer_norm(ops, x, gamma, beta, eps=1e-3)
    dx, dgamma, dbeta = layer_norm_grads(ops, w, x, gamma, mean, rstd)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    if gamma.size:
        np.testing.assert_allclose(dgamma, numerical_gradient(loss, gamma), rtol=1e-6,
                                   atol=1e-8)
    np.testing.assert_allclose(dbeta, w.sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_layer_norm_equal_rows_and_large_magnitudes(backend, dtype):
    ops = fnn.get_backend(backend)
    rng = np.random.default_rng(3)
    gamma, beta = random(rng, 9, dtype), random(rng, 9, dtype)
    equal = np.full((3, 9), 7.25, dtype)          # variance 0: eps keeps rstd finite
    with np.errstate(all="raise"):
        y, mean, rstd = layer_norm(ops, equal, gamma, beta)
        dx, dg, db = layer_norm_grads(ops, np.ones_like(equal), equal, gamma, mean, rstd)
    assert np.isfinite(y).all() and np.isfinite(dx).all() and np.isfinite(dg).all()
    np.testing.assert_allclose(y, np.broadcast_to(beta, y.shape), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(EPS), rtol=1e-6)
    # a large common offset (no cancellation in the two-pass variance) and a large scale
    check_large_magnitudes(ops, layer_norm, random(rng, (3, 9), np.float64), gamma, beta)


def check_large_magnitudes(ops, forward, base, gamma, beta):
    """A large common offset (1e4 + N(0, 1)) and a large scale (1e15 N(0, 1)).  The
    offset is where float32 loses: the mean itself is a float32 near 1e4, so ``y`` can be
    off by half its ulp times ``rstd * gamma``; allow 2 ulp (the kernels' corrected
    two-pass mean gets within 1; a plain sum was 3 ulp off)."""
    dtype = gamma.dtype
    for x64, offset in ((base + 1e4, 1e4), (base * 1e15, 0.0)):
        x = x64.astype(dtype)
        y, _, rstd = forward(ops, x, gamma, beta)
        y_ref, _, rstd_ref = forward(fnn.get_backend("numpy"), *f64(x, gamma, beta))
        atol = 2 * np.spacing(dtype.type(offset)) * np.abs(gamma).max() * rstd_ref.max()
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(y, y_ref, rtol=rtol, atol=atol + rtol)
        np.testing.assert_allclose(rstd, rstd_ref, rtol=rtol)


# --------------------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("which", AFFINE)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_matches_reference(shape, which, dtype, rng, numba_ops, reference):
    rows, n = shape
    x = random(rng, shape, dtype, 2.0) + dtype(0.5)
    dy = random(rng, shape, dtype)
    gamma, beta = affine_params(rng, n, dtype, which)
    run = (random(rng, n, dtype), np.abs(random(rng, n, dtype)) + dtype(0.5))
    running = [a.copy() for a in run]
    y, mean, rstd = batch_norm(numba_ops, x, gamma, beta, momentum=0.3, running=running)
    running_ref = f64(*run)
    y_ref, mean_ref, rstd_ref = batch_norm(reference, *f64(x, gamma, beta), momentum=0.3,
                                           running=running_ref)
    rtol32, atol = tolerances(rows)
    for got, want in ((y, y_ref), (mean, mean_ref), (rstd, rstd_ref), *zip(running,
                                                                           running_ref)):
        assert got.dtype == dtype
        assert_close(got, want, dtype, rtol32=rtol32, atol_scale=1e-1)
    grads = batch_norm_grads(numba_ops, dy, x, gamma, mean, rstd)
    grads_ref = batch_norm_grads(reference, *f64(dy, x, gamma, mean_ref, rstd_ref))
    for got, want in zip(grads, grads_ref):
        assert got.dtype == dtype
        assert_close(got, want, dtype, rtol32=rtol32, rtol64=1e-11, atol_scale=atol)
    # evaluation mode with the updated running statistics
    y_eval = np.empty_like(x)
    assert numba_ops.batch_norm_forward_eval(x, gamma, beta, EPS, *running, y_eval) is y_eval
    y_eval_ref = reference.batch_norm_forward_eval(*f64(x, gamma, beta), EPS, *running_ref,
                                                   np.empty(shape))
    assert_close(y_eval, y_eval_ref, dtype, rtol32=rtol32, atol_scale=1e-1)


def test_batch_norm_running_statistics_follow_pytorch_formula(dtype, numba_ops):
    """running = (1 - momentum) running + momentum batch, the variance unbiased (n - 1)."""
    rng = np.random.default_rng(7)
    x = random(rng, (10, 3), dtype)
    rm, rv = np.array([0.5, -1.0, 2.0], dtype), np.array([1.0, 2.0, 0.25], dtype)
    expected_mean = 0.8 * rm + 0.2 * x.astype(np.float64).mean(axis=0)
    expected_var = 0.8 * rv + 0.2 * x.astype(np.float64).var(axis=0, ddof=1)
    batch_norm(numba_ops, x, np.empty(0, dtype), np.empty(0, dtype), momentum=0.2,
               running=(rm, rv))
    assert rm.dtype == dtype and rv.dtype == dtype
    assert_close(rm, expected_mean, dtype, rtol32=1e-5)
    assert_close(rv, expected_var, dtype, rtol32=1e-5)
    # momentum = 1 / k over k batches (PyTorch's momentum=None) is the plain average
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    batches = [random(rng, (6, 3), dtype) for _ in range(4)]
    for k, batch in enumerate(batches, 1):
        batch_norm(numba_ops, batch, np.empty(0, dtype), np.empty(0, dtype), momentum=1 / k,
                   running=(rm, rv))
    assert_close(rm, np.mean([b.astype(np.float64).mean(axis=0) for b in batches], axis=0),
                 dtype, rtol32=1e-5)
    assert_close(rv, np.mean([b.astype(np.float64).var(axis=0, ddof=1) for b in batches],
                             axis=0), dtype, rtol32=1e-5)


def test_batch_norm_accumulates_parameter_gradients(rng, numba_ops, reference):
    x, dy = random(rng, (37, 11), np.float64), random(rng, (37, 11), np.float64)
    gamma = random(rng, 11, np.float64)
    for ops in (numba_ops, reference):
        _, mean, rstd = batch_norm(ops, x, gamma, np.empty(0))
        dx, dg, db = batch_norm_grads(ops, dy, x, gamma, mean, rstd)
        acc_g, acc_b = np.full(11, 0.5), np.full(11, -0.25)
        dx_acc, _, _ = batch_norm_grads(ops, dy, x, gamma, mean, rstd, acc_g, acc_b,
                                        accumulate=True)
        np.testing.assert_allclose(acc_g, dg + 0.5, rtol=1e-12)
        np.testing.assert_allclose(acc_b, db - 0.25, rtol=1e-12)
        np.testing.assert_array_equal(dx_acc, dx)     # dx uses this batch's sums only
        dx_alone, _, _ = batch_norm_grads(ops, dy, x, gamma, mean, rstd, np.empty(0),
                                          np.empty(0))
        np.testing.assert_array_equal(dx_alone, dx)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("which", ["gamma+beta", "none"])
def test_batch_norm_backward_matches_finite_differences(backend, which, rng):
    ops = fnn.get_backend(backend)
    x = random(rng, (6, 5), np.float64, 1.5)
    gamma, beta = affine_params(rng, 5, np.float64, which)
    w = random(rng, (6, 5), np.float64)

    def loss():
        return float((w * batch_norm(ops, x, gamma, beta, eps=1e-3)[0]).sum())

    _, mean, rstd = batch_norm(ops, x, gamma, beta, eps=1e-3)
    dx, dgamma, dbeta = batch_norm_grads(ops, w, x, gamma, mean, rstd)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    if gamma.size:
        np.testing.assert_allclose(dgamma, numerical_gradient(loss, gamma), rtol=1e-6,
                                   atol=1e-8)
    np.testing.assert_allclose(dbeta, w.sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_batch_norm_equal_columns_single_row_and_large_magnitudes(backend, dtype):
    ops = fnn.get_backend(backend)
    rng = np.random.default_rng(5)
    gamma, beta = random(rng, 4, dtype), random(rng, 4, dtype)
    equal = np.tile(np.array([3.5, -2.0, 0.0, 1e3], dtype), (6, 1))   # variance 0
    with np.errstate(all="raise"):
        y, mean, rstd = batch_norm(ops, equal, gamma, beta)
        dx, dg, db = batch_norm_grads(ops, random(rng, (6, 4), dtype), equal, gamma, mean, rstd)
        # one row: the batch variance is 0; the running variance takes it (PyTorch refuses
        # this in training, and callers should)
        rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
        y1, _, _ = batch_norm(ops, equal[:1], gamma, beta, momentum=0.5, running=(rm, rv))
    for a in (y, dx, dg, db, y1, rm, rv):
        assert np.isfinite(a).all()
    np.testing.assert_allclose(y, np.broadcast_to(beta, y.shape), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rv, 0.5, rtol=1e-6)
    check_large_magnitudes(ops, batch_norm, random(rng, (9, 4), np.float64), gamma, beta)
    check_large_magnitudes(ops, batch_norm, random(rng, (300, 4), np.float64), gamma, beta)


def batch_norm_eval_grads(ops, dy, x, gamma, running, dgamma=None, dbeta=None,
                          accumulate=False, eps=EPS):
    n = x.shape[1]
    dx = np.empty_like(x)
    dgamma = np.empty(n if gamma.size else 0, x.dtype) if dgamma is None else dgamma
    dbeta = np.empty(n, x.dtype) if dbeta is None else dbeta
    assert ops.batch_norm_backward_eval(dy, x, gamma, eps, *running, dx, dgamma, dbeta,
                                        accumulate) is dx
    return dx, dgamma, dbeta


@pytest.mark.parametrize("which", AFFINE)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_backward_eval_matches_reference(shape, which, dtype, rng, numba_ops,
                                                    reference):
    """Evaluation mode's backward (running statistics as constants): dx, dgamma, dbeta,
    also accumulated, also without parameter gradients, also in place (dx = dy)."""
    rows, n = shape
    x = random(rng, shape, dtype, 2.0) + dtype(0.5)
    dy = random(rng, shape, dtype)
    gamma, _ = affine_params(rng, n, dtype, which)
    running = (random(rng, n, dtype), np.abs(random(rng, n, dtype)) + dtype(0.5))
    grads = batch_norm_eval_grads(numba_ops, dy, x, gamma, running)
    grads_ref = batch_norm_eval_grads(reference, *f64(dy, x, gamma), f64(*running))
    rtol32, atol = tolerances(rows)
    for got, want in zip(grads, grads_ref):
        assert got.dtype == dtype
        assert_close(got, want, dtype, rtol32=rtol32, rtol64=1e-11, atol_scale=atol)
    acc_g = np.full(n if gamma.size else 0, 0.5, dtype)
    acc_b = np.full(n, -0.25, dtype)
    dx_acc, _, _ = batch_norm_eval_grads(numba_ops, dy, x, gamma, running, acc_g, acc_b,
                                         accumulate=True)
    np.testing.assert_array_equal(dx_acc, grads[0])
    assert_close(acc_g, grads_ref[1] + 0.5, dtype, rtol32=rtol32, rtol64=1e-11,
                 atol_scale=atol)
    assert_close(acc_b, grads_ref[2] - 0.25, dtype, rtol32=rtol32, rtol64=1e-11,
                 atol_scale=atol)
    dx_alone, _, _ = batch_norm_eval_grads(numba_ops, dy, x, gamma, running,
                                           np.empty(0, dtype), np.empty(0, dtype))
    np.testing.assert_array_equal(dx_alone, grads[0])
    dy_in = dy.copy()
    dg_in, db_in = np.empty(n if gamma.size else 0, dtype), np.empty(n, dtype)
    assert numba_ops.batch_norm_backward_eval(dy_in, x, gamma, EPS, *running, dy_in, dg_in,
                                              db_in, False) is dy_in
    for got, want in zip((dy_in, dg_in, db_in), grads):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("which", ["gamma+beta", "none"])
def test_batch_norm_backward_eval_matches_finite_differences(backend, which, rng):
    ops = fnn.get_backend(backend)
    x = random(rng, (6, 5), np.float64, 1.5)
    gamma, beta = affine_params(rng, 5, np.float64, which)
    running = (random(rng, 5, np.float64), rng.uniform(0.5, 2.0, 5))
    w = random(rng, (6, 5), np.float64)

    def loss():
        y = ops.batch_norm_forward_eval(x, gamma, beta, 1e-3, *running, np.empty_like(x))
        return float((w * y).sum())

    dx, dgamma, dbeta = batch_norm_eval_grads(ops, w, x, gamma, running, eps=1e-3)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    if gamma.size:
        np.testing.assert_allclose(dgamma, numerical_gradient(loss, gamma), rtol=1e-6,
                                   atol=1e-8)
    np.testing.assert_allclose(dbeta, w.sum(axis=0), rtol=1e-12)


# --------------------------------------------------------------------------- both
@pytest.mark.parametrize("kind", ["layer", "batch"])
def test_in_place(kind, rng, numba_ops):
    forward, grads = ((layer_norm, layer_norm_grads) if kind == "layer"
                      else (batch_norm, batch_norm_grads))
    x, dy = random(rng, (70, 33), np.float64), random(rng, (70, 33), np.float64)
    gamma, beta = random(rng, 33, np.float64), random(rng, 33, np.float64)
    y, mean, rstd = forward(numba_ops, x, gamma, beta)
    dx, _, _ = grads(numba_ops, dy, x, gamma, mean, rstd)
    n = x.shape[0] if kind == "layer" else x.shape[1]
    x_in, dy_in = x.copy(), dy.copy()
    m, r = np.empty(n), np.empty(n)
    if kind == "layer":
        assert numba_ops.layer_norm_forward(x_in, gamma, beta, EPS, x_in, m, r) is x_in
        assert numba_ops.layer_norm_backward(dy_in, x, gamma, m, r, dy_in, np.empty(33),
                                             np.empty(33), False) is dy_in
    else:
        assert numba_ops.batch_norm_forward_train(x_in, gamma, beta, EPS, 0.1, np.empty(0),
                                                  np.empty(0), x_in, m, r) is x_in
        assert numba_ops.batch_norm_backward(dy_in, x, gamma, m, r, dy_in, np.empty(33),
                                             np.empty(33), False) is dy_in
    np.testing.assert_array_equal(x_in, y)
    np.testing.assert_array_equal(dy_in, dx)


@pytest.mark.parametrize("shape", [(2048, 512), (130, 1031), (40, 4000), (7, 3)], ids=str)
def test_results_identical_for_any_thread_count(shape, dtype):
    """Row blocks and column-sum blocks depend on the shape only: bit-identical results
    on one and two threads (every output, forward and backward, both layers, BatchNorm's
    evaluation-mode backward too)."""
    rng = np.random.default_rng(11)
    x, dy = random(rng, shape, dtype), random(rng, shape, dtype)
    gamma, beta = random(rng, shape[1], dtype), random(rng, shape[1], dtype)
    ops = fnn.get_backend("numba")
    results = []
    before = numba.get_num_threads()
    try:
        for n_threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n_threads)
            running = (np.zeros(shape[1], dtype), np.ones(shape[1], dtype))
            ln = layer_norm(ops, x, gamma, beta)
            ln_grads = layer_norm_grads(ops, dy, x, gamma, *ln[1:])
            bn = batch_norm(ops, x, gamma, beta, running=running)
            bn_grads = batch_norm_grads(ops, dy, x, gamma, *bn[1:])
            bn_eval_grads = batch_norm_eval_grads(ops, dy, x, gamma, running)
            results.append([*ln, *ln_grads, *bn, *bn_grads, *running, *bn_eval_grads])
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_blocks_are_what_the_tests_assume():
    # SHAPES above are chosen against these (non-multiples, several blocks, parallel)
    assert ln_kernels.LN_ROW_BLOCK == 32
    assert (bn_kernels.BN_ROW_BLOCK, bn_kernels.BN_COLUMN_BLOCK) == (64, 512)
    assert 130 * 1031 * 8 > norm.SERIAL_MAX_BYTES


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_nan_stays_in_its_row_or_column(backend, dtype):
    """A NaN makes its LayerNorm row and its BatchNorm column NaN (no fast-math flag hides
    it), and nothing else."""
    ops = fnn.get_backend(backend)
    x = random(np.random.default_rng(2), (70, 40), dtype)
    x[5, 7] = np.nan
    gamma, beta = np.ones(40, dtype), np.zeros(40, dtype)
    with np.errstate(invalid="ignore"):
        y, _, _ = layer_norm(ops, x, gamma, beta)
        assert np.isnan(y[5]).all() and np.isfinite(np.delete(y, 5, axis=0)).all()
        y, mean, rstd = batch_norm(ops, x, gamma, beta)
        assert np.isnan(y[:, 7]).all() and np.isfinite(np.delete(y, 7, axis=1)).all()
        assert np.isnan(mean[7]) and np.isnan(rstd[7])
