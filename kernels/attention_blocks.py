"""The pieces the attention kernels (:mod:`.attention`, :mod:`.attention_backward`) are
built from: the blocking, a small matrix product on register tiles, the masked and
scaled logits of a block of scores, and the packing of ``K`` and ``V`` into panels.

Blocks.  Queries are processed in blocks of :data:`BLOCK_Q` rows and keys in blocks of
:data:`BLOCK_K`; a worker holds one ``BLOCK_Q x BLOCK_K`` block of scores (and in the
backward a second one), never the ``S_q x S_k`` matrix.  The blocks depend on the shape
only, never on the thread count, so every sum is taken in the same order on any number
of threads.

Products.  :func:`block_matmul` computes ``C (+)= A @ B`` for blocks of a few dozen to a
few hundred rows with the GEMM's register tiles (:func:`.gemm_tiles.tile_in_place`: an
``MR x NR`` block of ``C`` in registers, ``MR`` broadcasts of ``A`` and ``NR / lanes``
vector loads of ``B`` per step of ``k``; ``MR x NR`` = 12 x 32 float32 on AVX-512, 6 x 16
on AVX2).  ``A`` is read where it is, with any row and column strides, so a transposed
block (``P.T``, ``dS.T``) costs nothing; ``B`` is read as panels of ``NR`` columns, each
row of a panel ``NR`` contiguous elements: a row-major matrix whose width is a multiple
of ``NR``, or a packed copy (:func:`pack_panels_transposed`, :func:`pad_columns`).
Calling the GEMM itself per block would pay its dispatch, packing and thread split on
blocks far too small for them.

All offsets, strides and counts are unsigned 64-bit integers (``np.uint64``): with signed
indices Numba emits wrap-around code that stops LLVM from vectorising (see
:mod:`.matmul`).
"""
import numpy as np
from numba import prange

from . import vmath
from ._jit import kernel, parallel_kernel
from .gemm_tiles import MR, NRV, pack_a, pack_b
from .simd_intrinsics import maxnum
from .simd_tiles import (tile_fma_bcast, tile_fma_bcast_rows, tile_load_part, tile_store_part,
                         tile_zeros)
from .simd_exp import vexp_minus, vload_fill, vmax_lanes, vmaxnum
from .simd_vectors import lanes, vadd, vload, vsplat, vstore, vstore_part, vsum
from .target import TARGET

__all__ = ["BLOCK_Q", "BLOCK_K", "MIN_TASKS", "panel_width", "block_matmul", "block_matmul_rows",
           "block_mask",
           "softmax_rows", "exp_block", "pack_rows", "pack_head_transposed", "pad_head", "pack_heads_rows", "pack_panels_transposed",
           "pad_columns", "mask_strides", "balanced_block", "cdiv"]

_U = np.uint64
_internal = kernel(no_cpython_wrapper=True)
# Row reductions (max, sums) vectorise with 'reassoc' (rounding only: the order follows
# the SIMD width of the compile target, never the thread count); 'contract' fuses
# multiply-adds.  Neither changes NaN/Inf behaviour.
_REDUCE_FLAGS = {"contract", "reassoc"}

#: Queries per block: a multiple of every target's tile height (12 on AVX-512, 6 on AVX2
#: and the 16-byte path), so only the last block of a sequence has a ragged tile.
BLOCK_Q = 48
#: Keys per block: a multiple of every panel width (32 float32 / 16 float64 on AVX-512,
#: 16 / 8 on AVX2, 8 / 4 on the 16-byte path).  A 48 x 128 float32 block of scores is
#: 24 KiB: it stays in L1 between the product that writes it and the one that reads it.
BLOCK_K = 128
#: The backward runs at least this many tasks when it can (see
#: :mod:`.attention_backward`): a fixed number, not the thread count, so that results
#: do not depend on the thread count.
MIN_TASKS = 8

assert BLOCK_Q % MR == 0


def panel_width(dtype):
    """``NR``: columns of a register tile (and of a panel of ``B``) for ``dtype``."""
    return NRV * TARGET.lanes(np.dtype(dtype).itemsize)


@_internal
def cdiv(n, d):
    """``ceil(n / d)`` for unsigned integers."""
    return (n + d - _U(1)) // d


@_internal
def _panel_tile(acc, kc, a, a0, a_ks, b, b0, ldb, c, c0, ldc, mr, nv, accumulate):
    """One register tile: ``C[r, j] (+)= sum_k a[a0 + k*a_ks + r] * b[b0 + k*ldb + j]``
    for ``r < mr``, ``j < nv`` (``acc``: a zero tile of ``MR x NR``; the whole tile is
    computed, only the ``mr x nv`` block of ``C`` read and written)."""
    if accumulate:
        acc = tile_load_part(acc, c, c0, ldc, mr, nv)
    for k in range(kc):
        acc = tile_fma_bcast(acc, a, a0 + k * a_ks, b, b0 + k * ldb)
    tile_store_part(c, c0, ldc, acc, mr, nv)


