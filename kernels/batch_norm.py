"""BatchNorm's kernels: statistics per column, training and evaluation mode, forward and
backward (formulas, conventions and the split of the work in :mod:`.norm`)."""
import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel
from .norm import _REDUCE_FLAGS, SERIAL_MAX_BYTES, _add_partials, _rows_per_task

#: Rows and columns per task of BatchNorm's column statistics: a 64 x 512 float32 block
#: is 128 KiB, re-read from L2 by the second (centred) pass.
BN_ROW_BLOCK = 64
BN_COLUMN_BLOCK = 512


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
        # np.int64(0), not 0: a literal would compile the rows function a second time
        _affine_rows(x, center, scale, beta, y, np.int64(0), n_rows)
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


@kernel
def _grad_sums(dy, x, center):
    """``(sum_i dy_ij, sum_i dy_ij (x_ij - center_j))`` per column, in fixed blocks of
    :data:`BN_ROW_BLOCK` rows added in block order: identical on any thread count."""
    n_rows, n_cols = x.shape
    n_rb = (n_rows + BN_ROW_BLOCK - 1) // BN_ROW_BLOCK
    n_cb = (n_cols + BN_COLUMN_BLOCK - 1) // BN_COLUMN_BLOCK
    sdy = np.empty((n_rb, n_cols), x.dtype)
    sdxc = np.empty((n_rb, n_cols), x.dtype)
    if x.size * 2 * x.itemsize > SERIAL_MAX_BYTES:
        _grad_sums_parallel(dy, x, center, sdy, sdxc, n_rb, n_cb)
    else:
        for task in range(n_rb * n_cb):
            _grad_sums_task(dy, x, center, sdy, sdxc, task, n_cb)
    sum_dy = np.empty(n_cols, x.dtype)
    sum_dxc = np.empty(n_cols, x.dtype)
    _add_partials(sdy, sum_dy, False)
    _add_partials(sdxc, sum_dxc, False)
    return sum_dy, sum_dxc


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
        _batch_norm_dx_rows(dy, x, mean, a, mdy, c, dx, np.int64(0), n_rows)
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
    # dbeta and (times rstd, below) dgamma of this batch
    sum_dy, sum_dxh = _grad_sums(dy, x, mean)
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
        sum_dy, sum_dxc = _grad_sums(dy, x, running_mean)
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
