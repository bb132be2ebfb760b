"""The GEMM's micro-kernels and packing routines (the core that drives them, the
blocking and the public functions are in :mod:`.matmul`, whose docstring explains the
design).

Every function here works on flat arrays with unsigned 64-bit element offsets and
strides, on a tile or panel the driver chose; they are ``no_cpython_wrapper`` kernels,
callable only from other kernels.
"""
import numpy as np

from ._jit import kernel
from .simd_vectors import (  # short private aliases keep the kernels terse
    lanes as _lanes,
    vload as _vload,
    vstore as _vstore,
    vsplat as _vsplat,
    vfma as _vfma,
    vadd as _vadd,
    vsum as _vsum,
    copy8 as _copy8,
    transpose_block as _transpose_block,
    vload_part as _vload_part,
    vstore_part as _vstore_part)

_U = np.uint64

# Internal kernels are only called from other kernels: no CPython wrapper (saves compile
# time; they cannot be called from Python).
_internal = kernel(no_cpython_wrapper=True)


# --------------------------------------------------------------------------- micro-kernels
@_internal
def _tile_bcast(kc, ap, a0, b, b0, ldb, c, c0, ldc, load_c):
    """One 8 x NR micro-tile: ``C[r, j] (+)= sum_k A[r, k] * B[k, j]``.

    ``A[r, k] = ap[a0 + k*8 + r]`` (a packed micro-panel), ``B[k, j] = b[b0 + k*ldb + j]``,
    ``C[r, j] = c[c0 + r*ldc + j]``, ``r < 8``, ``j < NR = 2 * lanes``, ``k < kc``.
    ``load_c``: add to ``C`` (else overwrite it).
    """
    n = _lanes(c)
    c1 = c0 + ldc
    c2 = c1 + ldc
    c3 = c2 + ldc
    c4 = c3 + ldc
    c5 = c4 + ldc
    c6 = c5 + ldc
    c7 = c6 + ldc
    if load_c:
        s00 = _vload(c, c0)
        s01 = _vload(c, c0 + n)
        s10 = _vload(c, c1)
        s11 = _vload(c, c1 + n)
        s20 = _vload(c, c2)
        s21 = _vload(c, c2 + n)
        s30 = _vload(c, c3)
        s31 = _vload(c, c3 + n)
        s40 = _vload(c, c4)
        s41 = _vload(c, c4 + n)
        s50 = _vload(c, c5)
        s51 = _vload(c, c5 + n)
        s60 = _vload(c, c6)
        s61 = _vload(c, c6 + n)
        s70 = _vload(c, c7)
        s71 = _vload(c, c7 + n)
    else:
        z = _vsplat(c.dtype.type(0))
        s00 = z; s01 = z; s10 = z; s11 = z; s20 = z; s21 = z; s30 = z; s31 = z  # noqa: E702
        s40 = z; s41 = z; s50 = z; s51 = z; s60 = z; s61 = z; s70 = z; s71 = z  # noqa: E702
    eight = _U(8)
    for k in range(kc):
        bk = b0 + k * ldb
        y0 = _vload(b, bk)
        y1 = _vload(b, bk + n)
        ak = a0 + k * eight
        x = _vsplat(ap[ak])
        s00 = _vfma(x, y0, s00)
        s01 = _vfma(x, y1, s01)
        x = _vsplat(ap[ak + _U(1)])
        s10 = _vfma(x, y0, s10)
        s11 = _vfma(x, y1, s11)
        x = _vsplat(ap[ak + _U(2)])
        s20 = _vfma(x, y0, s20)
        s21 = _vfma(x, y1, s21)
        x = _vsplat(ap[ak + _U(3)])
        s30 = _vfma(x, y0, s30)
        s31 = _vfma(x, y1, s31)
        x = _vsplat(ap[ak + _U(4)])
        s40 = _vfma(x, y0, s40)
        s41 = _vfma(x, y1, s41)
        x = _vsplat(ap[ak + _U(5)])
        s50 = _vfma(x, y0, s50)
        s51 = _vfma(x, y1, s51)
        x = _vsplat(ap[ak + _U(6)])
        s60 = _vfma(x, y0, s60)
        s61 = _vfma(x, y1, s61)
        x = _vsplat(ap[ak + _U(7)])
        s70 = _vfma(x, y0, s70)
        s71 = _vfma(x, y1, s71)
    _vstore(c, c0, s00)
    _vstore(c, c0 + n, s01)
    _vstore(c, c1, s10)
    _vstore(c, c1 + n, s11)
    _vstore(c, c2, s20)
    _vstore(c, c2 + n, s21)
    _vstore(c, c3, s30)
    _vstore(c, c3 + n, s31)
    _vstore(c, c4, s40)
    _vstore(c, c4 + n, s41)
    _vstore(c, c5, s50)
    _vstore(c, c5 + n, s51)
    _vstore(c, c6, s60)
    _vstore(c, c6 + n, s61)
    _vstore(c, c7, s70)
    _vstore(c, c7 + n, s71)