@_internal
def block_matmul(m, n, kc, a, a0, a_ps, a_ks, b, b0, b_ps, ldb, c, c0, ldc, accumulate):
    """``C[i, j] (+)= sum_k A[i, k] B[k, j]`` for ``i < m``, ``j < n``, ``k < kc``.

    ``A`` in panels of ``MR`` rows: ``A[i, k] = a[a0 + (i // MR)*a_ps + k*a_ks + i % MR]``
    (packed by :func:`pack_rows`: ``a_ps = kc*MR``, ``a_ks = MR``; or a transposed block
    read in place, ``A = P^T`` with ``P[k, i] = p[k*ld + i]``: ``a_ps = MR``, ``a_ks =
    ld``), ``MR`` readable rows in every panel.  ``B`` in panels of ``NR`` columns:
    ``B[k, j] = b[b0 + (j // NR)*b_ps + k*ldb + j % NR]`` (a row-major ``B`` has ``b_ps =
    NR``), ``NR`` readable columns in every panel.  ``C[i, j] = c[c0 + i*ldc + j]``: only
    the ``m x n`` block is read or written.  Rows and columns past ``m``, ``n`` are
    computed and dropped.  ``accumulate``: add to ``C``, else overwrite it.
    """
    _block_tiles(False, m, n, kc, a, a0, a_ps, a_ks, b, b0, b_ps, ldb, c, c0, ldc, accumulate)


