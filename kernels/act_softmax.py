"""Row-wise softmax and its Jacobian-vector product, in blocks of rows."""
from numba import prange

from . import vmath
from ._act_common import (CHUNK_CHEAP, CHUNK_TRANSCENDENTAL, SERIAL_MAX_BYTES,
                          SERIAL_MAX_TRANSCENDENTAL, _REDUCE_FLAGS)
from ._jit import kernel, parallel_kernel
from .simd_intrinsics import maxnum


# --------------------------------------------------------------------------- softmax (rows)
@kernel(fastmath=_REDUCE_FLAGS)
def _softmax_rows(x, out):
    """Softmax of a block of rows in three passes, so that exp vectorises even for rows
    shorter than a vector: (1) ``out = x - max(row)`` per row, (2) ``out = exp(out)`` over
    the whole block, (3) each row divided by its sum."""
    n_rows, n_cols = x.shape
    one = x.dtype.type(1)
    for i in range(n_rows):
        xi = x[i]
        oi = out[i]
        m = xi[0]
        for j in range(1, n_cols):
            m = maxnum(m, xi[j])      # ignores NaN; a NaN element still makes the sum NaN
        if xi.ctypes.data == oi.ctypes.data:     # in place: one name, so LLVM vectorises
            for j in range(n_cols):
                oi[j] -= m
        else:
            for j in range(n_cols):
                oi[j] = xi[j] - m
    of = out.reshape(out.size)
    for k in range(of.size):
        of[k] = vmath.exp(of[k])
    for i in range(n_rows):
        oi = out[i]
        s = x.dtype.type(0)
        for j in range(n_cols):
            s += oi[j]
        inv = one / s
        for j in range(n_cols):
            oi[j] *= inv


@parallel_kernel
def softmax_forward(x, out):
    """Row-wise softmax: ``out[i] = exp(x[i] - max x[i]) / sum_j exp(x[i, j] - max x[i])``.

    Subtracting the row maximum makes every exponent <= 0, so rows of logits of any size
    (e.g. ±1000) give finite probabilities that sum to 1.  A NaN makes its row NaN.
    """
    n_rows, n_cols = x.shape
    if x.size <= SERIAL_MAX_TRANSCENDENTAL:
        _softmax_rows(x, out)
    else:
        step = max(1, CHUNK_TRANSCENDENTAL // n_cols)     # rows per task
        for t in prange((n_rows + step - 1) // step):
            lo = t * step
            hi = min(lo + step, n_rows)
            _softmax_rows(x[lo:hi], out[lo:hi])
    return out


@kernel(fastmath=_REDUCE_FLAGS)
def _softmax_backward_rows(dy, y, out):
    n_rows, n_cols = y.shape
    for i in range(n_rows):
        dyi = dy[i]
        yi = y[i]
        oi = out[i]
        dot = y.dtype.type(0)
        for j in range(n_cols):
            dot += dyi[j] * yi[j]
        for j in range(n_cols):
            oi[j] = yi[j] * (dyi[j] - dot)


@parallel_kernel
def softmax_backward(dy, x, y, out):
    """Jacobian-vector product of the row softmax: ``out = y * (dy - sum_j(dy * y))`` per row."""
    n_rows, n_cols = y.shape
    if y.size * 3 * y.itemsize <= SERIAL_MAX_BYTES:
        _softmax_backward_rows(dy, y, out)
    else:
        step = max(1, CHUNK_CHEAP // n_cols)
        for t in prange((n_rows + step - 1) // step):
            lo = t * step
            hi = min(lo + step, n_rows)
            _softmax_backward_rows(dy[lo:hi], y[lo:hi], out[lo:hi])
    return out
