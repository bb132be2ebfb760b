"""Normalisation layers' kernels: LayerNorm (statistics per row) and BatchNorm (statistics
per column), forward and backward, fused.

Shapes: ``x`` is ``(rows, features)``, C-contiguous (the caller flattens every axis but
the last into the rows).  ``gamma``/``beta`` are ``(features,)``, or size-0 arrays for a
layer without them (as a missing bias in :mod:`.dense`): an absent ``gamma`` is 1, an
absent ``beta`` 0, and an absent gradient output is not written.  Saved statistics
``mean``/``rstd`` have the input's dtype; every scalar (``eps``, ``momentum``) is converted
to it, so float32 stays float32.

LayerNorm, per row ``i`` over its ``F`` features (PyTorch's formula: biased variance,
``eps`` inside the square root)::

    mean_i = sum_j x_ij / F        var_i = sum_j (x_ij - mean_i)**2 / F
    rstd_i = 1 / sqrt(var_i + eps)  xhat_ij = (x_ij - mean_i) * rstd_i
    y_ij = xhat_ij * gamma_j + beta_j
    g_ij = dy_ij * gamma_j
    dx_ij = rstd_i * (g_ij - sum_k g_ik / F - xhat_ij * sum_k g_ik xhat_ik / F)
    dgamma_j (+)= sum_i dy_ij xhat_ij      dbeta_j (+)= sum_i dy_ij

BatchNorm (training), per column ``j`` over its ``N`` rows: the same with the roles of
rows and columns exchanged (``mean_j``, ``rstd_j``, ``xhat_ij = (x_ij - mean_j) rstd_j``)::

    dx_ij = gamma_j rstd_j (dy_ij - dbeta_j / N - xhat_ij dgamma_j / N)

with ``dbeta_j = sum_i dy_ij`` and ``dgamma_j = sum_i dy_ij xhat_ij`` of this batch.

BatchNorm in evaluation mode normalises with the running statistics, constants for the
backward (``rstd_j = 1 / sqrt(running_var_j + eps)``, ``xhat_ij = (x_ij - running_mean_j)
rstd_j``)::

    dx_ij = dy_ij gamma_j rstd_j
    dgamma_j (+)= sum_i dy_ij xhat_ij      dbeta_j (+)= sum_i dy_ij

How the work is split, and why the results do not depend on the thread count:

* Row statistics (LayerNorm) are computed by one task per block of whole rows, each row
  in two passes over itself while it sits in L1: the corrected two-pass algorithm
  (``m = sum(x) / n``; ``mean = m + sum(x - m) / n``, ``var = (sum((x - m)**2) -
  sum(x - m)**2 / n) / n``): exact for rows of equal values, no cancellation for a large
  common offset.
* Column sums (LayerNorm's ``dgamma``/``dbeta``, every BatchNorm statistic) are taken in
  fixed blocks of rows (:data:`LN_ROW_BLOCK`, :data:`BN_ROW_BLOCK`): each block's sums go
  to its own row of partial sums, which are then added in block order (as
  :func:`.dense.act_bias_grad` does).  The blocks depend on the shape only, so the result
  is bit-identical on any number of threads, and for small inputs (run serially) too.
* BatchNorm's statistics: each task (a block of rows by a block of columns) takes its
  block's column means and centred sums of squares by the same corrected two-pass
  algorithm (the second pass re-reads a block still in L2), all relative to a pivot, the
  batch's first row (a sample of each column, so the block means stay small and a large
  common offset costs no precision).  The blocks are combined exactly, in block order:
  ``M2 = sum_b [M2_b + n_b (mean_b - mean)**2]`` (Chan, Golub & LeVeque).  One pass
  over memory for the statistics, one for ``y``; the backward likewise (sums, then ``dx``).

Reductions use the ``reassoc`` and ``contract`` fast-math flags so LLVM vectorises them
(rounding only: the order then follows the SIMD width of the compile target, never the
thread count); neither changes NaN/Inf behaviour.  The loops that write outputs use no
fast-math flag, so in-place calls give the same bits as out-of-place ones.
"""
import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel

# Reductions reorder their additions to vectorise and may fuse multiply-adds (rounding
# only).  The loops that write outputs use no fast-math flag: LLVM vectorises them anyway,
# and without contraction the vector body, its scalar remainder and the scalar fallback
# taken when an output aliases an input (in place) round identically, so in-place and
# out-of-place calls give the same bits.
_REDUCE_FLAGS = {"contract", "reassoc"}

