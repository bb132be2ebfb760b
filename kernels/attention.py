"""Scaled dot-product attention: the forward kernel (the backward is in
:mod:`.attention_backward`; the blocks, tiles and packing in :mod:`.attention_blocks`).

Shapes: ``q`` (B, H, S_q, d), ``k`` (B, H, S_k, d), ``v`` (B, H, S_k, d_v), ``out``
(B, H, S_q, d_v), ``lse`` (B, H, S_q); C-contiguous, one float dtype (float32 stays
float32).  A caller with (B, S, d) arrays adds a heads axis of length 1 (a free reshape).
Per batch ``b`` and head ``h`` (indices dropped)::

    x_ij   = scale * q_i . k_j + mask_ij        (-inf where masked)
    m_i    = max_j x_ij                         l_i = sum_j exp(x_ij - m_i)
    out_i  = sum_j exp(x_ij - m_i) v_j / l_i    (softmax(x) @ v)
    lse_i  = m_i + log l_i                      (kept for the backward)

as PyTorch's ``F.scaled_dot_product_attention`` (``scale`` is usually ``1/sqrt(d)``).

Masks.  ``causal``: key ``j`` is masked for query ``i`` when ``j > i`` (the
lower-triangular mask aligned to the top left, as PyTorch does when ``S_q != S_k``).
``mask``: a size-0 array for none, else a C-contiguous boolean array (``True`` =
attend; ``False`` gives ``-inf``) or an additive float array of ``q``'s dtype, which
broadcasts to (B, H, S_q, S_k) under NumPy's rules: it has at most 4 axes, missing
leading axes and axes of length 1 are broadcast (read with stride 0; a key-padding
mask (B, 1, 1, S_k) is never expanded to S_q x S_k).  Both masks may be given; they
combine.  A row whose every key is masked (``m_i = -inf``) has ``out_i = 0`` and
``lse_i = -inf``, as PyTorch >= 2.5 gives (earlier versions gave NaN); its gradients
are zero.

Algorithm (the online softmax of FlashAttention, Dao et al. 2022).  One task per
(batch, head, block of :data:`.attention_blocks.BLOCK_Q` queries), run in parallel;
``out``'s rows of the block accumulate ``sum_j exp(x_ij - m_i) v_j`` while the keys go
by in blocks of :data:`.attention_blocks.BLOCK_K`.  Per key block::

    S = Q_blk K_blk^T                     (register tiles, raw scores)
    x = scale * S + mask;  m' = max(m, rowmax x)
    P = exp(x - m');  alpha = exp(m - m')
    l = alpha l + rowsum P;  out_blk = alpha out_blk + P V_blk;  m = m'

and at the end ``out_blk /= l``, ``lse = m + log l``.  Under the causal mask the key
blocks past the block's last query are skipped, and the query blocks run in the order
0, n-1, 1, n-2, ... so both threads get equal work.  Each task's arithmetic is fixed by
the shape, so results are identical on any number of threads.

Memory: never the S_q x S_k matrix.  Beyond the outputs: with at least
:data:`SHORT_MIN_HEADS` heads, per running task one head's ``K^T`` panels and widened
``V`` (``S_k * (d + d_v)`` elements, plus padding); with fewer, ``K`` packed as panels of
its transpose for every head (the size of ``k``, plus padding to a multiple of the tile
width) and a copy of ``v`` widened to a multiple of the tile width when ``d_v`` is not
one; and per running task a block of scores (48 x 128 elements) and two rows of
statistics: O(B * H * S_k * (d + d_v)) in all.
"""
import numpy as np
from numba import prange

from . import vmath
from ._jit import kernel, parallel_kernel
from .attention_blocks import (BLOCK_K, BLOCK_Q, balanced_block, block_mask, block_matmul,
                               block_matmul_rows, cdiv, pack_head_transposed, pad_head,
                               mask_strides, pack_panels_transposed, pack_rows, pad_columns,
                               panel_width, softmax_rows)
