"""Matrix-multiply kernels for dense layers: forward ``X @ W`` (optionally fused with the
bias and activation), backward ``dY @ W.T`` and the weight gradient ``X.T @ dY``.

Public functions (thin Python wrappers around one compiled core, see "Compile time"):

* ``matmul(a, b, out, accumulate=False)``      ``out (+)= a @ b``
* ``matmul_nt(a, b, out, accumulate=False)``   ``out (+)= a @ b.T``
* ``matmul_tn(a, b, out, accumulate=False)``   ``out (+)= a.T @ b``
* ``matmul_bias_act(a, b, bias, out, act, p0, p1)``  ``out = f(a @ b + bias)``

Design (GotoBLAS/BLIS blocking around explicit-SIMD micro-kernels):

* The core sees each operand as a flat array plus *element strides*: ``A[i, k] =
  a[i*a_rs + k*a_cs]``, ``B[k, j] = b[k*b_rs + j*b_cs]``.  A transposed layout is just
  another pair of strides, so one compiled core per dtype serves every layout.
* Micro-kernel (:func:`_tile_bcast`): an ``MR x NR`` = 8 x 32 (float32; 8 x 16 float64)
  block of ``out`` lives in 16 AVX-512 registers while ``k`` runs; per ``k`` it loads two
  vectors of a ``B`` row, broadcasts 8 values of ``A`` and issues 16 ``vfmadd231ps zmm``
  (99% of the FMA peak with its operands in L1/L2).  The vectors are a small Numba type
  over LLVM's ``<16 x float>`` (see :mod:`.simd_vectors`): LLVM does not keep the 16
  accumulators of a plain-loop tile in registers.
* Blocking: per column block of ``NB`` columns and ``k`` block of ``KC``, the ``B`` block
  (``KC x NB`` = 256 x 512 float32, 512 KiB) stays in L2; ``MC`` rows of ``A`` at a time
  are packed into 8-row micro-panels (``KC x 8``, 8 KiB, each stays in L1 while it sweeps
  the ``B`` block).  Packing transposes 8 x 8 or lanes x lanes blocks in registers
  (:func:`_transpose_block`).  ``B`` is packed into 32-column panels (zero-padded) when
  many rows reuse it or when it is transposed (``matmul_nt``); with few rows a row-major
  ``B`` is read in place (packing would cost as much as the product) and only a ragged
  last panel is packed.  Ragged tiles of ``out`` go through an 8 x 32 scratch tile, so
  this micro-kernel never needs masks.
* Small and narrow products have their own tiles, which read both operands in place:
  :func:`_tile_narrow` (8 rows x one masked vector: N < 16, e.g. a 10-class output),
  :func:`_tile_rows` (<= 4 rows x 4 masked vectors: batches of 1..7 rows),
  :func:`_tile_dot` (4 x 4 dot products along ``k``: ``matmul_nt`` with few rows, where a
  transposing pack of the weights would cost more than the product).  ``matmul_tn`` with
  a narrow output and a long contraction computes ``out.T`` into a scratch instead.
  :func:`_gemm` documents the dispatch rules and their thresholds.
* Epilogue: ``act >= 0`` applies :func:`.epilogue.bias_act_run` to ``out`` right after
  its last ``k`` block is stored, while it is in cache: with the 8 x 32 micro-kernel to
  each 8-row strip of a column block (one call per row of ``NB`` columns: one call per
  row of each 8 x 32 tile cost more than the arithmetic, 2-4% of the fused dense
  forward), with the other tiles to each tile; ``act = -1`` is the plain product.
* Threads: the output is split into one task per thread (rows or columns, whole tiles)
  run on ``numba.prange``; problems under ``SERIAL_FLOPS`` run on the calling thread.
  Every element of ``out`` is summed in the same order whatever the split (``k`` in
  order, the same ``KC`` blocks, the tile chosen by the shape alone), so results do not
  depend on the thread count.

Compile time (user-visible: the first call in a fresh process compiles everything):

* One compilation per dtype serves all public functions: they are plain Python wrappers
  that normalise their arguments (layout code, ``accumulate`` as a bool, the epilogue
  code and parameters, the thread count) before calling the one jitted driver
  :func:`_gemm`, so no layout, default argument or epilogue is a specialisation of its
  own.  (``numba.get_num_threads()`` is read in Python: called from jitted code it makes
  the function uncachable.)
* Numba re-optimises a callee's whole code in every jitted function that calls it, and a
  ``prange`` adds two such levels (the outlined loop body and its parent).  The task code
  (:func:`_task`: packing, all tiles, the epilogue, ~3/4 of the code) is therefore
  compiled once per dtype as a C callback (``numba.cfunc``, cached like the kernels) and
  :func:`_gemm` calls it through its address (:func:`_task_function`, an indirect call),
  so that code is optimised once instead of three times: 5-6 s instead of 9 s cold.

Every index is an unsigned 64-bit integer.  With signed indices Numba emits
negative-index wrap-around code that stops LLVM from vectorising contiguous loads.
"""
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from ._jit import kernel, parallel_kernel
from .epilogue import NO_EPILOGUE, bias_act_run
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

