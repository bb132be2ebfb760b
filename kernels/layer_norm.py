"""LayerNorm's kernels: statistics per row, forward and backward (formulas, conventions
and the split of the work in :mod:`.norm`)."""
import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel
from .norm import _REDUCE_FLAGS, SERIAL_MAX_BYTES, _add_partials, _row_mean_var, _rows_per_task

#: Rows per block of LayerNorm's ``dgamma``/``dbeta`` column sums (512 float32 features:
#: 64 KiB of ``dy`` and ``x`` per block; 64 blocks at 2048 rows).
LN_ROW_BLOCK = 32


@kernel(inline="always")
def _normalize_row(src, dst, m, r, gamma, beta):
    """``dst = (src - m) * r * gamma + beta`` (``gamma``/``beta`` may be size 0).

    Inlined by Numba, so a call with ``dst`` the same variable as ``src`` (in place) reads
    and writes through one pointer and LLVM vectorises it; two names that alias would
    send it to its scalar fallback (in-place LayerNorm measured 2.2x slower)."""
    n = src.size
    if gamma.size > 0 and beta.size > 0:
        for j in range(n):
            dst[j] = (src[j] - m) * r * gamma[j] + beta[j]
    elif gamma.size > 0:
        for j in range(n):
            dst[j] = (src[j] - m) * r * gamma[j]
    elif beta.size > 0:
        for j in range(n):
            dst[j] = (src[j] - m) * r + beta[j]
    else:
        for j in range(n):
            dst[j] = (src[j] - m) * r


@kernel
def _layer_norm_forward_rows(x, gamma, beta, eps, y, mean, rstd, r0, r1):
    one = x.dtype.type(1)
    for i in range(r0, r1):
        xi = x[i]
        yi = y[i]
        m, v = _row_mean_var(xi)
        r = one / np.sqrt(v + eps)
        mean[i] = m
        rstd[i] = r
        if xi.ctypes.data == yi.ctypes.data:       # in place: one name (see _normalize_row)
            _normalize_row(yi, yi, m, r, gamma, beta)
        else:
            _normalize_row(xi, yi, m, r, gamma, beta)