from .simd_vectors import lanes
from .gemm_tiles import MR, NRV

__all__ = ["attention_forward", "attention_backward"]

_U = np.uint64
_internal = kernel(no_cpython_wrapper=True)


@_internal
def _scale_rows(c, c0, ldc, rows, n, factors):
    """``C[r, :n] *= factors[r]`` for ``r < rows`` (``C[r, j] = c[c0 + r*ldc + j]``),
    skipping rows whose factor is 1.  Flat indices: a row slice would cost two atomic
    reference-count updates per row."""
    one = c.dtype.type(1)
    for r in range(rows):
        f = factors[r]
        if f != one:
            base = c0 + r * ldc
            for j in range(base, base + n):
                c[j] *= f


@_internal
def _forward_block(t, n_h, n_qb, sq, sk, d, dv, q, kt, n_panels, vp, ldv, mask, ms, causal,
                   scale, out, lse):
    """Task ``t``: one (batch, head, query block); see the module docstring."""
    bh = t // n_qb
    ib = t - bh * n_qb
    if causal:
        ib = balanced_block(ib, n_qb)
    w = _U(NRV) * lanes(q)
    s, qp, stats = _forward_buffers(q, d)
    _forward_query_block(bh, ib, n_h, sq, sk, d, dv, q, kt, bh * n_panels * d * w, vp,
                         bh * sk * ldv, ldv, mask, ms, causal, scale, out, lse, s, qp, stats)


@_internal
def _forward_buffers(q, d):
    """A task's scratch: a block of scores, a packed block of ``Q``, three rows of
    statistics."""
    s = np.empty(BLOCK_Q * BLOCK_K, q.dtype)        # logits, then probabilities
    qp = np.empty(BLOCK_Q * d, q.dtype)              # scale * Q_blk, packed (MR-row panels)
    stats = np.empty((3, BLOCK_Q), q.dtype)
    return s, qp, stats