@_internal
def _tile_narrow(kc, a, a0, a_rs, a_cs, mr, b, b0, ldb, nv, c, c0, ldc, load_c):
    """8 rows x one partial vector: ``C[r, j] (+)= sum_k A[r, k] * B[k, j]`` for a narrow
    output (``j < nv <= lanes``), with both operands read in place.

    ``A[r, k] = a[a0 + r*a_rs + k*a_cs]`` for ``r < mr <= 8`` (rows past ``mr`` repeat
    the last one and are not stored), ``B[k, j] = b[b0 + k*ldb + j]``,
    ``C[r, j] = c[c0 + r*ldc + j]``.  Only the ``nv`` valid elements of each row of
    ``B`` and ``C`` are touched (masked loads and stores).
    """
    one = _U(1)
    last = mr - one
    a1 = a0 + min(one, last) * a_rs
    a2 = a0 + min(_U(2), last) * a_rs
    a3 = a0 + min(_U(3), last) * a_rs
    a4 = a0 + min(_U(4), last) * a_rs
    a5 = a0 + min(_U(5), last) * a_rs
    a6 = a0 + min(_U(6), last) * a_rs
    a7 = a0 + min(_U(7), last) * a_rs
    if load_c:
        s0 = _vload_part(c, c0, nv)
        s1 = _vload_part(c, c0 + min(one, last) * ldc, nv)
        s2 = _vload_part(c, c0 + min(_U(2), last) * ldc, nv)
        s3 = _vload_part(c, c0 + min(_U(3), last) * ldc, nv)
        s4 = _vload_part(c, c0 + min(_U(4), last) * ldc, nv)
        s5 = _vload_part(c, c0 + min(_U(5), last) * ldc, nv)
        s6 = _vload_part(c, c0 + min(_U(6), last) * ldc, nv)
        s7 = _vload_part(c, c0 + min(_U(7), last) * ldc, nv)
    else:
        z = _vsplat(c.dtype.type(0))
        s0 = z; s1 = z; s2 = z; s3 = z; s4 = z; s5 = z; s6 = z; s7 = z  # noqa: E702
    for k in range(kc):
        y = _vload_part(b, b0 + k * ldb, nv)
        ka = k * a_cs
        s0 = _vfma(_vsplat(a[a0 + ka]), y, s0)
        s1 = _vfma(_vsplat(a[a1 + ka]), y, s1)
        s2 = _vfma(_vsplat(a[a2 + ka]), y, s2)
        s3 = _vfma(_vsplat(a[a3 + ka]), y, s3)
        s4 = _vfma(_vsplat(a[a4 + ka]), y, s4)
        s5 = _vfma(_vsplat(a[a5 + ka]), y, s5)
        s6 = _vfma(_vsplat(a[a6 + ka]), y, s6)
        s7 = _vfma(_vsplat(a[a7 + ka]), y, s7)
    _vstore_part(c, c0, s0, nv)
    if mr > one:
        _vstore_part(c, c0 + ldc, s1, nv)
    if mr > _U(2):
        _vstore_part(c, c0 + _U(2) * ldc, s2, nv)
    if mr > _U(3):
        _vstore_part(c, c0 + _U(3) * ldc, s3, nv)
    if mr > _U(4):
        _vstore_part(c, c0 + _U(4) * ldc, s4, nv)
    if mr > _U(5):
        _vstore_part(c, c0 + _U(5) * ldc, s5, nv)
    if mr > _U(6):
        _vstore_part(c, c0 + _U(6) * ldc, s6, nv)
    if mr > _U(7):
        _vstore_part(c, c0 + _U(7) * ldc, s7, nv)


