"""Shared-memory tiled matrix products in the three layouts of dense-layer training.

``matmul`` (``a @ b``, forward), ``matmul_nt`` (``a @ b.T``, input gradient) and
``matmul_tn`` (``a.T @ b``, weight gradient) are one kernel body, specialised by a factory
for each layout and dtype (the layout flags and the dtype are compile-time constants, so
each specialisation has no layout branches left).

Tiling.  A block of ``SIDE x SIDE`` (16 x 16) threads computes a ``TILE x TILE`` (64 x 64)
tile of ``out``; thread ``(ty, tx)`` owns the ``REG x REG`` (4 x 4) outputs at rows
``ty + SIDE*i`` and columns ``tx + SIDE*j``.  The strided ownership keeps both the reads of
the shared tiles (a warp reads 2 distinct ``a`` values and 16 consecutive ``b`` values) and
the final writes (16 consecutive columns) free of bank conflicts and coalesced.  The
reduction dimension is walked in steps of ``DEPTH`` (16): the block stages a
``DEPTH x TILE`` slice of each operand in shared memory, stored k-major (``a_tile[k, m]``,
``b_tile[k, n]``) whatever the layout in global memory.  Each operand is loaded along its
contiguous dimension so the global reads are coalesced; when that is ``k`` the store into
shared memory is a transpose, and the rows are padded by one element so that it does not
hit the same bank 16 times.  Elements beyond the edges of ``a``/``b`` load as zeros, so
shapes need not be multiples of the tile, and only in-range outputs are written.
"""
import numba
from numba import cuda

from ._common import signatures

#: Threads along each side of a block.
SIDE = 16
#: Outputs along each side of a block's tile of ``out``.
TILE = 64
#: Outputs along each side of one thread's register block (TILE = SIDE * REG).
REG = TILE // SIDE
#: Depth (along the reduction dimension) of the shared-memory tiles.
DEPTH = 16
#: Elements of one operand tile each thread loads per step: the block reads the
#: ``DEPTH x TILE`` tile in _LOADS passes of SIDE * SIDE elements, each pass covering
#: _K_PER_PASS values of k when reading along m or n, or _MN_PER_PASS rows (of m or n)
#: when reading along k.
_LOADS = TILE * DEPTH // (SIDE * SIDE)
_K_PER_PASS = SIDE * SIDE // TILE
_MN_PER_PASS = SIDE * SIDE // DEPTH
assert TILE == SIDE * REG and _K_PER_PASS * TILE == _MN_PER_PASS * DEPTH == SIDE * SIDE
# Shared rows are TILE + 1 long: a transposing store then walks the banks with stride 65.
_PADDED = TILE + 1


