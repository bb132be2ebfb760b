"""Per-feature bias: broadcast-add over the batch, and its gradient (column sums).

Both are memory-bound: like the cheap activations (see :mod:`.activations`) they run
serially while their operands span at most :data:`SERIAL_MAX_BYTES`, since waking Numba's
thread pool costs more than a second core saves on small layers.
"""
import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel

#: Serial while the array operands together span at most 512 KiB (half the 1 MiB L2).
SERIAL_MAX_BYTES = 1 << 19
#: Elements per task of the parallel bias_add (whole rows).
CHUNK = 16384
# Columns handled by one task of the bias gradient: wide enough for a vector loop over a
# contiguous row segment, narrow enough that a layer of 256+ units splits across threads.
_COLUMN_BLOCK = 64


@kernel
def _bias_add_rows(x, bias, out):
    n_rows, n_cols = x.shape
    for i in range(n_rows):
        xi = x[i]
        oi = out[i]
        if xi.ctypes.data == oi.ctypes.data:     # in place: one name, so LLVM vectorises
            for j in range(n_cols):
                oi[j] += bias[j]
        else:
            for j in range(n_cols):
                oi[j] = xi[j] + bias[j]


@parallel_kernel
def bias_add(x, bias, out):
    """``out[i, j] = x[i, j] + bias[j]``.

    x, out : (batch, features); bias : (features,).  ``out`` may be ``x`` (in place).
    """
    n_rows, n_cols = x.shape
    if x.size * 2 * x.itemsize <= SERIAL_MAX_BYTES:
        _bias_add_rows(x, bias, out)
    else:
        step = max(1, CHUNK // n_cols)                      # rows per task
        for t in prange((n_rows + step - 1) // step):
            lo = t * step
            hi = min(lo + step, n_rows)
            _bias_add_rows(x[lo:hi], bias, out[lo:hi])
    return out


@kernel
def _bias_grad_columns(dy, out, start, stop, accumulate):
    """``out[start:stop] (+)= dy[:, start:stop].sum(axis=0)``, each column in row order.
    ``start``/``stop`` are unsigned: with signed indices Numba adds negative-index
    wrap-around code that can stop LLVM from vectorising the loop."""
    n_rows = dy.shape[0]
    if not accumulate:
        for j in range(start, stop):
            out[j] = dy.dtype.type(0)
    for i in range(n_rows):
        row = dy[i]
        for j in range(start, stop):
            out[j] += row[j]


@parallel_kernel
def bias_grad(dy, out, accumulate=False):
    """Gradient of the bias: ``out[j] (+)= sum_i dy[i, j]``.

    dy : (batch, features); out : (features,).  With ``accumulate`` the sums are added to
    ``out`` (gradient accumulation), otherwise they overwrite it.  Each column is summed
    in row order by one thread, so the result does not depend on the thread count.
    """
    n_cols = dy.shape[1]
    if dy.size * dy.itemsize <= SERIAL_MAX_BYTES:
        _bias_grad_columns(dy, out, np.uint64(0), np.uint64(n_cols), accumulate)
    else:
        n_blocks = (n_cols + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK
        for blk in prange(n_blocks):
            start = blk * _COLUMN_BLOCK
            stop = min(start + _COLUMN_BLOCK, n_cols)
            _bias_grad_columns(dy, out, np.uint64(start), np.uint64(stop), accumulate)
    return out