@_internal
def _tile_rows(kc, a, a0, a_rs, a_cs, mr, b, b0, ldb, nv, c, c0, ldc, load_c):
    """Up to 4 rows x 4 vectors: ``C[r, j] (+)= sum_k A[r, k] * B[k, j]`` for a product
    with very few rows (``r < mr <= 4``; ``j < nv <= 4*lanes``), both operands in place.

    ``A[r, k] = a[a0 + r*a_rs + k*a_cs]`` (rows past ``mr`` repeat the last one and are
    not stored), ``B[k, j] = b[b0 + k*ldb + j]``, ``C[r, j] = c[c0 + r*ldc + j]``.  With
    one to four rows the product streams ``B`` from L3 or memory; this tile issues 16
    FMAs per 4 loads of ``B``, so the loads, not the arithmetic, set the pace.
    """
    n = _lanes(c)
    one = _U(1)
    last = mr - one
    a1 = a0 + min(one, last) * a_rs
    a2 = a0 + min(_U(2), last) * a_rs
    a3 = a0 + min(_U(3), last) * a_rs
    n0 = min(nv, n)
    n1 = min(nv, _U(2) * n) - n0
    n2 = min(nv, _U(3) * n) - n0 - n1
    n3 = nv - n0 - n1 - n2
    z = _vsplat(c.dtype.type(0))
    s00 = z; s01 = z; s02 = z; s03 = z  # noqa: E702
    s10 = z; s11 = z; s12 = z; s13 = z  # noqa: E702
    s20 = z; s21 = z; s22 = z; s23 = z  # noqa: E702
    s30 = z; s31 = z; s32 = z; s33 = z  # noqa: E702
    for k in range(kc):
        bk = b0 + k * ldb
        y0 = _vload_part(b, bk, n0)
        y1 = _vload_part(b, bk + n, n1)
        y2 = _vload_part(b, bk + _U(2) * n, n2)
        y3 = _vload_part(b, bk + _U(3) * n, n3)
        ka = k * a_cs
        x = _vsplat(a[a0 + ka])
        s00 = _vfma(x, y0, s00)
        s01 = _vfma(x, y1, s01)
        s02 = _vfma(x, y2, s02)
        s03 = _vfma(x, y3, s03)
        x = _vsplat(a[a1 + ka])
        s10 = _vfma(x, y0, s10)
        s11 = _vfma(x, y1, s11)
        s12 = _vfma(x, y2, s12)
        s13 = _vfma(x, y3, s13)
        x = _vsplat(a[a2 + ka])
        s20 = _vfma(x, y0, s20)
        s21 = _vfma(x, y1, s21)
        s22 = _vfma(x, y2, s22)
        s23 = _vfma(x, y3, s23)
        x = _vsplat(a[a3 + ka])
        s30 = _vfma(x, y0, s30)
        s31 = _vfma(x, y1, s31)
        s32 = _vfma(x, y2, s32)
        s33 = _vfma(x, y3, s33)
    _rows_store(c, c0, n, n0, n1, n2, n3, load_c, s00, s01, s02, s03)
    if mr > one:
        _rows_store(c, c0 + ldc, n, n0, n1, n2, n3, load_c, s10, s11, s12, s13)
    if mr > _U(2):
        _rows_store(c, c0 + _U(2) * ldc, n, n0, n1, n2, n3, load_c, s20, s21, s22, s23)
    if mr > _U(3):
        _rows_store(c, c0 + _U(3) * ldc, n, n0, n1, n2, n3, load_c, s30, s31, s32, s33)


@_internal
def _rows_store(c, c0, n, n0, n1, n2, n3, load_c, v0, v1, v2, v3):
    """Store (or add) one row of :func:`_tile_rows`: ``n0 + n1 + n2 + n3`` elements."""
    if load_c:
        v0 = _vadd(_vload_part(c, c0, n0), v0)
        v1 = _vadd(_vload_part(c, c0 + n, n1), v1)
        v2 = _vadd(_vload_part(c, c0 + _U(2) * n, n2), v2)
        v3 = _vadd(_vload_part(c, c0 + _U(3) * n, n3), v3)
    _vstore_part(c, c0, v0, n0)
    _vstore_part(c, c0 + n, v1, n1)
    _vstore_part(c, c0 + _U(2) * n, v2, n2)
    _vstore_part(c, c0 + _U(3) * n, v3, n3)