#: Rows per block of LayerNorm's ``dgamma``/``dbeta`` column sums (512 float32 features:
#: 64 KiB of ``dy`` and ``x`` per block; 64 blocks at 2048 rows).
LN_ROW_BLOCK = 32
#: Rows and columns per task of BatchNorm's column statistics: a 64 x 512 float32 block
#: is 128 KiB, re-read from L2 by the second (centred) pass.
BN_ROW_BLOCK = 64
BN_COLUMN_BLOCK = 512
#: Elements per task of the element-wise passes (whole rows; as in :mod:`.bias`).
CHUNK = 16384
#: Run serially while the array operands span at most 512 KiB (waking the pool costs more).
SERIAL_MAX_BYTES = 1 << 19


@kernel
def _rows_per_task(n_cols):
    """Whole rows per task of an element-wise pass: about :data:`CHUNK` elements."""
    return max(1, CHUNK // max(1, n_cols))


# =========================================================================== LayerNorm
@kernel(fastmath=_REDUCE_FLAGS)
def _row_mean_var(xi):
    """(mean, biased variance) of one row, in its dtype, by the corrected two-pass
    algorithm: ``m = sum(x) / n``, then with ``d = x - m``: ``mean = m + sum(d) / n``,
    ``var = (sum(d**2) - sum(d)**2 / n) / n``.  The correction removes the rounding error
    of the first sum (large for a large common offset: float32 rows near 1e4 gave 3 ulp
    of the offset in ``mean``, now half an ulp)."""
    t = xi.dtype.type
    n = xi.size
    s = t(0)
    for j in range(n):
        s += xi[j]
    m = s / t(n)
    c = t(0)
    q = t(0)
    for j in range(n):
        d = xi[j] - m
        c += d
        q += d * d
    inv_n = t(1) / t(n)
    v = (q - c * c * inv_n) * inv_n
    return m + c * inv_n, t(0) if v < t(0) else v      # rounding only; NaN stays NaN


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
        _layer_norm_forward_rows(x, gamma, beta, e, y, mean, rstd, 0, n_rows)
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


@kernel
def _add_partials(partial, out, accumulate):
    """``out (+)= sum_b partial[b]``, the blocks added in order (out may be size 0)."""
    if out.size == 0:
        return
    if not accumulate:
        for j in range(out.size):
            out[j] = out.dtype.type(0)
    for b in range(partial.shape[0]):
        pb = partial[b]
        for j in range(out.size):
            out[j] += pb[j]


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


# =========================================================================== BatchNorm
@kernel(fastmath=_REDUCE_FLAGS)
def _column_block_stats(x, r0, r1, c0, c1, means, m2):
    """For the block ``x[r0:r1, c0:c1]``: ``means[c0:c1]`` = its column means *less the
    pivot* ``x[0]`` (the batch's first row) and ``m2[c0:c1]`` = the squared deviations
    from them, by the corrected two-pass algorithm of :func:`_row_mean_var` (the block is
    still in cache for the second pass).

    Shifting by a sample of the same column keeps the block means small, so a large
    common offset (float32 data near 1e4) costs no precision when the blocks are combined
    (unshifted block means lost 2e-5 of ``rstd`` there).  The loops run over 1-D slices
    indexed from 0 (unit stride, non-negative indices), so LLVM vectorises them;
    ``x[i, c0 + j]`` kept them scalar."""
    t = x.dtype.type
    zero = t(0)
    pivot = x[0, c0:c1]
    m = means[c0:c1]
    q = m2[c0:c1]
    w = c1 - c0
    corr = np.zeros(w, x.dtype)
    for j in range(w):
        m[j] = zero
        q[j] = zero
    for i in range(r0, r1):
        xi = x[i, c0:c1]
        for j in range(w):
            m[j] += xi[j] - pivot[j]
    inv = t(1) / t(r1 - r0)
    for j in range(w):
        m[j] *= inv
    for i in range(r0, r1):
        xi = x[i, c0:c1]
        for j in range(w):
            d = (xi[j] - pivot[j]) - m[j]
            corr[j] += d
            q[j] += d * d
    for j in range(w):
        cj = corr[j]
        m[j] += cj * inv
        v = q[j] - cj * cj * inv
        q[j] = zero if v < zero else v          # rounding only; NaN stays NaN


@kernel
def _column_stats(x, parallel):
    """Per-block column means and centred sums of squares: two ``(row blocks, features)``
    arrays.  Tasks are (row block, column block) pairs: also parallel for short, wide
    inputs; the result does not depend on how the tasks are run."""
    n_rows, n_cols = x.shape
    n_rb = (n_rows + BN_ROW_BLOCK - 1) // BN_ROW_BLOCK
    n_cb = (n_cols + BN_COLUMN_BLOCK - 1) // BN_COLUMN_BLOCK
    means = np.empty((n_rb, n_cols), x.dtype)
    m2 = np.empty((n_rb, n_cols), x.dtype)
    if parallel:
        _column_stats_parallel(x, means, m2, n_rb, n_cb)
    else:
        for task in range(n_rb * n_cb):
            _column_stats_task(x, means, m2, task, n_cb)
    return means, m2


@kernel(inline="always")
def _column_stats_task(x, means, m2, task, n_cb):
    n_rows, n_cols = x.shape
    rb = task // n_cb
    cb = task - rb * n_cb
    r0 = rb * BN_ROW_BLOCK
    c0 = cb * BN_COLUMN_BLOCK
    _column_block_stats(x, r0, min(r0 + BN_ROW_BLOCK, n_rows), c0,
                        min(c0 + BN_COLUMN_BLOCK, n_cols), means[rb], m2[rb])


@parallel_kernel
def _column_stats_parallel(x, means, m2, n_rb, n_cb):
    for task in prange(n_rb * n_cb):
        _column_stats_task(x, means, m2, task, n_cb)


@kernel
def _combine_stats(pivot, means, m2, n_rows, eps, mean, rstd, var):
    """Exact combination of the row blocks' statistics, in block order (Chan et al.), the
    block means being relative to ``pivot``: ``mean = pivot + sum_b n_b mean_b / N``,
    ``M2 = sum_b [M2_b + n_b (mean_b - (mean - pivot))**2]``; writes ``var = M2 / N``
    (biased) and ``rstd = 1 / sqrt(var + eps)``."""
    t = mean.dtype.type
    n_blocks, n_cols = means.shape
    zero = t(0)
    shifted = np.zeros(n_cols, mean.dtype)
    for b in range(n_blocks):
        nb = t(min(BN_ROW_BLOCK, n_rows - b * BN_ROW_BLOCK))
        mb = means[b]
        for j in range(n_cols):
            shifted[j] += nb * mb[j]
    inv_n = t(1) / t(n_rows)
    for j in range(n_cols):
        shifted[j] *= inv_n
        mean[j] = pivot[j] + shifted[j]
        var[j] = zero
    for b in range(n_blocks):
        nb = t(min(BN_ROW_BLOCK, n_rows - b * BN_ROW_BLOCK))
        mb = means[b]
        qb = m2[b]
        for j in range(n_cols):
            d = mb[j] - shifted[j]
            var[j] += qb[j] + nb * d * d
    one = t(1)
    for j in range(n_cols):
        v = var[j] * inv_n
        var[j] = v
        rstd[j] = one / np.sqrt(v + eps)


@kernel(inline="always")
def _affine_row(src, dst, center, scale, beta):
    """``dst = (src - center) * scale + beta`` (inlined: in place through one name)."""
    if beta.size > 0:
        for j in range(src.size):
            dst[j] = (src[j] - center[j]) * scale[j] + beta[j]
    else:
        for j in range(src.size):
            dst[j] = (src[j] - center[j]) * scale[j]


@kernel
def _affine_rows(x, center, scale, beta, y, r0, r1):
    """``y = (x - center) * scale + beta`` (per column; ``beta`` may be size 0); ``y``
    may be ``x``."""
    for i in range(r0, r1):
        xi = x[i]
        yi = y[i]
        if xi.ctypes.data == yi.ctypes.data:
            _affine_row(yi, yi, center, scale, beta)
        else:
            _affine_row(xi, yi, center, scale, beta)


@parallel_kernel
def _affine(x, center, scale, beta, y):
    n_rows, n_cols = x.shape
    if x.size * 2 * x.itemsize <= SERIAL_MAX_BYTES:
        _affine_rows(x, center, scale, beta, y, 0, n_rows)
    else:
        step = _rows_per_task(n_cols)
        for task in prange((n_rows + step - 1) // step):
            r0 = task * step
            _affine_rows(x, center, scale, beta, y, r0, min(r0 + step, n_rows))
    return y


@kernel
def _scale_of(gamma, rstd, scale):
    """``scale = gamma * rstd`` (``rstd`` alone without ``gamma``)."""
    if gamma.size > 0:
        for j in range(scale.size):
            scale[j] = gamma[j] * rstd[j]
    else:
        for j in range(scale.size):
            scale[j] = rstd[j]


@kernel
def batch_norm_forward_train(x, gamma, beta, eps, momentum, running_mean, running_var, y,
                             mean, rstd):
    """BatchNorm in training mode: statistics of this batch, per feature (column).

    ``y = (x - mean) * rstd * gamma + beta`` with ``mean``/``var`` (biased) over the rows,
    ``rstd = 1 / sqrt(var + eps)``; the running statistics are updated in place as
    PyTorch does::

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * N / (N - 1)

    (the running variance is unbiased; for ``N == 1``, which PyTorch refuses in training
    and callers should too, the biased variance 0 is used).  PyTorch's ``momentum=None``
    (cumulative average) is ``momentum = 1 / num_batches_tracked``, computed by the caller.

    Parameters
    ----------
    x : (rows, features) C-contiguous float32/float64, rows >= 1.
    gamma, beta : (features,) or size 0 (absent: 1 and 0).
    eps, momentum : float.
    running_mean, running_var : (features,), updated in place; or size 0 (not tracked).
    y : (rows, features), written; may be ``x``.
    mean, rstd : (features,), written: the batch mean and ``1 / sqrt(var + eps)``.

    Returns ``y``.  Two passes over ``x`` (statistics, then ``y``); identical results on
    any number of threads (see the module docstring).
    """
    n_rows, n_cols = x.shape
    t = x.dtype.type
    means, m2 = _column_stats(x, x.size * x.itemsize > SERIAL_MAX_BYTES)
    var = np.empty(n_cols, x.dtype)
    _combine_stats(x[0], means, m2, n_rows, t(eps), mean, rstd, var)
    if running_mean.size > 0:
        _update_running(running_mean, running_var, mean, var, t(momentum), n_rows)
    scale = np.empty(n_cols, x.dtype)
    _scale_of(gamma, rstd, scale)
    _affine(x, mean, scale, beta, y)
    return y


@kernel
def _update_running(running_mean, running_var, mean, var, momentum, n_rows):
    t = mean.dtype.type
    keep = t(1) - momentum
    unbias = t(n_rows) / t(n_rows - 1) if n_rows > 1 else t(1)
    for j in range(mean.size):
        running_mean[j] = keep * running_mean[j] + momentum * mean[j]
        running_var[j] = keep * running_var[j] + momentum * (var[j] * unbias)


@kernel
def batch_norm_forward_eval(x, gamma, beta, eps, running_mean, running_var, y):
    """BatchNorm in evaluation mode: ``y = (x - running_mean) / sqrt(running_var + eps)
    * gamma + beta``, one pass.  Shapes as in :func:`batch_norm_forward_train`
    (``running_mean``/``running_var`` are required here).  Returns ``y``."""
    n_cols = x.shape[1]
    t = x.dtype.type
    e = t(eps)
    one = t(1)
    scale = np.empty(n_cols, x.dtype)
    has_gamma = gamma.size > 0
    for j in range(n_cols):
        r = one / np.sqrt(running_var[j] + e)
        scale[j] = gamma[j] * r if has_gamma else r
    _affine(x, running_mean, scale, beta, y)
    return y


@kernel(fastmath=_REDUCE_FLAGS)
def _grad_block_sums(dy, x, mean, r0, r1, c0, c1, sdy, sdxc):
    """For the block ``[r0:r1, c0:c1]``: ``sdy[j] = sum dy``, ``sdxc[j] = sum dy (x - mean)``
    (loops over 1-D slices indexed from 0, as in :func:`_column_block_stats`)."""
    zero = x.dtype.type(0)
    s = sdy[c0:c1]
    q = sdxc[c0:c1]
    m = mean[c0:c1]
    w = c1 - c0
    for j in range(w):
        s[j] = zero
        q[j] = zero
    for i in range(r0, r1):
        xi = x[i, c0:c1]
        dyi = dy[i, c0:c1]
        for j in range(w):
            d = dyi[j]
            s[j] += d
            q[j] += d * (xi[j] - m[j])


@kernel(inline="always")
def _grad_sums_task(dy, x, mean, sdy, sdxc, task, n_cb):
    n_rows, n_cols = x.shape
    rb = task // n_cb
    cb = task - rb * n_cb
    r0 = rb * BN_ROW_BLOCK
    c0 = cb * BN_COLUMN_BLOCK
    _grad_block_sums(dy, x, mean, r0, min(r0 + BN_ROW_BLOCK, n_rows), c0,
                     min(c0 + BN_COLUMN_BLOCK, n_cols), sdy[rb], sdxc[rb])


@parallel_kernel
def _grad_sums_parallel(dy, x, mean, sdy, sdxc, n_rb, n_cb):
    for task in prange(n_rb * n_cb):
        _grad_sums_task(dy, x, mean, sdy, sdxc, task, n_cb)


@kernel(inline="always")
def _batch_norm_dx_row(dyi, xi, dxi, mean, a, mdy, c):
    for j in range(xi.size):
        dxi[j] = a[j] * (dyi[j] - mdy[j]) - c[j] * (xi[j] - mean[j])


@kernel
def _batch_norm_dx_rows(dy, x, mean, a, mdy, c, dx, r0, r1):
    """``dx = a * (dy - mdy) - c * (x - mean)`` per column; ``dx`` may be ``dy``."""
    for i in range(r0, r1):
        dyi = dy[i]
        dxi = dx[i]
        if dyi.ctypes.data == dxi.ctypes.data:     # in place: one name (inlined)
            _batch_norm_dx_row(dxi, x[i], dxi, mean, a, mdy, c)
        else:
            _batch_norm_dx_row(dyi, x[i], dxi, mean, a, mdy, c)


@parallel_kernel
def _batch_norm_dx(dy, x, mean, a, mdy, c, dx):
    n_rows, n_cols = x.shape
    if x.size * 3 * x.itemsize <= SERIAL_MAX_BYTES:
        _batch_norm_dx_rows(dy, x, mean, a, mdy, c, dx, 0, n_rows)
    else:
        step = _rows_per_task(n_cols)
        for task in prange((n_rows + step - 1) // step):
            r0 = task * step
            _batch_norm_dx_rows(dy, x, mean, a, mdy, c, dx, r0, min(r0 + step, n_rows))
    return dx


@kernel
def batch_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, accumulate):
    """Backward of :func:`batch_norm_forward_train` (batch statistics; formulas in the
    module docstring).

    Parameters
    ----------
    dy, x : (rows, features) C-contiguous, one dtype.
    gamma : (features,) or size 0.
    mean, rstd : (features,), as saved by the forward.
    dx : (rows, features), written; may be ``dy``.
    dgamma, dbeta : (features,) or size 0 (not written).
    accumulate : bool, add to ``dgamma``/``dbeta`` instead of overwriting them (``dx``
        uses this batch's sums either way).

    Returns ``dx``.  Two passes: the column sums of ``dy`` and ``dy * (x - mean)`` in fixed
    blocks added in block order (identical on any thread count), then ``dx``.
    """
    n_rows, n_cols = x.shape
    t = x.dtype.type
    n_rb = (n_rows + BN_ROW_BLOCK - 1) // BN_ROW_BLOCK
    n_cb = (n_cols + BN_COLUMN_BLOCK - 1) // BN_COLUMN_BLOCK
    sdy = np.empty((n_rb, n_cols), x.dtype)
    sdxc = np.empty((n_rb, n_cols), x.dtype)
    if x.size * 2 * x.itemsize > SERIAL_MAX_BYTES:
        _grad_sums_parallel(dy, x, mean, sdy, sdxc, n_rb, n_cb)
    else:
        for task in range(n_rb * n_cb):
            _grad_sums_task(dy, x, mean, sdy, sdxc, task, n_cb)
    sum_dy = np.empty(n_cols, x.dtype)       # dbeta of this batch
    sum_dxh = np.empty(n_cols, x.dtype)      # dgamma of this batch
    _add_partials(sdy, sum_dy, False)
    _add_partials(sdxc, sum_dxh, False)
    inv_n = t(1) / t(n_rows)
    a = np.empty(n_cols, x.dtype)
    mdy = np.empty(n_cols, x.dtype)
    c = np.empty(n_cols, x.dtype)
    has_gamma = gamma.size > 0
    for j in range(n_cols):
        r = rstd[j]
        sum_dxh[j] *= r                      # sum dy * xhat
        aj = gamma[j] * r if has_gamma else r
        a[j] = aj
        mdy[j] = sum_dy[j] * inv_n
        c[j] = aj * r * sum_dxh[j] * inv_n   # xhat * dgamma / N = (x - mean) r dgamma / N
    _batch_norm_dx(dy, x, mean, a, mdy, c, dx)
    if dgamma.size > 0:
        for j in range(n_cols):
            dgamma[j] = dgamma[j] + sum_dxh[j] if accumulate else sum_dxh[j]
    if dbeta.size > 0:
        for j in range(n_cols):
            dbeta[j] = dbeta[j] + sum_dy[j] if accumulate else sum_dy[j]
    return dx


@kernel
def batch_norm_backward_eval(dy, x, gamma, eps, running_mean, running_var, dx, dgamma,
                             dbeta, accumulate):
    """Backward of :func:`batch_norm_forward_eval`: the running statistics are constants,
    so ``y = x * scale + shift`` per column and::

        rstd_j = 1 / sqrt(running_var_j + eps)
        dx_ij = dy_ij * gamma_j * rstd_j                   (rstd_j alone without gamma)
        dgamma_j (+)= rstd_j * sum_i dy_ij (x_ij - running_mean_j)   = sum_i dy_ij xhat_ij
        dbeta_j (+)= sum_i dy_ij

    (fine-tuning with frozen statistics).

    Parameters
    ----------
    dy, x : (rows, features) C-contiguous, one dtype.
    gamma : (features,) or size 0.
    eps : float.
    running_mean, running_var : (features,), the statistics the forward used.
    dx : (rows, features), written; may be ``dy``.
    dgamma, dbeta : (features,) or size 0 (not written).
    accumulate : bool, add to ``dgamma``/``dbeta`` instead of overwriting them.

    Returns ``dx``.  The column sums are those of :func:`batch_norm_backward` (fixed
    blocks of :data:`BN_ROW_BLOCK` rows added in block order: identical on any thread
    count), about ``running_mean``; then ``dx`` in a second pass, which reads only ``dy``
    (so ``dx`` may be ``dy``, and the sums never see a written ``dx``).
    """
    n_rows, n_cols = x.shape
    t = x.dtype.type
    n_rb = (n_rows + BN_ROW_BLOCK - 1) // BN_ROW_BLOCK
    n_cb = (n_cols + BN_COLUMN_BLOCK - 1) // BN_COLUMN_BLOCK
    e = t(eps)
    one = t(1)
    rstd = np.empty(n_cols, x.dtype)
    a = np.empty(n_cols, x.dtype)
    has_gamma = gamma.size > 0
    for j in range(n_cols):
        r = one / np.sqrt(running_var[j] + e)
        rstd[j] = r
        a[j] = gamma[j] * r if has_gamma else r
    if dgamma.size > 0 or dbeta.size > 0:
        sdy = np.empty((n_rb, n_cols), x.dtype)
        sdxc = np.empty((n_rb, n_cols), x.dtype)
        if x.size * 2 * x.itemsize > SERIAL_MAX_BYTES:
            _grad_sums_parallel(dy, x, running_mean, sdy, sdxc, n_rb, n_cb)
        else:
            for task in range(n_rb * n_cb):
                _grad_sums_task(dy, x, running_mean, sdy, sdxc, task, n_cb)
        sum_dy = np.empty(n_cols, x.dtype)
        sum_dxc = np.empty(n_cols, x.dtype)
        _add_partials(sdy, sum_dy, False)
        _add_partials(sdxc, sum_dxc, False)
        if dgamma.size > 0:
            for j in range(n_cols):
                g = sum_dxc[j] * rstd[j]            # sum dy * xhat
                dgamma[j] = dgamma[j] + g if accumulate else g
        if dbeta.size > 0:
            for j in range(n_cols):
                dbeta[j] = dbeta[j] + sum_dy[j] if accumulate else sum_dy[j]
    # dx = (dy - 0) * a: the affine pass with a zero centre, exact (dy - 0 is dy, signed
    # zeros and NaN included), parallel over row blocks and vectorised in place too
    _affine(dy, np.zeros(n_cols, x.dtype), a, np.empty(0, x.dtype), dx)
    return dx