__all__ = ["matmul", "matmul_nt", "matmul_tn", "matmul_bias_act"]

_U = np.uint64

# Internal kernels are only called from other kernels: no CPython wrapper (saves compile
# time; they cannot be called from Python).
_internal = kernel(no_cpython_wrapper=True)


# --------------------------------------------------------------------------- parameters
MR = _U(8)               # rows of a micro-tile (broadcasts of A)
NRV = _U(2)              # vectors per micro-tile row: NR = NRV * lanes columns of B
KC_BYTES = _U(1024)      # k block: an 8-row micro-panel of A is 8 KiB (stays in L1)
MC = _U(64)              # rows of A packed at a time: a 64 x KC block, 64 KiB
NB_BYTES = _U(2048)      # column block: the B block KC x NB is 256 x 512 = 512 KiB (L2)
PACK_MIN_ROWS = _U(96)   # fewer rows: a row-major B is read in place, not packed
DOT_MAX_ROWS = _U(24)    # matmul_nt with fewer rows: dot-product tiles, no packing ...
DOT_MIN_K = _U(32)       # ... unless the dot products are too short to vectorise
ROWS_MAX = _U(7)         # at most this many rows: 4-row tiles (B streamed once per 4 rows)
NARROW_N = _U(16)        # fewer output columns: 8 x (one partial vector) tiles ...
TRANSPOSED_MIN_K = _U(32)  # ... but matmul_tn with K >= this computes out.T instead
DOT_KC_BYTES = _U(4096)  # k block of the dot-product tiles: 8 rows of 4 KiB in L1
SERIAL_FLOPS = _U(1 << 20)  # fewer flops: one thread beats waking the pool ...
PARALLEL_BYTES = _U(1 << 20)  # ... unless an operand spans this (the L2): a product with
                             # a few rows is then bound by one core's L3 bandwidth
MIN_SPLIT_ROWS = _U(32)     # threads split the rows if each gets this many, else ...
MIN_SPLIT_COLS = _U(128)    # ... the columns, if each gets this many

# Modes of _task.
_BCAST = 0     # broadcast micro-kernel, B read in place (row-major, few rows)
_PACKED = 1    # broadcast micro-kernel, B packed into panels
_DOT = 2       # dot-product tiles; A and B both contiguous along k
_NARROW = 3    # 8 x (one partial vector) tiles, A and a row-major B read in place
_ROWS = 4      # (up to 4 rows) x 4 vectors, A and a row-major B read in place
_EPILOGUE_ONLY = 5  # no product (K = 0): the epilogue alone


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