@_internal
def _forward_query_block(bh, ib, n_h, sq, sk, d, dv, q, kt, kt0, vp, v0, ldv, mask, ms,
                         causal, scale, out, lse, s, qp, stats):
    """Query block ``ib`` of head ``bh`` (flat index ``b * H + h``): ``K^T``'s panels of
    the head start at ``kt[kt0]``, its ``V`` (rows of ``ldv``) at ``vp[v0]``; ``s``,
    ``qp``, ``stats``: scratch from :func:`_forward_buffers`."""
    bq = _U(BLOCK_Q)
    bk = _U(BLOCK_K)
    mr = _U(MR)
    w = _U(NRV) * lanes(q)
    b = bh // n_h
    h = bh - b * n_h
    i0 = ib * bq
    mi = min(bq, sq - i0)
    q0 = (bh * sq + i0) * d
    o0 = (bh * sq + i0) * dv
    t_ = q.dtype.type
    neg_inf = t_(-np.inf)
    m = stats[0]            # running maximum
    l = stats[1]            # running sum
    alpha = stats[2]        # exp(m_old - m_new), then 1 / l
    for r in range(mi):
        m[r] = neg_inf
        l[r] = t_(0)
    # the scale is folded into Q: the product then gives the logits directly
    pack_rows(q, q0, d, mi, d, qp)
    for e in range(cdiv(mi, mr) * mr * d):
        qp[e] *= scale
    s_b, s_h, s_q, s_k = ms
    mask_row = b * s_b + h * s_h + i0 * s_q
    j_end = min(sk, i0 + mi) if causal else sk
    if j_end == _U(0):
        for e in range(o0, o0 + mi * dv):
            out[e] = t_(0)
    for j0 in range(_U(0), j_end, bk):
        nk = min(bk, j_end - j0)
        # x = scale * Q_blk @ K_blk^T + mask, from K's transposed panels
        block_matmul(mi, nk, d, qp, _U(0), d * mr, mr, kt, kt0 + (j0 // w) * d * w, d * w,
                     w, s, _U(0), bk, False)
        if causal or mask.size > 0:
            block_mask(s, bk, mi, nk, i0, j0, causal, mask, mask_row + j0 * s_k, s_q, s_k)
        softmax_rows(s, bk, mi, nk, m, l, alpha)
        # out_blk = alpha out_blk + P @ V_blk (P read in place); the first key block
        # writes out_blk
        first = j0 == _U(0)
        if not first:
            _scale_rows(out, o0, dv, mi, dv, alpha)
        block_matmul_rows(mi, dv, nk, s, _U(0), bk, vp, v0 + j0 * ldv, w, ldv, out, o0, dv,
                          not first)
    for r in range(mi):
        lr = l[r]
        # l = 0 only when every key is masked: output 0 (a NaN in l stays NaN)
        alpha[r] = t_(0) if lr == t_(0) else t_(1) / lr
        lse[bh * sq + i0 + r] = neg_inf if lr == t_(0) else m[r] + vmath.log(lr)
    _scale_rows(out, o0, dv, mi, dv, alpha)


@parallel_kernel
def _attention_forward(q, vp, kt, mask, causal, scale, out, lse):
    """The parallel loop over (batch, head, query block) tasks (arguments as
    :func:`attention_forward`, with ``K`` already packed into ``kt`` and ``v`` as ``vp``,
    whose rows are a multiple of the tile width)."""
    n_b, n_h, sq, d = q.shape
    sk = vp.shape[2]
    ldv = vp.shape[3]
    dv = out.shape[3]
    n_qb = cdiv(_U(sq), _U(BLOCK_Q))
    n_tasks = _U(n_b * n_h) * n_qb
    ms = mask_strides(mask)
    sc = q.dtype.type(scale)
    qf = q.reshape(q.size)
    ktf = kt.reshape(kt.size)
    vf = vp.reshape(vp.size)
    mf = mask.reshape(mask.size)
    of = out.reshape(out.size)
    lf = lse.reshape(lse.size)
    for t in prange(n_tasks):
        _forward_block(_U(t), _U(n_h), n_qb, _U(sq), _U(sk), _U(d), _U(dv), qf, ktf,
                       _U(kt.shape[2]), vf, _U(ldv), mf, ms, causal, sc, of, lf)
    return out


@parallel_kernel
def _attention_forward_short(q, k, v, mask, causal, scale, out, lse):
    """:func:`attention_forward` when there are at least :data:`SHORT_MIN_HEADS` heads
    (any ``S_k``; first written for ``S_k <= BLOCK_K``, hence the name): one task per
    head packs its ``K^T`` and widened ``V`` into buffers of its own (in L1 or L2:
    ``S_k * (d + d_v)`` elements, 256 KiB at S_k = 512, d = 64) and runs all its query
    blocks; no pass over the whole of ``k`` and ``v`` first (nor the page faults of a
    fresh B*H*S_k*d array on every call), one parallel region.  Each query block is
    computed exactly as by :func:`_attention_forward` (the work split never changes a
    result)."""
    n_b, n_h, sq, d = q.shape
    sk = k.shape[2]
    dv = v.shape[3]
    w = _U(NRV) * lanes(q)
    ldv = cdiv(_U(dv), w) * w
    n_panels = cdiv(_U(sk), w)
    n_qb = cdiv(_U(sq), _U(BLOCK_Q))
    ms = mask_strides(mask)
    sc = q.dtype.type(scale)
    qf = q.reshape(q.size)
    kf = k.reshape(k.size)
    vf = v.reshape(v.size)
    mf = mask.reshape(mask.size)
    of = out.reshape(out.size)
    lf = lse.reshape(lse.size)
    for bh in prange(n_b * n_h):
        s, qp, stats = _forward_buffers(q, _U(d))
        kt = np.empty(n_panels * _U(d) * w, q.dtype)
        vp = np.empty(_U(sk) * ldv, q.dtype)
        pack_head_transposed(kf, _U(bh) * _U(sk * d), _U(sk), _U(d), w, kt)
        pad_head(vf, _U(bh) * _U(sk * dv), _U(sk), _U(dv), ldv, vp)
        for ib in range(n_qb):
            _forward_query_block(_U(bh), _U(ib), _U(n_h), _U(sq), _U(sk), _U(d), _U(dv), qf,
                                 kt, _U(0), vp, _U(0), ldv, mf, ms, causal, sc, of, lf, s, qp,
                                 stats)
    return out


#: Heads from which the per-head paths (:func:`_attention_forward_short`, and
#: :func:`.attention_backward._attention_backward_short`) run: enough tasks for the
#: threads.  Which path runs depends on the shape only.
SHORT_MIN_HEADS = 8


def short_keys(batch_heads, seq_k):
    """Whether attention over ``seq_k`` keys takes the short-key path (one task per
    head, operands packed inside the task)."""
    return seq_k <= BLOCK_K and batch_heads >= SHORT_MIN_HEADS


# --------------------------------------------------------------------------- wrappers
_NO_MASK = {}


def as_mask4(mask, dtype):
    """``mask`` as the kernels take it: 4-D (leading axes of length 1 added: a view), or
    a size-0 4-D array of ``dtype`` for no mask (one compiled version serves no mask and
    additive masks)."""
    if mask is None or mask.size == 0:
        dtype = np.dtype(dtype)
        if dtype not in _NO_MASK:
            _NO_MASK[dtype] = np.empty((0, 0, 0, 0), dtype)
        return _NO_MASK[dtype]
    if mask.ndim < 4:
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    return mask


def padded(x, w):
    """``x`` (B, H, S, n) itself when ``n`` is a multiple of ``w``, else a copy widened
    with zero columns to the next multiple."""
    n = x.shape[3]
    if n % w == 0:
        return x
    return pad_columns(x, np.empty(x.shape[:3] + (-(-n // w) * w,), x.dtype))


def packed_transposed(x, w):
    """Panels of ``x``'s transpose (see :func:`.attention_blocks.pack_panels_transposed`)."""
    n_b, n_h, seq, n = x.shape
    return pack_panels_transposed(x, np.empty((n_b, n_h, -(-seq // w), n, w), x.dtype))


def attention_forward(q, k, v, mask, causal, scale, out, lse):
    """``out = softmax(scale * q @ k^T + mask) @ v`` per batch and head, and the rows'
    log-sum-exp ``lse`` (see the module docstring for shapes, masks and conventions).

    Parameters
    ----------
    q : (B, H, S_q, d);  k : (B, H, S_k, d);  v : (B, H, S_k, d_v)
        C-contiguous, float32 or float64, one dtype.
    mask : size-0 array (none), or a C-contiguous bool or float (q's dtype) array of at
        most 4 axes broadcastable to (B, H, S_q, S_k).
    causal : bool, mask key ``j > i`` for query ``i``.
    scale : float, the factor of the scores (``1/sqrt(d)`` by default in the API).
    out : (B, H, S_q, d_v), written.
    lse : (B, H, S_q), written: ``m_i + log l_i`` per row (``-inf`` for a row whose every
        key is masked).

    Returns ``out``.
    """
    mask = as_mask4(mask, q.dtype)
    # enough heads for the threads: per-head packing inside the tasks, whatever S_k (the
    # same arithmetic as the other path, measured 1.10x faster at (8, 8, 512, 64))
    if q.shape[0] * q.shape[1] >= SHORT_MIN_HEADS:
        _attention_forward_short(q, k, v, mask, bool(causal), float(scale), out, lse)
        return out
    w = panel_width(q.dtype)
    _attention_forward(q, padded(v, w), packed_transposed(k, w), mask,
                       bool(causal), float(scale), out, lse)
    return out


from .attention_backward import attention_backward  # noqa: E402
