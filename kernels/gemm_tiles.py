"""The GEMM's micro-kernels and packing routines (the task that drives them is in
:mod:`.gemm_task`, the dispatch and the public functions in :mod:`.matmul`, whose
docstring explains the design).

Every micro-kernel keeps a block of the output in registers as a :class:`.simd_tiles.Tile`
while it runs along ``k``; the block's shape comes from :data:`.target.TILES` for the
instruction set the kernels are compiled for (AVX-512, AVX2 or the 16-byte portable
path), so each function below is one loop whatever the register file.

Every function works on flat arrays with unsigned 64-bit element offsets and strides,
on a tile or panel the driver chose; they are ``no_cpython_wrapper`` kernels, callable
only from other kernels.
"""
import numpy as np

from ._jit import kernel
from .simd_tiles import (tile_add_load, tile_fma_bcast, tile_fma_bcast_rows, tile_fma_dot,
                         tile_lanes, tile_load_part, tile_prefetch, tile_rows, tile_store,
                         tile_store_part, tile_sums, tile_vectors, tile_zeros)
from .simd_vectors import copy_run, lanes, transpose_block
from .target import TARGET

_U = np.uint64

# Internal kernels are only called from other kernels: no CPython wrapper (saves compile
# time; they cannot be called from Python).
_internal = kernel(no_cpython_wrapper=True)

# The register tiles of this target, as (rows, vectors) (see kernels/target.py).
MR, NRV = TARGET.tiles()["bcast"]
LOW_ROWS = TARGET.tiles()["bcast_low"][0]
NARROW_ROWS, NARROW_VECTORS = TARGET.tiles()["narrow"]
ROWS_ROWS, ROWS_VECTORS = TARGET.tiles()["rows"]
ROW_ROWS, ROW_VECTORS = TARGET.tiles()["row"]
DOT_ROWS, DOT_COLS = TARGET.tiles()["dot"]
DOT_ROW_ROWS, DOT_ROW_COLS = TARGET.tiles()["dot_row"]
# pack_a transposes blocks of at most 8 rows: the first 8 rows of a panel, then the rest.
_MR_LOW = min(MR, 8)
_MR_HIGH = max(MR - 8, 0)
assert MR <= 16


# --------------------------------------------------------------------------- micro-kernels
@_internal
def tile_bcast(kc, ap, a0, b, b0, ldb, c, c0, ldc, load_c):
    """One ``MR x NR`` micro-tile (``NR = NRV * lanes``):
    ``C[r, j] (+)= sum_k A[r, k] * B[k, j]``.

    ``A[r, k] = ap[a0 + k*MR + r]`` (a packed micro-panel), ``B[k, j] = b[b0 + k*ldb + j]``,
    ``C[r, j] = c[c0 + r*ldc + j]``, ``r < MR``, ``j < NR``, ``k < kc``.  Per ``k``: ``NRV``
    vector loads of ``B``, ``MR`` broadcasts of ``A``, ``MR * NRV`` multiply-adds.
    ``load_c``: add to ``C`` (else overwrite it).  The sums start from zero and ``C`` is
    added after the loop (the caller prefetches its lines a tile ahead): the
    multiply-adds never wait for ``C`` to come from memory.
    """
    panel_rows(tile_zeros(c, MR, NRV), kc, ap, a0, b, b0, ldb, c, c0, ldc, load_c)


@_internal
def tile_bcast_low(kc, ap, a0, b, b0, ldb, c, c0, ldc, load_c):
    """:func:`tile_bcast` for the first ``LOW_ROWS`` rows of a packed ``MR``-row panel
    only (a last panel with that few rows)."""
    panel_rows(tile_zeros(c, LOW_ROWS, NRV), kc, ap, a0, b, b0, ldb, c, c0, ldc, load_c)


@_internal
def panel_rows(acc, kc, ap, a0, b, b0, ldb, c, c0, ldc, load_c):
    """The first ``rows(acc)`` rows of a packed ``MR``-row micro-panel times a panel of
    ``B`` into ``C`` (see :func:`tile_bcast`)."""
    mr = _U(MR)
    for k in range(kc):
        acc = tile_fma_bcast(acc, ap, a0 + k * mr, b, b0 + k * ldb)
    if load_c:
        acc = tile_add_load(acc, c, c0, ldc)
    tile_store(c, c0, ldc, acc)


