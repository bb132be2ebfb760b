"""Per-feature bias: broadcast-add over the batch, and its gradient (column sums)."""
from numba import prange

from ._jit import parallel_kernel

# Columns handled by one task of the bias gradient: wide enough for a vector loop over a
# contiguous row segment, narrow enough that a layer of 256+ units splits across threads.
_COLUMN_BLOCK = 64


@parallel_kernel
def bias_add(x, bias, out):
    """``out[i, j] = x[i, j] + bias[j]``.

    x, out : (batch, features); bias : (features,).  ``out`` may be ``x`` (in place).
    """
    n_rows, n_cols = x.shape
    for i in prange(n_rows):
        for j in range(n_cols):
            out[i, j] = x[i, j] + bias[j]
    return out


@parallel_kernel
def bias_grad(dy, out, accumulate=False):
    """Gradient of the bias: ``out[j] (+)= sum_i dy[i, j]``.

    dy : (batch, features); out : (features,).  With ``accumulate`` the sums are added to
    ``out`` (gradient accumulation), otherwise they overwrite it.  Each column is summed
    in row order by one thread, so the result does not depend on the thread count.
    """
    n_rows, n_cols = dy.shape
    n_blocks = (n_cols + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK
    for blk in prange(n_blocks):
        start = blk * _COLUMN_BLOCK
        stop = min(start + _COLUMN_BLOCK, n_cols)
        if not accumulate:
            for j in range(start, stop):
                out[j] = dy.dtype.type(0)
        for i in range(n_rows):
            for j in range(start, stop):
                out[j] += dy[i, j]
    return out
