"""Bias + activation, and the fused activation-derivative / bias-gradient pass, on the GPU.

The twins of :func:`..epilogue.bias_act_rows` (here ``bias_act``) and
:func:`..dense.act_bias_grad`.  Activations are the integer codes of
:data:`..epilogue.EPILOGUE_CODES` with two parameters ``p0, p1`` in the registry's order;
the formulas are the device functions of :mod:`.activations` (one definition for the
element-wise kernels and these).  The GEMMs are in :mod:`.matmul`.

``bias_act``: a 2-D grid.  A block is ``bx x by`` threads (``bx`` a power of two about the
row width, ``bx * by = THREADS``): threads along x take consecutive columns, so the reads
and writes of a warp are contiguous, and each thread keeps its column's bias in a register
while it strides down the rows (no per-element ``index % n_cols``).

``act_bias_grad``: ``dz = dy * f'(z)``, written through the output ``y`` (see
:data:`..dense.FROM_OUTPUT`), and ``db (+)= dz.sum(axis=0)`` in one pass over ``dy`` and
``y``.  A block owns a strip of ``GRAD_COLUMNS`` (32) columns and has ``GRAD_ROWS`` (8)
threads per column: thread ``(tx, ty)`` computes ``dz`` for rows ``ty, ty + 8, ...`` of
its column and sums them in a register; the 8 partial sums of each column are then added
by a tree reduction in shared memory.  A warp covers 32 consecutive columns of one row
(coalesced), and the shared rows are indexed by ``tx`` (no bank conflicts).  Each column's
sum is taken in a fixed order, so ``db`` is deterministic (no atomics) and does not
depend on the grid size.
"""
import numba
from numba import cuda

from ._common import MAX_BLOCKS, THREADS, signatures
from .activations import device_functions

__all__ = ["bias_act", "act_bias_grad"]

#: Columns of a block of ``act_bias_grad`` (one warp wide).
GRAD_COLUMNS = 32
#: Threads per column of a block of ``act_bias_grad`` (a power of two).
GRAD_ROWS = 8


def _make_kernels(dtype):
    dev = device_functions(dtype)
    act_forward = dev.forward
    grad_from_output = dev.backward_from_output
    zero = dtype(0)

    def bias_act_kernel(z, bias, out, code, p0, p1):
        n_rows, n_cols = z.shape
        col = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if col < n_cols:
            has_bias = bias.size > 0
            b = bias[col] if has_bias else zero
            for r in range(cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y, n_rows,
                           cuda.gridDim.y * cuda.blockDim.y):
                # No "+ 0" without a bias: -0.0 + 0.0 would turn a -0 into +0.
                v = z[r, col] + b if has_bias else z[r, col]
                out[r, col] = act_forward(code, v, p0, p1)

    def act_bias_grad_kernel(dy, y, dz, db, code, p0, p1, accumulate):
        n_rows, n_cols = dy.shape
        partial = cuda.shared.array((GRAD_ROWS, GRAD_COLUMNS), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        has_bias = db.size > 0
        # Grid-stride over the column strips; the bounds are the same for the whole
        # block, so every thread reaches the barriers.
        for col0 in range(cuda.blockIdx.x * GRAD_COLUMNS, n_cols,
                          cuda.gridDim.x * GRAD_COLUMNS):
            col = col0 + tx
            s = zero
            if col < n_cols:
                for r in range(ty, n_rows, GRAD_ROWS):
                    g = grad_from_output(code, dy[r, col], y[r, col], p0, p1)
                    dz[r, col] = g
                    s += g
            if has_bias:
                partial[ty, tx] = s
                cuda.syncthreads()
                half = GRAD_ROWS // 2
                while half > 0:
                    if ty < half:
                        partial[ty, tx] += partial[ty + half, tx]
                    cuda.syncthreads()
                    half //= 2
                if ty == 0 and col < n_cols:
                    db[col] = db[col] + partial[0, tx] if accumulate else partial[0, tx]
                cuda.syncthreads()              # partial is refilled for the next strip

    name = str(dtype)
    kernels = {}
    for fn in (bias_act_kernel, act_bias_grad_kernel):
        base = fn.__name__
        fn.__name__ = fn.__qualname__ = f"{base}_{name}"
        kernels[base] = cuda.jit(fn)
    return kernels


_KERNELS = {str(dt): _make_kernels(dt) for dt in (numba.float32, numba.float64)}

_SIGNATURES = {
    "bias_act_kernel": "void({t}[:, ::1], {t}[::1], {t}[:, ::1], int64, {t}, {t})",
    "act_bias_grad_kernel": ("void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}[::1], int64, "
                             "{t}, {t}, boolean)"),
}
PTX_SIGNATURES = [
    (f"{kernel}_{dt}", _KERNELS[dt][kernel].py_func, sig)
    for kernel, template in _SIGNATURES.items()
    for dt, sig in zip(("float32", "float64"), signatures(template))
]


def bias_act(z, bias, out, act, p0=0.0, p1=0.0):
    """``out = f(z + bias)`` element-wise, ``bias`` broadcast over the rows.

    Parameters
    ----------
    z : device array, shape (M, N), C-contiguous, float32 or float64
    bias : device array, shape (N,), or (0,) for no bias, same dtype
    out : device array, shape (M, N), same dtype; may be ``z`` (in place)
    act : int
        A code of :data:`EPILOGUE_CODES`.
    p0, p1 : float
        The activation's parameters (sigmoid ``beta``; leaky_relu/elu ``alpha``;
        piecewise_linear ``x_min, x_max``; ignored by the others).

    Returns
    -------
    out : device array, shape (M, N)
        The same object that was passed in.
    """
    n_rows, n_cols = z.shape
    assert out.shape == z.shape and bias.size in (0, n_cols)
    if n_rows and n_cols:
        bx = 1
        while bx < min(n_cols, THREADS):
            bx *= 2
        by = THREADS // bx
        grid = ((n_cols + bx - 1) // bx, min(MAX_BLOCKS, (n_rows + by - 1) // by))
        t = z.dtype.type
        _KERNELS[str(z.dtype)]["bias_act_kernel"][grid, (bx, by)](
            z, bias, out, int(act), t(p0), t(p1))
    return out


def act_bias_grad(dy, y, dz, db, act, p0, p1, accumulate):
    """``dz = dy * f'(z)`` (computed from the output ``y = f(z)``) and
    ``db (+)= dz.sum(axis=0)`` in one pass.

    Parameters
    ----------
    dy, y, dz : device arrays, shape (M, N), C-contiguous, one dtype; ``dz`` may be ``dy``.
    db : device array, shape (N,), or (0,) when the layer has no bias.
    act : int
        A code of :data:`EPILOGUE_CODES` in :data:`FROM_OUTPUT` (any other code gives
        ``dz = 0``, as in the CPU kernel).
    p0, p1 : float
        The activation's parameters (as in :func:`bias_act`).
    accumulate : bool
        Add to ``db`` instead of overwriting it.

    Returns
    -------
    dz : device array, shape (M, N)
    """
    n_rows, n_cols = dy.shape
    assert y.shape == dy.shape and dz.shape == dy.shape and db.size in (0, n_cols)
    if n_cols:
        blocks = min(MAX_BLOCKS, (n_cols + GRAD_COLUMNS - 1) // GRAD_COLUMNS)
        t = dy.dtype.type
        _KERNELS[str(dy.dtype)]["act_bias_grad_kernel"][blocks, (GRAD_COLUMNS, GRAD_ROWS)](
            dy, y, dz, db, int(act), t(p0), t(p1), bool(accumulate))
    return dz