@_internal
def tile_in_place(acc, kc, a, a0, a_rs, a_cs, mr, b, b0, ldb, nv, c, c0, ldc, load_c):
    """``C[r, j] (+)= sum_k A[r, k] * B[k, j]`` for ``r < mr``, ``j < nv``, with the left
    operand read where it is: ``A[r, k] = a[a0 + r*a_rs + k*a_cs]``,
    ``B[k, j] = b[b0 + k*ldb + j]``, ``C[r, j] = c[c0 + r*ldc + j]``.

    ``acc`` is a zero tile whose shape (rows >= mr, ``W`` = vectors*lanes >= nv)
    selects the code: the ``narrow`` tile (outputs of a few columns) or the ``rows`` tile
    (products of a few rows).  All ``W`` columns of each row of ``B`` are read (a caller
    with fewer valid columns passes a zero-padded copy, so the loop needs no masks);
    rows of ``A`` past ``mr`` repeat the last one, and only the ``mr x nv`` block of ``C``
    is read or written.
    """
    if load_c:
        acc = tile_load_part(acc, c, c0, ldc, mr, nv)
    for k in range(kc):
        acc = tile_fma_bcast_rows(acc, a, a0 + k * a_cs, a_rs, mr, b, b0 + k * ldb)
    tile_store_part(c, c0, ldc, acc, mr, nv)


@_internal
def tile_dot(acc, sums, kc, a, a0, lda, mr, b, b0, ldb, nr, c, c0, ldc, load_c):
    """Dot products: ``C[r, s] (+)= sum_k A[r, k] * B[s, k]`` for ``r < mr``, ``s < nr``.

    ``A[r, k] = a[a0 + r*lda + k]``, ``B[s, k] = b[b0 + s*ldb + k]``,
    ``C[r, s] = c[c0 + r*ldc + s]``.  ``acc`` is a zero tile of ``R x S`` (``R >= mr``,
    ``S >= nr``: the ``dot`` or ``dot_row`` shape); ``sums`` a scratch of ``R*S``
    elements.  Each sum runs over ``lanes`` interleaved partial sums (vectors along
    ``k``), added by a fixed tree, then the last ``kc % lanes`` terms in order.  Rows
    past ``mr`` / ``nr`` repeat the last valid one and are not written.
    """
    n = tile_lanes(acc)
    kv = kc // n * n
    for k in range(_U(0), kv, n):
        acc = tile_fma_dot(acc, a, a0 + k, lda, mr, b, b0 + k, ldb, nr)
    tile_sums(acc, sums)
    cols = tile_vectors(acc)
    for r in range(mr):
        ar = a0 + r * lda
        for s in range(nr):
            bs = b0 + s * ldb
            total = sums[r * cols + s]
            for k in range(kv, kc):
                total += a[ar + k] * b[bs + k]
            if load_c:
                total += c[c0 + r * ldc + s]
            c[c0 + r * ldc + s] = total


@_internal
def narrow_tile(like):
    """A zero tile of the ``narrow`` shape, of ``like``'s dtype."""
    return tile_zeros(like, NARROW_ROWS, NARROW_VECTORS)


@_internal
def rows_tile(like):
    """A zero tile of the ``rows`` shape, of ``like``'s dtype."""
    return tile_zeros(like, ROWS_ROWS, ROWS_VECTORS)


@_internal
def row_tile(like):
    """A zero tile of the ``row`` shape (one row of many vectors), of ``like``'s dtype."""
    return tile_zeros(like, ROW_ROWS, ROW_VECTORS)


@_internal
def dot_tile(like):
    """A zero tile of the ``dot`` shape, of ``like``'s dtype."""
    return tile_zeros(like, DOT_ROWS, DOT_COLS)


@_internal
def dot_row_tile(like):
    """A zero tile of the ``dot_row`` shape (one row of dot products)."""
    return tile_zeros(like, DOT_ROW_ROWS, DOT_ROW_COLS)


@_internal
def prefetch_output(c, c0, ldc):
    """Prefetch the lines of the ``MR x NR`` block of ``c`` at ``c0`` (for writing)."""
    tile_prefetch(tile_zeros(c, MR, NRV), c, c0, ldc)