@_internal
def _block_tiles(in_place, m, n, kc, a, a0, a_ps, a_ks, b, b0, b_ps, ldb, c, c0, ldc,
                 accumulate):
    """The tiles of :func:`block_matmul` (``in_place`` False) or of
    :func:`block_matmul_rows` (True: ``A[i, k] = a[a0 + i*a_ks + k]``, ``a_ps = MR *
    a_ks``)."""
    w = _U(NRV) * lanes(c)
    rows = _U(MR)
    for jp in range(_U(0), n, w):
        nv = min(w, n - jp)
        bp = b0 + (jp // w) * b_ps
        for i0 in range(_U(0), m, rows):
            at = a0 + (i0 // rows) * a_ps
            mr = min(rows, m - i0)
            ct = c0 + i0 * ldc + jp
            if in_place:
                _rows_tile(tile_zeros(c, MR, NRV), kc, a, at, a_ks, mr, b, bp, ldb, c, ct, ldc,
                           nv, accumulate)
            else:
                _panel_tile(tile_zeros(c, MR, NRV), kc, a, at, a_ks, b, bp, ldb, c, ct, ldc, mr,
                            nv, accumulate)


@_internal
def _rows_tile(acc, kc, a, a0, lda, mr, b, b0, ldb, c, c0, ldc, nv, accumulate):
    """One register tile with ``A`` read row-major in place: ``C[r, j] (+)= sum_k
    a[a0 + r*lda + k] * b[b0 + k*ldb + j]`` (``r < mr``; the tile's rows past ``mr``
    repeat row ``mr - 1`` and are dropped)."""
    if accumulate:
        acc = tile_load_part(acc, c, c0, ldc, mr, nv)
    for k in range(kc):
        acc = tile_fma_bcast_rows(acc, a, a0 + k, lda, mr, b, b0 + k * ldb)
    tile_store_part(c, c0, ldc, acc, mr, nv)


@_internal
def block_matmul_rows(m, n, kc, a, a0, lda, b, b0, b_ps, ldb, c, c0, ldc, accumulate):
    """:func:`block_matmul` with ``A`` row-major where it is, ``A[i, k] = a[a0 + i*lda +
    k]``: a block of probabilities (``P``, ``dS``) multiplies ``V`` or ``K`` without
    first being packed into ``MR``-row panels (a pass over the block and a second
    block-sized buffer in L1 saved; the ``MR`` broadcasts per step of ``k`` come from
    ``MR`` rows instead of one panel, all of them in L1)."""
    _block_tiles(True, m, n, kc, a, a0, _U(MR) * lda, lda, b, b0, b_ps, ldb, c, c0, ldc,
                 accumulate)


@_internal
def pack_rows(a, a0, lda, m, kc, ap):
    """Rows ``0 .. m`` of the row-major block ``A[i, k] = a[a0 + i*lda + k]`` (``k < kc``)
    as ``MR``-row panels, ``ap[(p*kc + k)*MR + r] = A[p*MR + r, k]``, zero-padded to
    whole panels: the left operand of :func:`block_matmul` (``a_ps = kc*MR``, ``a_ks =
    MR``).  The GEMM's packing (8 x 8 blocks transposed in registers)."""
    pack_a(a[a0:], lda, _U(1), _U(0), m, _U(0), kc, ap)


@_internal
def pack_head_transposed(x, x0, seq, d, w, out):
    """Panels of the transpose of one head's (seq, d) matrix ``X[i, k] = x[x0 + i*d +
    k]``: ``out[(p*d + k)*w + c] = X[p*w + c, k]``, 0 past ``seq`` (the layout of
    :func:`.attention_blocks.pack_panels_transposed` for one head)."""
    pack_b(x[x0:x0 + seq * d], _U(1), d, _U(0), d, _U(0), seq, w, out)


@_internal
def pad_head(x, x0, seq, n, ld, out):
    """One head's (seq, n) matrix ``x[x0 + i*n + c]`` as rows of ``ld >= n`` in ``out``,
    zero columns after ``n``."""
    zero = x.dtype.type(0)
    for i in range(seq):
        src = x0 + i * n
        dst = i * ld
        for c in range(n):
            out[dst + c] = x[src + c]
        for c in range(n, ld):
            out[dst + c] = zero


@_internal
def mask_strides(mask):
    """Element strides ``(batch, head, query, key)`` of a 4-D C-contiguous ``mask``
    broadcast to ``(B, H, S_q, S_k)``: 0 along an axis of length 1."""
    mb, mh, mq, mk = mask.shape
    s_k = _U(1) if mk > 1 else _U(0)
    s_q = _U(mk) if mq > 1 else _U(0)
    s_h = _U(mq * mk) if mh > 1 else _U(0)
    s_b = _U(mh * mq * mk) if mb > 1 else _U(0)
    return s_b, s_h, s_q, s_k


@kernel(fastmath=_REDUCE_FLAGS)
def block_mask(s, ld, rows, n, i0, j0, causal, mask, m0, m_sq, m_sk):
    """Mask a block of logits in place: ``S[r, c] = s[r*ld + c]`` (``r < rows``, ``c <
    n``) is row ``i0 + r`` (a query) and column ``j0 + c`` (a key) of the full matrix.

    ``mask``: size 0 (none), or a flat boolean mask (``False`` gives ``-inf``) or additive
    mask (added) whose element ``(r, c)`` is ``mask[m0 + r*m_sq + c*m_sk]`` (strides 0
    where it broadcasts).  ``causal``: ``S[r, c] = -inf`` where ``j0 + c > i0 + r``.
    Indices are flat offsets, not slices: a slice per row costs two atomic reference-count
    updates, which at 48 rows per block cost as much as the masking.
    """
    neg_inf = s.dtype.type(-np.inf)
    has_mask = mask.size > 0
    for r in range(rows):
        base = r * ld
        nvalid = n
        if causal:
            qi = i0 + r
            nvalid = _U(0) if qi < j0 else min(n, qi - j0 + _U(1))
        if has_mask:
            mr0 = m0 + r * m_sq
            if m_sk == _U(0):
                mv = mask[mr0]
                for c in range(nvalid):
                    s[base + c] = _masked(s[base + c], mv, neg_inf)
            else:
                for c in range(nvalid):
                    s[base + c] = _masked(s[base + c], mask[mr0 + c], neg_inf)
        for c in range(nvalid, n):
            s[base + c] = neg_inf


@kernel(inline="always")
def _masked(x, m, neg_inf):
    """``x`` under one mask element: ``x + m`` (additive), ``x`` or ``-inf`` (boolean)."""
    if isinstance(m, (bool, np.bool_)):
        return x if m else neg_inf
    return x + m


@_internal
def _row_max(s, base, n):
    """``max_c s[base + c]`` (``c < n``; ``-inf`` if all are), NaN ignored as
    :func:`.simd_intrinsics.maxnum` does (a NaN still makes its row's sum NaN): full
    vectors, the tail in one masked vector, the lanes by a fixed tree."""
    step = lanes(s)
    neg_inf = s.dtype.type(-np.inf)
    acc = vsplat(neg_inf)
    full = n // step * step
    for c in range(_U(0), full, step):
        acc = vmaxnum(acc, vload(s, base + c))
    if full < n:
        acc = vmaxnum(acc, vload_fill(s, base + full, n - full, neg_inf))
    return vmax_lanes(acc)


@_internal
def _exp_row(s, base, n, shift):
    """``s[base + c] = exp(s[base + c] - shift)`` for ``c < n``; returns their sum (full
    vectors, the tail in one masked vector, lanes summed by a fixed tree)."""
    step = lanes(s)
    acc = vsplat(s.dtype.type(0))
    full = n // step * step
    for c in range(_U(0), full, step):
        p = vexp_minus(vload(s, base + c), shift)
        vstore(s, base + c, p)
        acc = vadd(acc, p)
    if full < n:
        left = n - full
        p = vexp_minus(vload_fill(s, base + full, left, s.dtype.type(-np.inf)), shift)
        vstore_part(s, base + full, p, left)
        acc = vadd(acc, p)
    return vsum(acc)


@_internal
def softmax_rows(s, ld, rows, n, m, l, alpha):
    """One key block of the online softmax, row by row (``S[r, c] = s[r*ld + c]``, ``r <
    rows``, ``c < n``, logits in, probabilities out)::

        m' = max(m, max_c S[r, c]);  S[r, c] = exp(S[r, c] - m')
        alpha[r] = exp(m - m');  l = alpha l + sum_c S[r, c];  m = m'

    A row with every key masked so far keeps ``m = -inf`` and is shifted by 0 instead,
    giving ``P = 0`` and ``alpha = 0`` (not NaN)."""
    neg_inf = s.dtype.type(-np.inf)
    for r in range(rows):
        base = r * ld
        m_old = m[r]
        m_new = maxnum(m_old, _row_max(s, base, n))
        m[r] = m_new
        shift = m_new if m_new != neg_inf else s.dtype.type(0)
        # exp(-inf) = 0 without the exp: its subnormal intermediates cost a microcode
        # assist (~150 cycles) per row of the first key block
        a = s.dtype.type(0) if m_old == neg_inf else vmath.exp(m_old - shift)
        alpha[r] = a
        l[r] = l[r] * a + _exp_row(s, base, n, shift)


@_internal
def exp_block(s, ld, rows, n, shifts, s0):
    """``s[r*ld + c] = exp(s[r*ld + c] - shifts[s0 + r])`` for ``r < rows``, ``c < n``.
    (``-inf`` logits give 0.)"""
    for r in range(rows):
        _exp_row(s, r * ld, n, shifts[s0 + r])


@_internal
def balanced_block(i, n):
    """The ``i``-th block to run of ``n``: ``0, n-1, 1, n-2, ...``.  Under the causal
    mask a block's work grows (queries) or shrinks (keys) with its index; Numba gives each
    thread a contiguous range of tasks, so pairing cheap and costly blocks balances it."""
    half = i // _U(2)
    return half if i % _U(2) == _U(0) else n - _U(1) - half


@parallel_kernel
def pack_panels_transposed(x, out):
    """``x`` (B, H, S, d) as panels of its transpose: ``out[b, h, p, k, c] =
    x[b, h, p*NR + c, k]`` (0 for ``p*NR + c >= S``); ``out`` is (B, H, ceil(S/NR), d,
    NR).  The ``B`` operand of ``Q @ K.T`` (``dO @ V.T``) as :func:`block_matmul` reads
    it."""
    n_b, n_h, seq, d = x.shape
    n_panels, w = out.shape[2], out.shape[4]
    zero = x.dtype.type(0)
    for bh in prange(n_b * n_h):
        b = bh // n_h
        h = bh - b * n_h
        src = x[b, h]
        dst = out[b, h]
        for p in range(n_panels):
            panel = dst[p]
            r0 = p * w
            nr = min(w, seq - r0)
            for k in range(d):
                for c in range(nr, w):
                    panel[k, c] = zero
            for c in range(nr):
                row = src[r0 + c]
                for k in range(d):
                    panel[k, c] = row[k]
    return out


@parallel_kernel
def pad_columns(x, out):
    """``out[..., :d] = x``, ``out[..., d:] = 0``: rows of ``x`` (B, H, S, d) widened to
    ``out``'s last axis (a multiple of ``NR``), so every panel of ``NR`` columns is
    readable."""
    n_b, n_h, seq, d = x.shape
    width = out.shape[3]
    zero = x.dtype.type(0)
    for bh in prange(n_b * n_h):
        b = bh // n_h
        h = bh - b * n_h
        for i in range(seq):
            src = x[b, h, i]
            dst = out[b, h, i]
            for c in range(d):
                dst[c] = src[c]
            for c in range(d, width):
                dst[c] = zero
    return out


@parallel_kernel
def pack_heads_rows(x, factor, out):
    """Every head of ``factor * x`` (``x`` (B, H, S, n)) packed by :func:`pack_rows`:
    ``out`` (B, H, ceil(S/MR)*MR*n) holds head (b, h) as ``MR``-row panels of its (S, n)
    matrix."""
    n_b, n_h, seq, n = x.shape
    xf = x.reshape(x.size)
    f = x.dtype.type(factor)
    for bh in prange(n_b * n_h):
        b = bh // n_h
        h = bh - b * n_h
        head = out[b, h]
        pack_rows(xf, _U(bh) * _U(seq * n), _U(n), _U(seq), _U(n), head)
        if f != x.dtype.type(1):
            for e in range(head.size):
                head[e] *= f
    return out