@_internal
def _tile_dot(kc, a, a0, lda, mr, b, b0, ldb, nr, c, c0, ldc, load_c):
    """4 x 4 dot products: ``C[r, s] (+)= sum_k A[r, k] * B[s, k]``.

    ``A[r, k] = a[a0 + r*lda + k]``, ``B[s, k] = b[b0 + s*ldb + k]``,
    ``C[r, s] = c[c0 + r*ldc + s]``, for ``r < mr <= 4``, ``s < nr <= 4``, ``k < kc``.
    Each sum runs over ``lanes`` interleaved partial sums (vectors along ``k``), added up
    by a fixed tree, then the ``kc % lanes`` last terms in order.  Rows past ``mr`` /
    ``nr`` repeat the last valid one (no out-of-bounds reads, no branches in the loop)
    and are not written back.
    """
    one = _U(1)
    a1 = a0 + min(one, mr - one) * lda
    a2 = a0 + min(_U(2), mr - one) * lda
    a3 = a0 + min(_U(3), mr - one) * lda
    b1 = b0 + min(one, nr - one) * ldb
    b2 = b0 + min(_U(2), nr - one) * ldb
    b3 = b0 + min(_U(3), nr - one) * ldb
    n = _lanes(c)
    z = _vsplat(c.dtype.type(0))
    s00 = z; s01 = z; s02 = z; s03 = z  # noqa: E702
    s10 = z; s11 = z; s12 = z; s13 = z  # noqa: E702
    s20 = z; s21 = z; s22 = z; s23 = z  # noqa: E702
    s30 = z; s31 = z; s32 = z; s33 = z  # noqa: E702
    kv = kc // n * n
    for k in range(_U(0), kv, n):
        x0 = _vload(a, a0 + k)
        x1 = _vload(a, a1 + k)
        x2 = _vload(a, a2 + k)
        x3 = _vload(a, a3 + k)
        y = _vload(b, b0 + k)
        s00 = _vfma(x0, y, s00)
        s10 = _vfma(x1, y, s10)
        s20 = _vfma(x2, y, s20)
        s30 = _vfma(x3, y, s30)
        y = _vload(b, b1 + k)
        s01 = _vfma(x0, y, s01)
        s11 = _vfma(x1, y, s11)
        s21 = _vfma(x2, y, s21)
        s31 = _vfma(x3, y, s31)
        y = _vload(b, b2 + k)
        s02 = _vfma(x0, y, s02)
        s12 = _vfma(x1, y, s12)
        s22 = _vfma(x2, y, s22)
        s32 = _vfma(x3, y, s32)
        y = _vload(b, b3 + k)
        s03 = _vfma(x0, y, s03)
        s13 = _vfma(x1, y, s13)
        s23 = _vfma(x2, y, s23)
        s33 = _vfma(x3, y, s33)
    _dot_store(kv, kc, a, a0, b, b0, b1, b2, b3, nr, c, c0, load_c,
               _vsum(s00), _vsum(s01), _vsum(s02), _vsum(s03))
    if mr > one:
        _dot_store(kv, kc, a, a1, b, b0, b1, b2, b3, nr, c, c0 + ldc, load_c,
                   _vsum(s10), _vsum(s11), _vsum(s12), _vsum(s13))
    if mr > _U(2):
        _dot_store(kv, kc, a, a2, b, b0, b1, b2, b3, nr, c, c0 + _U(2) * ldc, load_c,
                   _vsum(s20), _vsum(s21), _vsum(s22), _vsum(s23))
    if mr > _U(3):
        _dot_store(kv, kc, a, a3, b, b0, b1, b2, b3, nr, c, c0 + _U(3) * ldc, load_c,
                   _vsum(s30), _vsum(s31), _vsum(s32), _vsum(s33))


@_internal
def _tile_dot_row(kc, a, a0, b, b0, ldb, nr, c, c0, load_c):
    """One row x 8 dot products (a matrix-vector product, ``matmul_nt`` with one row):
    ``C[s] (+)= sum_k A[k] * B[s, k]`` with ``A[k] = a[a0 + k]``,
    ``B[s, k] = b[b0 + s*ldb + k]``, ``C[s] = c[c0 + s]``, ``s < nr <= 8``.

    The 4 x 4 tile would spend 3/4 of its FMAs on copies of the one row; here each step
    is 1 + 8 loads and 8 FMAs.  Sums as in :func:`_tile_dot` (lanes, fixed tree, tail).
    """
    one = _U(1)
    last = nr - one
    b1 = b0 + min(one, last) * ldb
    b2 = b0 + min(_U(2), last) * ldb
    b3 = b0 + min(_U(3), last) * ldb
    b4 = b0 + min(_U(4), last) * ldb
    b5 = b0 + min(_U(5), last) * ldb
    b6 = b0 + min(_U(6), last) * ldb
    b7 = b0 + min(_U(7), last) * ldb
    n = _lanes(c)
    z = _vsplat(c.dtype.type(0))
    s0 = z; s1 = z; s2 = z; s3 = z; s4 = z; s5 = z; s6 = z; s7 = z  # noqa: E702
    kv = kc // n * n
    for k in range(_U(0), kv, n):
        x = _vload(a, a0 + k)
        s0 = _vfma(x, _vload(b, b0 + k), s0)
        s1 = _vfma(x, _vload(b, b1 + k), s1)
        s2 = _vfma(x, _vload(b, b2 + k), s2)
        s3 = _vfma(x, _vload(b, b3 + k), s3)
        s4 = _vfma(x, _vload(b, b4 + k), s4)
        s5 = _vfma(x, _vload(b, b5 + k), s5)
        s6 = _vfma(x, _vload(b, b6 + k), s6)
        s7 = _vfma(x, _vload(b, b7 + k), s7)
    _dot_store(kv, kc, a, a0, b, b0, b1, b2, b3, min(nr, _U(4)), c, c0, load_c,
               _vsum(s0), _vsum(s1), _vsum(s2), _vsum(s3))
    if nr > _U(4):
        _dot_store(kv, kc, a, a0, b, b4, b5, b6, b7, nr - _U(4), c, c0 + _U(4), load_c,
                   _vsum(s4), _vsum(s5), _vsum(s6), _vsum(s7))