# --------------------------------------------------------------------------- one task
# Compiled by _compile_task() as a C callback (numba.cfunc), not with @kernel: see
# "Compile time" in the module docstring.
def _task(t, grid_n, bm, bn, mode, M, N, K, a, a_rs, a_cs, b, b_rs, b_cs, c, ldc,
          accumulate, act, bias, p0, p1):
    """Block ``t`` of the task grid: ``C[i0:i1, j0:j1] (+)= A @ B`` over all of ``k``,
    then the epilogue ``act`` (if ``>= 0``) on the block, tile by tile.

    ``C[i, j] = c[i*ldc + j]``; the block is row block ``t // grid_n`` (``bm`` rows) and
    column block ``t % grid_n`` (``bn`` columns).  ``mode`` selects the tiles (see the
    mode constants and :func:`_gemm`); ``_DOT`` reads ``A[i, k] = a[i*a_rs + k]`` and
    ``B[k, j] = b[j*b_cs + k]``, the others need ``b_cs == 1`` unless ``B`` is packed.
    ``_EPILOGUE_ONLY`` applies the epilogue alone (``K = 0``).
    """
    i0 = (t // grid_n) * bm
    j0 = (t % grid_n) * bn
    i1 = min(M, i0 + bm)
    j1 = min(N, j0 + bn)
    if i0 >= i1 or j0 >= j1:
        return
    itemsize = _U(64) // _lanes(c)
    epilogue = act >= 0
    four = _U(4)
    if mode == _EPILOGUE_ONLY:
        for i in range(i0, i1):
            bias_act_run(c, i * ldc + j0, j1 - j0, bias, j0, act, p0, p1)
        return
    if mode == _DOT:
        kcb = DOT_KC_BYTES // itemsize
        for pc in range(_U(0), K, kcb):
            kc = min(kcb, K - pc)
            load_c = accumulate or pc > _U(0)
            if M == _U(1):      # one row: 1 x 8 tiles (same sums, no wasted FMAs)
                for jt in range(j0, j1, _U(8)):
                    _tile_dot_row(kc, a, i0 * a_rs + pc, b, jt * b_cs + pc, b_cs,
                                  min(_U(8), j1 - jt), c, i0 * ldc + jt, load_c)
                continue
            for jt in range(j0, j1, four):
                nr = min(four, j1 - jt)
                for it in range(i0, i1, four):
                    _tile_dot(kc, a, it * a_rs + pc, a_rs, min(four, i1 - it),
                              b, jt * b_cs + pc, b_cs, nr, c, it * ldc + jt, ldc, load_c)
        if epilogue:
            for i in range(i0, i1):
                bias_act_run(c, i * ldc + j0, j1 - j0, bias, j0, act, p0, p1)
        return
    if mode == _NARROW:
        n = _lanes(c)
        for jv in range(j0, j1, n):
            nv = min(n, j1 - jv)
            for ib in range(i0, i1, MR):
                mr = min(MR, i1 - ib)
                c0 = ib * ldc + jv
                _tile_narrow(K, a, ib * a_rs, a_rs, a_cs, mr, b, jv, b_rs, nv, c, c0, ldc,
                             accumulate)
                if epilogue:
                    for r in range(mr):
                        bias_act_run(c, c0 + r * ldc, nv, bias, jv, act, p0, p1)
        return
    if mode == _ROWS:
        w = _U(4) * _lanes(c)
        for jv in range(j0, j1, w):
            nv = min(w, j1 - jv)
            for ib in range(i0, i1, four):
                mr = min(four, i1 - ib)
                c0 = ib * ldc + jv
                _tile_rows(K, a, ib * a_rs, a_rs, a_cs, mr, b, jv, b_rs, nv, c, c0, ldc,
                           accumulate)
                if epilogue:
                    for r in range(mr):
                        bias_act_run(c, c0 + r * ldc, nv, bias, jv, act, p0, p1)
        return
    nr = NRV * _lanes(c)
    kcb = KC_BYTES // itemsize
    nbb = NB_BYTES // itemsize
    ap = np.empty(MC * kcb, dtype=c.dtype)
    bp = np.empty(kcb * (nbb if mode == _PACKED else nr), dtype=c.dtype)
    tile = np.empty(MR * nr, dtype=c.dtype)
    for jb in range(j0, j1, nbb):
        nb = min(nbb, j1 - jb)
        for pc in range(_U(0), K, kcb):
            kc = min(kcb, K - pc)
            load_c = accumulate or pc > _U(0)
            last = pc + kc == K
            if mode == _PACKED:
                _pack_b(b, b_rs, b_cs, pc, kc, jb, nb, nr, bp)
            elif nb % nr != _U(0):
                # B in place: only a ragged last panel is packed (zero-padded).
                jl = nb // nr * nr
                _pack_b(b, b_rs, b_cs, pc, kc, jb + jl, nb - jl, nr, bp)
            for ic in range(i0, i1, MC):
                mc = min(MC, i1 - ic)
                _pack_a(a, a_rs, a_cs, ic, mc, pc, kc, ap)
                for ib in range(ic, ic + mc, MR):
                    mr = min(MR, ic + mc - ib)
                    a_off = (ib - ic) * kc
                    for jr in range(_U(0), nb, nr):
                        w = min(nr, nb - jr)
                        col = jb + jr
                        if mode == _PACKED:
                            src = bp
                            s0 = jr * kc
                            ld = nr
                        elif w == nr:
                            src = b
                            s0 = pc * b_rs + col
                            ld = b_rs
                        else:
                            src = bp
                            s0 = _U(0)
                            ld = nr
                        c0 = ib * ldc + col
                        if mr == MR and w == nr:
                            _tile_bcast(kc, ap, a_off, src, s0, ld, c, c0, ldc, load_c)
                        else:
                            # Ragged tile: through the scratch tile, so the kernel is unmasked.
                            if load_c:
                                for r in range(mr):
                                    for j in range(w):
                                        tile[r * nr + j] = c[c0 + r * ldc + j]
                            _tile_bcast(kc, ap, a_off, src, s0, ld, tile, _U(0), nr, load_c)
                            for r in range(mr):
                                for j in range(w):
                                    c[c0 + r * ldc + j] = tile[r * nr + j]
                    if last and epilogue:
                        # The strip (8 rows x nb columns) is final: one call per row of it;
                        # per row of each tile, the calls cost more than the arithmetic.
                        for r in range(mr):
                            bias_act_run(c, (ib + r) * ldc + jb, nb, bias, jb, act, p0, p1)


def _task_signature(dtype):
    """The C signature of the compiled :func:`_task` for arrays of ``dtype``."""
    array = types.Array(numba.from_dtype(dtype), 1, "C")
    u = types.uint64
    return types.void(u, u, u, u, types.int64, u, u, u, array, u, u, array, u, u, array, u,
                      types.boolean, types.int64, array, types.float64, types.float64)


_TASKS = {}     # dtype -> the compiled task (a numba.cfunc; kept alive here)


def _compile_task(dtype):
    """:func:`_task` compiled for ``dtype`` (on first use; later processes load it from
    the cache like any kernel)."""
    task = _TASKS.get(dtype)
    if task is None:
        task = _TASKS[dtype] = numba.cfunc(_task_signature(dtype), cache=True,
                                           error_model="numpy")(_task)
    return task


@intrinsic
def _task_function(typingctx, address, like):
    """The compiled :func:`_task` for ``like``'s dtype, called through its ``address``.

    A first-class function value: calling it is an indirect call, so the code that calls
    it does not link (and re-optimise) the whole task code.
    """
    if not isinstance(like, types.Array):
        return None
    fn_type = types.FunctionType(_task_signature(numba.np.numpy_support.as_dtype(like.dtype)))

    def codegen(context, builder, signature, args):
        fn = cgutils.create_struct_proxy(fn_type)(context, builder)
        fn.c_addr = builder.inttoptr(args[0], context.get_value_type(types.voidptr))
        fn.py_addr = ir.Constant(context.get_value_type(types.voidptr), None)
        fn.jit_addr = ir.Constant(context.get_value_type(types.voidptr), None)
        return fn._getvalue()

    return fn_type(types.uint64, like), codegen


# --------------------------------------------------------------------------- the core
_NN = 0
_NT = 1
_TN = 2


@_internal
def _cdiv(n, d):
    """Ceiling of ``n / d`` for unsigned integers."""
    return (n + d - _U(1)) // d


@parallel_kernel
def _gemm(a, b, out, layout, accumulate, act, bias, p0, p1, n_threads, task_address):
    """``out (+)= op(a) @ op(b)``, then ``out = f(out + bias)`` if ``act >= 0``.

    ``layout``: ``_NN`` (``a @ b``), ``_NT`` (``a @ b.T``), ``_TN`` (``a.T @ b``).
    ``accumulate`` is a bool and the epilogue is only used with ``accumulate=False``.

    Dispatch (``M x N`` output, contraction ``K``; thresholds are the constants above;
    the first rule that applies wins):

    1. ``_TN``, ``N < NARROW_N``, ``K >= TRANSPOSED_MIN_K``: transposed output (the
       weight gradient of a 10-class layer).  ``out.T = b.T @ a`` has ``N`` short rows and
       ``M`` wide columns: 4-row tiles (:func:`_tile_rows`, 10 rows -> 12, where the
       narrow tile would use 10 of 16 lanes) compute it into a scratch, ``a`` read in
       place with vectors along M, and it is transposed into ``out``.
    2. ``N < NARROW_N``: narrow tiles (:func:`_tile_narrow`, 8 rows x one partial
       vector, masked), both operands read in place (nothing to pack for a few columns);
       ``_NT`` first copies its tiny ``b`` (N x K) transposed.
    3. ``_NT``, ``M < DOT_MAX_ROWS``, ``K >= DOT_MIN_K``: dot-product tiles on the
       caller's arrays (a transposing pack of ``b`` would cost more than the product).
    4. ``M <= ROWS_MAX`` and ``b`` row-major: 4-row tiles (:func:`_tile_rows`), in place;
       the product streams ``b`` once per 4 rows.
    5. ``b`` row-major and ``M < PACK_MIN_ROWS``: the 8 x 32 micro-kernel, ``b`` in place.
    6. Otherwise the 8 x 32 micro-kernel with ``b`` packed.

    Threads: under ``SERIAL_FLOPS`` (or one thread) a single task on this thread, unless
    an operand spans ``PARALLEL_BYTES``: a product of a few rows with a weight larger than
    L2 streams it from L3 at one core's bandwidth (the B = 1 forward of a 784 x 512 layer:
    23 us on one thread, 13 us on two; NumPy 19 us);
    otherwise one task per thread, splitting the rows if each thread gets at least
    ``MIN_SPLIT_ROWS`` of them (measured faster than splitting the columns, even though
    each thread then packs the same ``B``), else the columns if each thread gets at least
    ``MIN_SPLIT_COLS``, else the rows (whole tiles either way).
    """
    if layout == _NT:
        M = _U(a.shape[0])
        K = _U(a.shape[1])
        N = _U(b.shape[0])
        a_rs, a_cs, b_rs, b_cs = K, _U(1), _U(1), K
    elif layout == _TN:
        K = _U(a.shape[0])
        M = _U(a.shape[1])
        N = _U(b.shape[1])
        a_rs, a_cs, b_rs, b_cs = _U(1), M, N, _U(1)
    else:
        M = _U(a.shape[0])
        K = _U(a.shape[1])
        N = _U(b.shape[1])
        a_rs, a_cs, b_rs, b_cs = K, _U(1), N, _U(1)
    c = out.reshape(out.size)
    af = a.reshape(a.size)
    bf = b.reshape(b.size)
    if M == _U(0) or N == _U(0):
        return out
    task = _task_function(_U(task_address), c)
    if K == _U(0):
        if not accumulate:
            for i in range(M * N):      # a loop, not c[:] = 0: that would be a parfor
                c[i] = out.dtype.type(0)
        if act >= 0:
            task(_U(0), _U(1), M, N, np.int64(_EPILOGUE_ONLY), M, N, K, af, K, _U(1), bf, N,
                 _U(1), c, N, accumulate, np.int64(act), bias, np.float64(p0),
                 np.float64(p1))
        return out

    transposed = layout == _TN and N < NARROW_N and K >= TRANSPOSED_MIN_K and act < 0
    ldc = N
    cc = c
    if transposed:
        # Rule 1: swap the operands; the result goes to a scratch with rows of length M.
        M, N = N, M
        af, bf = bf, af
        a_rs, a_cs, b_rs, b_cs = _U(1), M, N, _U(1)
        ldc = N
        cc = np.empty(M * N, dtype=out.dtype)
    if transposed:
        mode = _ROWS                                  # rule 1
    elif N < NARROW_N:
        mode = _NARROW                                # rule 2
        if b_cs != _U(1):
            bt = np.empty(N * K, dtype=out.dtype)
            for j in range(N):
                for k in range(K):
                    bt[k * N + j] = bf[j * b_cs + k]
            bf = bt
            b_rs, b_cs = N, _U(1)
    elif layout == _NT and M < DOT_MAX_ROWS and K >= DOT_MIN_K:
        mode = _DOT                                   # rule 3
    elif M <= ROWS_MAX and b_cs == _U(1):
        mode = _ROWS                                  # rule 4
    elif b_cs == _U(1) and M < PACK_MIN_ROWS:
        mode = _BCAST                                 # rule 5
    else:
        mode = _PACKED                                # rule 6
    acc = accumulate and not transposed

    # The task grid (see the docstring).
    if mode == _DOT:
        unit_m = _U(4)
        unit_n = _U(4)
    elif mode == _NARROW:
        unit_m = MR
        unit_n = _lanes(c)
    elif mode == _ROWS:
        unit_m = _U(4)
        unit_n = _U(4) * _lanes(c)
    else:
        unit_m = MR
        unit_n = NRV * _lanes(c)
    threads = _U(max(n_threads, 1))
    grid_m = _U(1)
    grid_n = _U(1)
    bm = M
    bn = N
    big = K * max(M, N) * _U(out.itemsize) >= PARALLEL_BYTES
    if threads > _U(1) and (_U(2) * M * N * K >= SERIAL_FLOPS or big):
        if M < threads * MIN_SPLIT_ROWS and N >= threads * MIN_SPLIT_COLS:
            bn = _cdiv(_cdiv(N, threads), unit_n) * unit_n
            grid_n = _cdiv(N, bn)
        else:
            bm = _cdiv(_cdiv(M, threads), unit_m) * unit_m
            grid_m = _cdiv(M, bm)
    n_tasks = grid_m * grid_n
    mode = np.int64(mode)
    act = np.int64(act)
    p0 = np.float64(p0)
    p1 = np.float64(p1)
    if n_tasks == _U(1):
        task(_U(0), grid_n, bm, bn, mode, M, N, K, af, a_rs, a_cs, bf, b_rs, b_cs, cc, ldc,
             acc, act, bias, p0, p1)
    else:
        for t in numba.prange(n_tasks):
            task(_U(t), grid_n, bm, bn, mode, M, N, K, af, a_rs, a_cs, bf, b_rs, b_cs, cc,
                 ldc, acc, act, bias, p0, p1)

    if transposed:
        # cc holds out.T (M x N here is the swapped problem: M = out's columns).
        for i in range(N):
            for j in range(M):
                if accumulate:
                    c[i * M + j] += cc[j * N + i]
                else:
                    c[i * M + j] = cc[j * N + i]
    return out


# --------------------------------------------------------------------------- public API
_PER_DTYPE = {}     # dtype -> (empty bias, address of the compiled task)


def _per_dtype(dtype):
    """``(empty bias array, task address)`` for ``dtype``, compiling the task if needed."""
    entry = _PER_DTYPE.get(dtype)
    if entry is None:
        entry = _PER_DTYPE[dtype] = (np.empty(0, dtype), _compile_task(dtype).address)
    return entry


def _threads():
    """Numba's thread count (for the task grid).  ``numba.get_num_threads()`` costs
    0.5 us a call (it checks that the pool is started); after the first call this reads
    the same thread-local setting through the threading layer's C function (0.1 us)."""
    global _threads
    count = numba.get_num_threads()
    try:
        from numba.np.ufunc import parallel
        fast = parallel._get_num_threads
        if fast() == count:
            _threads = fast
    except (ImportError, AttributeError):
        _threads = numba.get_num_threads
    return count


def matmul(a, b, out, accumulate=False):
    """Matrix product ``out = a @ b`` (or ``out += a @ b``): the dense forward ``X @ W``.

    Parameters
    ----------
    a : ndarray, shape (M, K), C-contiguous, float32 or float64
    b : ndarray, shape (K, N), C-contiguous, same dtype
    out : ndarray, shape (M, N), C-contiguous, same dtype, not overlapping ``a``/``b``
    accumulate : bool, default False
        If True, add the product to the existing contents of ``out``
        (gradient accumulation); otherwise overwrite them.

    Returns
    -------
    out : ndarray, shape (M, N)
        The same object that was passed in.
    """
    no_bias, task = _PER_DTYPE.get(out.dtype) or _per_dtype(out.dtype)
    return _gemm(a, b, out, _NN, bool(accumulate), NO_EPILOGUE, no_bias, 0.0, 0.0, _threads(),
                 task)


def matmul_nt(a, b, out, accumulate=False):
    """Product with the right operand transposed, ``out (+)= a @ b.T``: the dense
    backward ``dX = dY @ W.T``.

    Parameters
    ----------
    a : ndarray, shape (M, K), C-contiguous, float32 or float64
    b : ndarray, shape (N, K), C-contiguous, same dtype
    out : ndarray, shape (M, N), C-contiguous, same dtype, not overlapping ``a``/``b``
    accumulate : bool, default False
        If True, add to the existing contents of ``out``; otherwise overwrite them.

    Returns
    -------
    out : ndarray, shape (M, N)
        The same object that was passed in.
    """
    no_bias, task = _PER_DTYPE.get(out.dtype) or _per_dtype(out.dtype)
    return _gemm(a, b, out, _NT, bool(accumulate), NO_EPILOGUE, no_bias, 0.0, 0.0, _threads(),
                 task)


def matmul_tn(a, b, out, accumulate=False):
    """Product with the left operand transposed, ``out (+)= a.T @ b``: the dense
    weight gradient ``dW = X.T @ dY``.

    Parameters
    ----------
    a : ndarray, shape (K, M), C-contiguous, float32 or float64
    b : ndarray, shape (K, N), C-contiguous, same dtype
    out : ndarray, shape (M, N), C-contiguous, same dtype, not overlapping ``a``/``b``
    accumulate : bool, default False
        If True, add to the existing contents of ``out`` (accumulating gradients over
        micro-batches); otherwise overwrite them.

    Returns
    -------
    out : ndarray, shape (M, N)
        The same object that was passed in.
    """
    no_bias, task = _PER_DTYPE.get(out.dtype) or _per_dtype(out.dtype)
    return _gemm(a, b, out, _TN, bool(accumulate), NO_EPILOGUE, no_bias, 0.0, 0.0, _threads(),
                 task)


def matmul_bias_act(a, b, bias, out, act, p0=0.0, p1=0.0):
    """Dense-layer forward in one pass: ``out = f(a @ b + bias)``.

    The bias and activation are applied to each strip of tiles of the product right
    after its last ``k`` block is stored, while it is in cache, so ``out`` is written once.

    Parameters
    ----------
    a : ndarray, shape (M, K), C-contiguous, float32 or float64
    b : ndarray, shape (K, N), C-contiguous, same dtype
    bias : ndarray, shape (N,), same dtype; a size-0 array for no bias
    out : ndarray, shape (M, N), C-contiguous, same dtype, not overlapping the inputs
    act : int
        Activation code from :data:`fastnn.kernels.epilogue.EPILOGUE_CODES`
        (``-1``: none, same as ``identity``).
    p0, p1 : float
        The activation's parameters in the order of
        :data:`fastnn.kernels.activations.ACTIVATIONS` (sigmoid ``beta``;
        leaky_relu/elu ``alpha``; piecewise_linear ``x_min, x_max``).

    Returns
    -------
    out : ndarray, shape (M, N)
        The same object that was passed in.
    """
    task = (_PER_DTYPE.get(out.dtype) or _per_dtype(out.dtype))[1]
    return _gemm(a, b, out, _NN, False, max(int(act), 0), bias, float(p0), float(p1),
                 _threads(), task)