@_internal
def tile_width(acc):
    """Columns of ``C`` a tile covers: ``vectors * lanes``."""
    return tile_vectors(acc) * tile_lanes(acc)


@_internal
def tile_height(acc):
    """Rows of ``C`` a tile covers."""
    return tile_rows(acc)


# --------------------------------------------------------------------------- packing
@_internal
def pack_a(a, a_rs, a_cs, i0, m, pc, kc, ap):
    """Rows ``i0 .. i0+m`` of ``A[:, pc:pc+kc]`` as ``MR``-row micro-panels:
    ``ap[(p*kc + k)*MR + r] = A[i0 + MR*p + r, pc + k]``, zero-padded to whole panels (so
    a ragged last panel needs no special micro-kernel).  ``A`` is row-major
    (``a_cs == 1``) or transposed (``a_rs == 1``)."""
    rows = _U(MR)
    eight = _U(8)
    zero = ap.dtype.type(0)
    for p0 in range(_U(0), m, rows):
        mr = min(rows, m - p0)
        dst = p0 * kc
        if mr < rows:
            for k in range(kc):
                for r in range(mr, rows):
                    ap[dst + k * rows + r] = zero
        if a_cs == _U(1):
            # Row-major A (matmul, matmul_nt): blocks of MR rows x 8 k transposed in
            # registers (at most 8 rows at a time), the ragged rest element by element.
            src = (i0 + p0) * a_rs + pc
            kq = kc // eight * eight if mr == rows else _U(0)
            for k0 in range(_U(0), kq, eight):
                transpose_block(ap, dst + k0 * rows, rows, a, src + k0, a_rs, _MR_LOW, 8)
                if _MR_HIGH > 0:
                    transpose_block(ap, dst + k0 * rows + eight, rows, a,
                                    src + eight * a_rs + k0, a_rs, _MR_HIGH, 8)
            for k in range(kq, kc):
                for r in range(mr):
                    ap[dst + k * rows + r] = a[src + r * a_rs + k]
    if a_cs != _U(1):
        # Transposed A (matmul_tn): each k is a contiguous run of m values, copied to
        # the panels MR at a time (a plain loop of MR stays scalar).
        full = m // rows * rows
        for k in range(kc):
            src = (pc + k) * a_cs + i0
            for p0 in range(_U(0), full, rows):
                copy_run(ap, p0 * kc + k * rows, a, src + p0, MR)
            for r in range(full, m):
                ap[full * kc + k * rows + r - full] = a[src + r]


@_internal
def pack_b(b, b_rs, b_cs, pc, kc, j0, nb, nr, bp):
    """Panels of ``nr`` columns of ``B[pc:pc+kc, j0:j0+nb]``:
    ``bp[p*kc*nr + k*nr + j] = B[pc + k, j0 + p*nr + j]``, zero-padded to whole panels."""
    zero = bp.dtype.type(0)
    for jp in range(_U(0), nb, nr):
        w = min(nr, nb - jp)
        dst = jp * kc
        if w < nr:
            for k in range(kc):
                for j in range(w, nr):
                    bp[dst + k * nr + j] = zero
        if b_cs == _U(1):
            for k in range(kc):
                src = (pc + k) * b_rs + j0 + jp
                row = dst + k * nr
                for j in range(w):
                    bp[row + j] = b[src + j]
        else:
            # Transposed source (matmul_nt): square blocks of 8 x 8 transposed in
            # registers, the ragged edges (w or kc not a multiple of 8) element-wise.
            n = _U(8)
            wq = w // n * n
            kq = kc // n * n
            for jq in range(_U(0), wq, n):
                src = (j0 + jp + jq) * b_cs + pc * b_rs
                for k0 in range(_U(0), kq, n):
                    transpose_block(bp, dst + k0 * nr + jq, nr, b, src + k0, b_cs, 8, 8)
            for j in range(_U(0), w):
                src = (j0 + jp + j) * b_cs + pc * b_rs
                k_lo = kq if j < wq else _U(0)
                for k in range(k_lo, kc):
                    bp[dst + k * nr + j] = b[src + k]


@_internal
def panel_width(c):
    """``NR``: columns of the ``MR x NR`` micro-tile for ``c``'s dtype."""
    return _U(NRV) * lanes(c)