@parallel_kernel
def layer_norm_forward(x, gamma, beta, eps, y, mean, rstd):
    """LayerNorm over the last axis: ``y = (x - mean) * rstd * gamma + beta`` per row.

    Parameters
    ----------
    x : (rows, features) C-contiguous float32/float64.
    gamma, beta : (features,) or size 0 (absent: 1 and 0).
    eps : float, added to the biased variance inside the square root.
    y : (rows, features), written; may be ``x``.
    mean, rstd : (rows,), written: each row's mean and ``1 / sqrt(var + eps)``, for the
        backward.

    Returns ``y``.
    """
    n_rows, n_cols = x.shape
    e = x.dtype.type(eps)
    if x.size * 2 * x.itemsize <= SERIAL_MAX_BYTES:
        _layer_norm_forward_rows(x, gamma, beta, e, y, mean, rstd, np.int64(0), n_rows)
    else:
        step = _rows_per_task(n_cols)
        for task in prange((n_rows + step - 1) // step):
            r0 = task * step
            _layer_norm_forward_rows(x, gamma, beta, e, y, mean, rstd, r0,
                                     min(r0 + step, n_rows))
    return y


@kernel(fastmath=_REDUCE_FLAGS)
def _row_grad_sums(dyi, xi, gamma, m, r, has_gamma):
    """``(sum_j g_j, sum_j g_j xhat_j)`` of one row, ``g = dy * gamma``."""
    t = xi.dtype.type
    sg = t(0)
    sgx = t(0)
    if has_gamma:
        for j in range(xi.size):
            g = dyi[j] * gamma[j]
            sg += g
            sgx += g * ((xi[j] - m) * r)
    else:
        for j in range(xi.size):
            g = dyi[j]
            sg += g
            sgx += g * ((xi[j] - m) * r)
    return sg, sgx


@kernel(inline="always")
def _layer_norm_grad_row(dyi, xi, dxi, gamma, m, r, a, b, acc_gamma, acc_beta):
    """One row: ``dx = r (dy gamma - a - xhat b)``, ``acc_gamma += dy xhat``, ``acc_beta
    += dy``.  Inlined, so an in-place call (``dxi`` the same variable as ``dyi``) goes
    through one pointer and vectorises (see :func:`_normalize_row`); each element is
    read before it is written."""
    n = xi.size
    if gamma.size > 0:
        for j in range(n):
            d = dyi[j]
            xh = (xi[j] - m) * r
            acc_gamma[j] += d * xh
            acc_beta[j] += d
            dxi[j] = r * (d * gamma[j] - a - xh * b)
    else:
        for j in range(n):
            d = dyi[j]
            xh = (xi[j] - m) * r
            acc_gamma[j] += d * xh
            acc_beta[j] += d
            dxi[j] = r * (d - a - xh * b)


@kernel
def _layer_norm_backward_rows(dy, x, gamma, mean, rstd, dx, acc_gamma, acc_beta, r0, r1):
    """Rows ``r0:r1``: ``dx``, and ``dy * xhat`` / ``dy`` added to the block's partial
    column sums ``acc_gamma`` / ``acc_beta`` (row by row, in order)."""
    t = x.dtype.type
    inv_n = t(1) / t(x.shape[1])
    has_gamma = gamma.size > 0
    for i in range(r0, r1):
        xi = x[i]
        dyi = dy[i]
        dxi = dx[i]
        m = mean[i]
        r = rstd[i]
        sg, sgx = _row_grad_sums(dyi, xi, gamma, m, r, has_gamma)
        a = sg * inv_n
        b = sgx * inv_n
        if dyi.ctypes.data == dxi.ctypes.data:     # in place: one name
            _layer_norm_grad_row(dxi, xi, dxi, gamma, m, r, a, b, acc_gamma, acc_beta)
        else:
            _layer_norm_grad_row(dyi, xi, dxi, gamma, m, r, a, b, acc_gamma, acc_beta)


@parallel_kernel
def layer_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, accumulate):
    """Backward of :func:`layer_norm_forward` (formulas in the module docstring).

    Parameters
    ----------
    dy, x : (rows, features) C-contiguous, one dtype.
    gamma : (features,) or size 0.
    mean, rstd : (rows,), as saved by the forward.
    dx : (rows, features), written; may be ``dy``.
    dgamma, dbeta : (features,) or size 0 (not computed).
    accumulate : bool, add to ``dgamma``/``dbeta`` instead of overwriting them.

    Returns ``dx``.  ``dgamma``/``dbeta`` are column sums over fixed blocks of
    :data:`LN_ROW_BLOCK` rows added in block order: identical on any thread count.
    """
    n_rows, n_cols = x.shape
    n_blocks = (n_rows + LN_ROW_BLOCK - 1) // LN_ROW_BLOCK
    partial_gamma = np.zeros((n_blocks, n_cols), x.dtype)
    partial_beta = np.zeros((n_blocks, n_cols), x.dtype)
    if x.size * 3 * x.itemsize <= SERIAL_MAX_BYTES:
        for blk in range(n_blocks):
            r0 = blk * LN_ROW_BLOCK
            _layer_norm_backward_rows(dy, x, gamma, mean, rstd, dx, partial_gamma[blk],
                                      partial_beta[blk], r0, min(r0 + LN_ROW_BLOCK, n_rows))
    else:
        for blk in prange(n_blocks):
            r0 = blk * LN_ROW_BLOCK
            _layer_norm_backward_rows(dy, x, gamma, mean, rstd, dx, partial_gamma[blk],
                                      partial_beta[blk], r0, min(r0 + LN_ROW_BLOCK, n_rows))
    _add_partials(partial_gamma, dgamma, accumulate)
    _add_partials(partial_beta, dbeta, accumulate)
    return dx