@_internal
def _dot_store(kv, kc, a, ar, b, b0, b1, b2, b3, nr, c, c0, load_c, t0, t1, t2, t3):
    """Finish one row of a dot tile: add the terms ``k >= kv`` and store ``nr`` sums."""
    for k in range(kv, kc):
        x = a[ar + k]
        t0 += x * b[b0 + k]
        t1 += x * b[b1 + k]
        t2 += x * b[b2 + k]
        t3 += x * b[b3 + k]
    if load_c:
        t0 += c[c0]
    c[c0] = t0
    if nr > _U(1):
        if load_c:
            t1 += c[c0 + _U(1)]
        c[c0 + _U(1)] = t1
    if nr > _U(2):
        if load_c:
            t2 += c[c0 + _U(2)]
        c[c0 + _U(2)] = t2
    if nr > _U(3):
        if load_c:
            t3 += c[c0 + _U(3)]
        c[c0 + _U(3)] = t3


# --------------------------------------------------------------------------- packing
@_internal
def _pack_a(a, a_rs, a_cs, i0, m, pc, kc, ap):
    """Rows ``i0 .. i0+m`` of ``A[:, pc:pc+kc]`` as 8-row micro-panels:
    ``ap[(p*kc + k)*8 + r] = A[i0 + 8p + r, pc + k]``, zero-padded to whole panels (so a
    ragged last panel needs no special micro-kernel).  ``A`` is row-major (``a_cs == 1``)
    or transposed (``a_rs == 1``)."""
    eight = _U(8)
    zero = ap.dtype.type(0)
    for p0 in range(_U(0), m, eight):
        mr = min(eight, m - p0)
        dst = p0 * kc
        if mr < eight:
            for k in range(kc):
                for r in range(mr, eight):
                    ap[dst + k * eight + r] = zero
        if a_cs == _U(1):
            # Row-major A (matmul, matmul_nt): 8 x 8 blocks transposed in registers, the
            # ragged rest element by element.
            src = (i0 + p0) * a_rs + pc
            kq = kc // eight * eight if mr == eight else _U(0)
            for k0 in range(_U(0), kq, eight):
                _transpose_block(ap, dst + k0 * eight, eight, a, src + k0, a_rs, 8)
            for k in range(kq, kc):
                for r in range(mr):
                    ap[dst + k * eight + r] = a[src + r * a_rs + k]
    if a_cs != _U(1):
        # Transposed A (matmul_tn): each k is a contiguous run of m values, copied to
        # the panels 8 at a time (a plain loop of 8 stays scalar).
        full = m // eight * eight
        for k in range(kc):
            src = (pc + k) * a_cs + i0
            for p0 in range(_U(0), full, eight):
                _copy8(ap, p0 * kc + k * eight, a, src + p0)
            for r in range(full, m):
                ap[full * kc + k * eight + r - full] = a[src + r]


@_internal
def _pack_b(b, b_rs, b_cs, pc, kc, j0, nb, nr, bp):
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
            # Transposed source (matmul_nt): square blocks of lanes x lanes transposed in
            # registers, the ragged edges (w or kc not a multiple of lanes) element-wise.
            n = _U(8)
            wq = w // n * n
            kq = kc // n * n
            for jq in range(_U(0), wq, n):
                src = (j0 + jp + jq) * b_cs + pc * b_rs
                for k0 in range(_U(0), kq, n):
                    _transpose_block(bp, dst + k0 * nr + jq, nr, b, src + k0, b_cs, 8)
            for j in range(_U(0), w):
                src = (j0 + jp + j) * b_cs + pc * b_rs
                k_lo = kq if j < wq else _U(0)
                for k in range(k_lo, kc):
                    bp[dst + k * nr + j] = b[src + k]
