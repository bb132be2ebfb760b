"""Embedding lookup and its gradient on the GPU: the twins of :mod:`fastnn.kernels.embedding`.

Same operations, signatures and semantics (``padding_idx = -1``: none; without
``accumulate`` rows no index uses are zeroed, with it they are not touched).

``embedding_forward`` is element-wise: a grid-stride loop over ``out``, consecutive
threads reading consecutive columns of a table row (coalesced).  An index outside
``[0, V)`` (possible only for device arrays passed in directly, which the API does not
scan) yields a row of NaN instead of reading out of bounds, so the loss reports it.

``embedding_backward`` is deterministic and uses no atomics: thread ``(j, b)`` owns column
``j`` of a fixed block ``b`` of table rows and walks all ``N`` indices in order, adding
``dout[n, j]`` to ``dweight[indices[n], j]`` when that row is in its block.  Each element
of ``dweight`` is thus summed by one thread in ascending ``n``: the same additions in the
same order as the CPU kernel and ``np.add.at``, and the same bits run to run.  A warp
holds 32 adjacent columns of one row block, so its branch is uniform and its reads of
``dout`` and ``dweight`` are coalesced; every thread reads all ``N`` indices (the warp
reads each once, a broadcast), so the work is ``O(blocks * D * N)`` index reads: the
row blocks are sized to give about :data:`TARGET_THREADS` threads, enough to fill a GPU,
and no more.
"""
import math

import numba
import numpy as np
from numba import cuda

from ._common import THREADS, grid_1d, jit_family, ptx_entries

__all__ = ["embedding_forward", "embedding_backward"]

#: Columns per block of the backward (one warp wide: coalesced row segments).
COLUMNS = 32
#: Row blocks per thread block of the backward (``COLUMNS * ROW_BLOCKS`` threads).
ROW_BLOCKS = 4
#: Threads the backward aims for (columns times row blocks), at most one row per block.
TARGET_THREADS = 32768


def _make_kernels(dtype):
    zero = dtype(0)
    nan = dtype(math.nan)

    def embedding_forward_kernel(weight, indices, out):
        n_table, width = weight.shape
        for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            n = k // width
            j = k - n * width
            v = indices[n]
            out[n, j] = weight[v, j] if 0 <= v < n_table else nan

    def embedding_backward_kernel(dout, indices, dweight, rows_per_block, accumulate,
                                  padding_idx):
        n_table, width = dweight.shape
        j = cuda.blockIdx.x * COLUMNS + cuda.threadIdx.x
        v0 = (cuda.blockIdx.y * ROW_BLOCKS + cuda.threadIdx.y) * rows_per_block
        v1 = min(v0 + rows_per_block, n_table)
        if j >= width or v0 >= n_table:
            return
        if not accumulate:
            for v in range(v0, v1):
                dweight[v, j] = zero
        for n in range(indices.size):
            v = indices[n]
            if v0 <= v < v1 and v != padding_idx:
                dweight[v, j] += dout[n, j]

    return jit_family((embedding_forward_kernel, embedding_backward_kernel), dtype)


#: numpy dtype name -> {name: kernel}.
_KERNELS = {str(dt): _make_kernels(dt) for dt in (numba.float32, numba.float64)}

_SIGNATURES = {
    "embedding_forward": "void({t}[:, ::1], int64[::1], {t}[:, ::1])",
    "embedding_backward": "void({t}[:, ::1], int64[::1], {t}[:, ::1], int64, boolean, int64)",
}
PTX_SIGNATURES = ptx_entries(_KERNELS, _SIGNATURES)


def embedding_forward(weight, indices, out):
    """Embedding lookup (:func:`fastnn.kernels.embedding.embedding_forward`):
    ``out[n, :] = weight[indices[n], :]``.

    weight : (V, D) device array; indices : (N,) int64 device array; out : (N, D),
    written (a row of NaN for an index outside ``[0, V)``).  Returns ``out``.
    """
    if out.size:
        _KERNELS[str(out.dtype)]["embedding_forward"][grid_1d(out.size), THREADS](
            weight, indices, out)
    return out


def _row_blocks(n_table, width):
    """(rows per block, number of blocks): about :data:`TARGET_THREADS` threads."""
    column_groups = (width + COLUMNS - 1) // COLUMNS
    wanted = max(1, min(n_table, TARGET_THREADS // (column_groups * COLUMNS)))
    rows = (n_table + wanted - 1) // wanted
    return rows, (n_table + rows - 1) // rows


def embedding_backward(dout, indices, dweight, accumulate=False, padding_idx=-1):
    """Gradient of :func:`embedding_forward` with respect to the table
    (:func:`fastnn.kernels.embedding.embedding_backward`): ``dweight[v] (+)= sum_{n:
    indices[n] = v} dout[n]`` in ascending ``n``; rows no index uses are zeroed (not
    touched with ``accumulate``); the ``padding_idx`` row (``-1``: none) gets no
    gradient.  Indices outside ``[0, V)`` are ignored.  Returns ``dweight``."""
    n_table, width = dweight.shape
    if n_table and width:
        rows, blocks = _row_blocks(n_table, width)
        grid = ((width + COLUMNS - 1) // COLUMNS, (blocks + ROW_BLOCKS - 1) // ROW_BLOCKS)
        _KERNELS[str(dweight.dtype)]["embedding_backward"][grid, (COLUMNS, ROW_BLOCKS)](
            dout, indices, dweight, np.int64(rows), bool(accumulate), np.int64(padding_idx))
    return dweight
