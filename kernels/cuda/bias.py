"""Per-feature bias on the GPU: broadcast-add over the batch, and its gradient.

``bias_add`` is element-wise: a grid-stride loop over the flat ``(batch, features)``
array, the feature index being the remainder by the row length.

``bias_grad`` (column sums of ``dy``) is a block-level tree reduction, deterministic and
without atomics.  A block of ``COLUMNS x ROWS`` (32 x 8) threads owns 32 adjacent columns:
thread ``(tx, ty)`` sums the rows ``ty, ty + ROWS, ty + 2 ROWS, ...`` of column
``tx`` (a warp reads 32 consecutive elements of a row: coalesced), parks its partial sum in
shared memory, and the ``ROWS`` partials of each column are added pairwise in
``log2(ROWS)`` steps.  The order of the additions depends only on the shape, so the result
is the same run to run.
"""
import numba
from numba import cuda

from ._common import THREADS, grid_1d, signatures

#: Columns per block of the bias gradient (one warp wide: coalesced row segments).
COLUMNS = 32
#: Threads per column of the bias gradient (a power of two: tree reduction).
ROWS = 8


@cuda.jit
def _bias_add_kernel(x, bias, out):
    n_cols = x.shape[1]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for k in range(start, x.size, stride):
        i = k // n_cols
        j = k - i * n_cols
        out[i, j] = x[i, j] + bias[j]


def _make_bias_grad_kernel(dtype):
    """Column sums of ``dy`` for one Numba float type (its shared buffer and zero)."""
    zero = dtype(0)

    def bias_grad_kernel(dy, out, accumulate):
        n_rows, n_cols = dy.shape
        partial = cuda.shared.array((ROWS, COLUMNS), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        j = cuda.blockIdx.x * COLUMNS + tx
        total = zero
        if j < n_cols:
            for i in range(ty, n_rows, ROWS):
                total += dy[i, j]
        partial[ty, tx] = total
        cuda.syncthreads()
        step = ROWS // 2
        while step > 0:
            if ty < step:
                partial[ty, tx] += partial[ty + step, tx]
            cuda.syncthreads()
            step //= 2
        if ty == 0 and j < n_cols:
            if accumulate:
                out[j] += partial[0, tx]
            else:
                out[j] = partial[0, tx]

    bias_grad_kernel.__name__ = bias_grad_kernel.__qualname__ = f"bias_grad_{dtype}"
    return cuda.jit(bias_grad_kernel)


#: numpy dtype name -> bias gradient kernel.
_BIAS_GRAD = {str(dt): _make_bias_grad_kernel(dt) for dt in (numba.float32, numba.float64)}

PTX_SIGNATURES = (
    [("bias_add", _bias_add_kernel.py_func, sig)
     for sig in signatures("void({t}[:, ::1], {t}[::1], {t}[:, ::1])")]
    + [(f"bias_grad_{dt}", _BIAS_GRAD[dt].py_func, sig)
       for dt, sig in zip(("float32", "float64"),
                          signatures("void({t}[:, ::1], {t}[::1], boolean)"))]
)


def bias_add(x, bias, out):
    """``out[i, j] = x[i, j] + bias[j]``.

    x, out : (batch, features); bias : (features,).  ``out`` may be ``x`` (in place).
    """
    assert x.shape == out.shape and bias.shape == (x.shape[1],)
    if x.size:
        _bias_add_kernel[grid_1d(x.size), THREADS](x, bias, out)
    return out


def bias_grad(dy, out, accumulate=False):
    """Gradient of the bias: ``out[j] (+)= sum_i dy[i, j]``.

    dy : (batch, features); out : (features,).  With ``accumulate`` the sums are added to
    ``out``, otherwise they overwrite it (zeros for an empty batch).
    """
    n_cols = dy.shape[1]
    assert out.shape == (n_cols,)
    if n_cols:
        blocks = (n_cols + COLUMNS - 1) // COLUMNS
        _BIAS_GRAD[str(dy.dtype)][blocks, (COLUMNS, ROWS)](dy, out, bool(accumulate))
    return out
