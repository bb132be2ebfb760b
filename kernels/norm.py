"""Normalisation layers' kernels: LayerNorm (statistics per row, :mod:`.layer_norm`) and
BatchNorm (statistics per column, :mod:`.batch_norm`), forward and backward, fused; this
module holds what they share: the conventions below, the row statistics and the block
sums.

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
from ._jit import kernel

# Reductions reorder their additions to vectorise and may fuse multiply-adds (rounding
# only).  The loops that write outputs use no fast-math flag: LLVM vectorises them anyway,
# and without contraction the vector body, its scalar remainder and the scalar fallback
# taken when an output aliases an input (in place) round identically, so in-place and
# out-of-place calls give the same bits.
_REDUCE_FLAGS = {"contract", "reassoc"}

#: Elements per task of the element-wise passes (whole rows; as in :mod:`.bias`).
CHUNK = 16384
#: Run serially while the array operands span at most 512 KiB (waking the pool costs more).
SERIAL_MAX_BYTES = 1 << 19


@kernel
def _rows_per_task(n_cols):
    """Whole rows per task of an element-wise pass: about :data:`CHUNK` elements."""
    return max(1, CHUNK // max(1, n_cols))


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