def _make_kernel(a_transposed, b_transposed, dtype):
    """The kernel for ``out (+)= op(a) @ op(b)`` where ``op`` transposes when the flag is
    set; ``dtype`` is a Numba float type."""
    zero = dtype(0)

    def matmul_kernel(a, b, out, accumulate):
        n_rows, n_cols = out.shape
        depth = a.shape[0] if a_transposed else a.shape[1]
        a_tile = cuda.shared.array((DEPTH, _PADDED), dtype)    # a_tile[k, m]
        b_tile = cuda.shared.array((DEPTH, _PADDED), dtype)    # b_tile[k, n]
        acc = cuda.local.array((REG, REG), dtype)
        a_frag = cuda.local.array(REG, dtype)
        b_frag = cuda.local.array(REG, dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * SIDE + tx
        row0 = cuda.blockIdx.y * TILE
        col0 = cuda.blockIdx.x * TILE
        for i in range(REG):
            for j in range(REG):
                acc[i, j] = zero

        for k0 in range(0, depth, DEPTH):
            for p in range(_LOADS):
                if a_transposed:            # a is (depth, n_rows): contiguous along m
                    m = tid % TILE
                    k = tid // TILE + p * _K_PER_PASS
                    gm = row0 + m
                    gk = k0 + k
                    a_tile[k, m] = a[gk, gm] if gk < depth and gm < n_rows else zero
                else:                       # a is (n_rows, depth): contiguous along k
                    k = tid % DEPTH
                    m = tid // DEPTH + p * _MN_PER_PASS
                    gm = row0 + m
                    gk = k0 + k
                    a_tile[k, m] = a[gm, gk] if gk < depth and gm < n_rows else zero
                if b_transposed:            # b is (n_cols, depth): contiguous along k
                    k = tid % DEPTH
                    n = tid // DEPTH + p * _MN_PER_PASS
                    gn = col0 + n
                    gk = k0 + k
                    b_tile[k, n] = b[gn, gk] if gk < depth and gn < n_cols else zero
                else:                       # b is (depth, n_cols): contiguous along n
                    n = tid % TILE
                    k = tid // TILE + p * _K_PER_PASS
                    gn = col0 + n
                    gk = k0 + k
                    b_tile[k, n] = b[gk, gn] if gk < depth and gn < n_cols else zero
            cuda.syncthreads()
            for k in range(DEPTH):
                for i in range(REG):
                    a_frag[i] = a_tile[k, ty + SIDE * i]
                    b_frag[i] = b_tile[k, tx + SIDE * i]
                for i in range(REG):
                    for j in range(REG):
                        acc[i, j] += a_frag[i] * b_frag[j]
            cuda.syncthreads()          # the tiles are overwritten by the next step

        for i in range(REG):
            r = row0 + ty + SIDE * i
            for j in range(REG):
                c = col0 + tx + SIDE * j
                if r < n_rows and c < n_cols:
                    if accumulate:
                        out[r, c] += acc[i, j]
                    else:
                        out[r, c] = acc[i, j]

    layout = ("t" if a_transposed else "n") + ("t" if b_transposed else "n")
    matmul_kernel.__name__ = f"matmul_{layout}_{dtype}"
    matmul_kernel.__qualname__ = matmul_kernel.__name__
    return cuda.jit(matmul_kernel)


#: (a_transposed, b_transposed) -> layout suffix of the public functions.
_LAYOUTS = {(False, False): "nn", (False, True): "nt", (True, False): "tn"}
_DTYPES = (numba.float32, numba.float64)
#: (layout, numpy dtype name) -> kernel.
_KERNELS = {(name, str(dt)): _make_kernel(at, bt, dt)
            for (at, bt), name in _LAYOUTS.items() for dt in _DTYPES}

PTX_SIGNATURES = [
    (f"matmul_{layout}_{dt}", _KERNELS[layout, dt].py_func, sig)
    for layout in _LAYOUTS.values()
    for dt, sig in zip(("float32", "float64"),
                       signatures("void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1], boolean)"))
]


def _launch(layout, a, b, out, accumulate):
    n_rows, n_cols = out.shape
    if n_rows and n_cols:
        grid = ((n_cols + TILE - 1) // TILE, (n_rows + TILE - 1) // TILE)
        _KERNELS[layout, str(out.dtype)][grid, (SIDE, SIDE)](a, b, out, bool(accumulate))
    return out


def matmul(a, b, out, accumulate=False):
    """``out (+)= a @ b``.

    a : (m, k); b : (k, n); out : (m, n), all C-contiguous device arrays of one dtype.
    """
    assert a.shape[1] == b.shape[0] and out.shape == (a.shape[0], b.shape[1])
    return _launch("nn", a, b, out, accumulate)


def matmul_nt(a, b, out, accumulate=False):
    """``out (+)= a @ b.T``.

    a : (m, k); b : (n, k); out : (m, n).
    """
    assert a.shape[1] == b.shape[1] and out.shape == (a.shape[0], b.shape[0])
    return _launch("nt", a, b, out, accumulate)


def matmul_tn(a, b, out, accumulate=False):
    """``out (+)= a.T @ b``.

    a : (k, m); b : (k, n); out : (m, n).
    """
    assert a.shape[0] == b.shape[0] and out.shape == (a.shape[1], b.shape[1])
    return _launch("tn", a, b, out, accumulate)
