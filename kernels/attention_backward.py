"""Scaled dot-product attention: the backward kernel (the forward, the shapes and the mask
conventions are in :mod:`.attention`).

Given ``dout = dL/dout`` and the forward's ``out`` and ``lse``, per batch and head
(FlashAttention's backward, Dao et al. 2022: the probabilities are recomputed block by
block from ``lse`` instead of being stored)::

    P_ij  = exp(x_ij - lse_i)             (x as in the forward; 0 where masked)
    dv_j  = sum_i P_ij dout_i
    dP_ij = dout_i . v_j
    D_i   = dout_i . out_i                (= sum_j P_ij dP_ij)
    dS_ij = scale * P_ij (dP_ij - D_i)
    dq_i  = sum_j dS_ij k_j               dk_j = sum_i dS_ij q_i

A row whose every key is masked (``lse_i = -inf``) has ``P_i = 0``, so ``dq_i = 0`` and
it adds nothing to ``dk``/``dv``; a key no query attends to gets ``dk_j = dv_j = 0``.

Work split, deterministic: the tasks are (batch, head, group of key blocks).  A task owns
the rows of ``dk`` and ``dv`` of its key blocks (block ``j`` of :data:`BLOCK_K` keys
accumulates over the query blocks in order), so no two tasks write the same element.
``dq_i`` sums over every key block: with one group per head (``G = 1``, when there are
at least :data:`.attention_blocks.MIN_TASKS` heads in the batch) the task adds to
``dq`` directly, key block by key block in order; with fewer heads each head's key blocks
are dealt round-robin to ``G = ceil(MIN_TASKS / (B*H))`` groups (at most one per key
block), each summing into its own copy of ``dq``, and the copies are added in group
order.  ``G`` depends on the shape only, so results are identical on any number of
threads.  Per (key block, query block)::

    S   = Q_i K_j^T;  P = exp(scale * S + mask - lse)       (register tiles)
    dV_j += P^T dO_i;  dP = dO_i V_j^T;  dS = scale * P * (dP - D)
    dK_j += dS^T Q_i;  dQ_i += dS K_j

Under the causal mask a key block starts at the first query block that reaches it.

With one group per head (``G = 1``) each task packs its head's operands into buffers of
its own (:func:`_attention_backward_short`: ``7 * S * d`` elements per running task, no
passes over the whole arrays first); the layout and the arithmetic are the same.

Memory beyond the outputs, when ``G > 1``: ``K`` and ``V`` packed as panels of their
transposes, copies of ``q``, ``k`` and ``dout`` widened to a multiple of the tile width
when ``d`` (``d_v``) is not one, ``D`` (B, H, S_q), the ``G - 1`` extra copies of ``dq``
(together at most ``MIN_TASKS`` heads' worth: ``MIN_TASKS * S_q * d`` elements), and per
running task two blocks of 48 x 128 elements: O(B * H * S * d) in all, never S_q x S_k.
"""
import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel
from .attention_blocks import (BLOCK_K, BLOCK_Q, MIN_TASKS, block_mask, block_matmul,
                               block_matmul_rows, cdiv,
                               exp_block, mask_strides, pack_head_transposed, pack_heads_rows,
                               pack_rows, pad_head, panel_width)
from .gemm_tiles import MR, NRV
from .simd_vectors import lanes

__all__ = ["attention_backward", "key_groups"]

_U = np.uint64
_internal = kernel(no_cpython_wrapper=True)
_REDUCE_FLAGS = {"contract", "reassoc"}


def key_groups(batch_heads, seq_k):
    """``G``: the groups of key blocks per head (see the module docstring)."""
    n_kb = -(-seq_k // BLOCK_K)
    return max(1, min(n_kb, -(-MIN_TASKS // max(batch_heads, 1))))


@kernel(fastmath=_REDUCE_FLAGS)
def _dot(a, a0, b, b0, n):
    """``sum_c a[a0 + c] * b[b0 + c]`` for ``c < n``."""
    total = a.dtype.type(0)
    for c in range(n):
        total += a[a0 + c] * b[b0 + c]
    return total


@kernel(fastmath={"contract"})
def _ds_block(s, dp, ld, rows, n, delta, d0, scale):
    """``dS = scale * P * (dP - D)`` in place of ``P``: ``s[r*ld + c] = scale *
    s[r*ld + c] * (dp[r*ld + c] - delta[d0 + r])`` for ``r < rows``, ``c < n``."""
    for r in range(rows):
        base = r * ld
        dr = delta[d0 + r]
        for c in range(n):
            s[base + c] = scale * s[base + c] * (dp[base + c] - dr)


@_internal
def _zero(x, x0, n):
    zero = x.dtype.type(0)
    for e in range(x0, x0 + n):
        x[e] = zero


@_internal
def _backward_task(t, groups, n_h, sq, sk, d, dv, qpk, qp, ldq, kp, ldk, kt, vt, n_panels,
                   dopk, dop, lddo, shifts, delta, mask, ms, causal, scale, dq, dq_parts, dk,
                   dvg):
    """Task ``t``: the key blocks of group ``t % groups`` of head ``t // groups`` (see the
    module docstring).  ``qpk``: ``scale * Q`` as ``MR``-row panels per head; ``dopk``:
    ``dO`` likewise; ``qp``, ``kp``, ``dop``: ``Q``, ``K``, ``dO`` row-major with rows of
    ``ldq``, ``ldk``, ``lddo`` (multiples of the tile width); ``kt``, ``vt``: panels of
    ``K^T``, ``V^T``; ``shifts``: ``lse`` with ``-inf`` replaced by ``+inf``."""
    mr = _U(MR)
    w = _U(NRV) * lanes(qp)
    bh = t // groups
    g = t - bh * groups
    s, dp, sums = _backward_buffers(qp)
    _backward_head(bh, g, groups, n_h, sq, sk, d, dv,
                   qpk, bh * cdiv(sq, mr) * mr * d, qp, ldq, kp, ldk,
                   kt, bh * n_panels * d * w, vt, bh * n_panels * dv * w,
                   dopk, bh * cdiv(sq, mr) * mr * dv, dop, lddo, shifts, delta, bh * sq,
                   bh * sk, mask, ms, causal, scale, dq, dq_parts, dk, dvg, s, dp, sums)


@_internal
def _backward_buffers(like):
    """A task's scratch: ``P`` (then ``dS``), whose transpose is read in place and whose
    last panel reads up to ``MR`` past a row, ``dP``, and a row of sums."""
    s = np.empty(BLOCK_Q * BLOCK_K + MR, like.dtype)
    dp = np.empty(BLOCK_Q * BLOCK_K, like.dtype)
    sums = np.empty(BLOCK_Q, like.dtype)
    return s, dp, sums


@_internal
def _backward_head(bh, g, groups, n_h, sq, sk, d, dv, qpk, qh, qp, ldq, kp, ldk, kt, kt_h,
                   vt, vt_h, dopk, doh, dop, lddo, shifts, delta, row0, key0, mask, ms,
                   causal, scale, dq, dq_parts, dk, dvg, s, dp, sums):
    """Key group ``g`` of head ``bh``, with the head's operands where the caller put them:
    its packed ``scale * Q`` and ``dO`` panels at ``qpk[qh]``, ``dopk[doh]``; ``K^T`` and
    ``V^T`` panels at ``kt[kt_h]``, ``vt[vt_h]``; row ``i`` of ``Q``, ``dO``, ``D`` and
    the shifts at row ``row0 + i`` of ``qp``, ``dop``, ``delta``, ``shifts``; key ``j``
    at row ``key0 + j`` of ``kp``.  ``s``, ``dp``, ``sums``: :func:`_backward_buffers`."""
    bq = _U(BLOCK_Q)
    bk = _U(BLOCK_K)
    mr = _U(MR)
    w = _U(NRV) * lanes(qp)
    b = bh // n_h
    h = bh - b * n_h
    n_qb = cdiv(sq, bq)
    n_kb = cdiv(sk, bk)
    n_bh = _U(dq.size) // (sq * d)
    # group 0 sums into dq, group g > 0 into its own copy, dq_parts[g - 1]
    target = dq if g == _U(0) else dq_parts
    dq0 = (bh if g == _U(0) else (g - _U(1)) * n_bh + bh) * sq * d
    s_b, s_h, s_q, s_k = ms
    _zero(target, dq0, sq * d)
    for jb in range(g, n_kb, groups):
        j0 = jb * bk
        nk = min(bk, sk - j0)
        k0 = bh * sk + j0                   # first key row of the block in dk, dv
        kr = (key0 + j0) * ldk              # ... and its row in kp
        _zero(dk, k0 * d, nk * d)
        _zero(dvg, k0 * dv, nk * dv)
        kt0 = kt_h + (j0 // w) * d * w
        vt0 = vt_h + (j0 // w) * dv * w
        for ib in range(j0 // bq if causal else _U(0), n_qb):
            i0 = ib * bq
            mi = min(bq, sq - i0)
            r0 = row0 + i0                  # first query row of the block in qp, dop, D
            nke = min(nk, i0 + mi - j0) if causal else nk
            # P = exp(scale * Q_i K_j^T + mask - lse)
            block_matmul(mi, nke, d, qpk, qh + (i0 // mr) * d * mr, d * mr, mr, kt, kt0,
                         d * w, w, s, _U(0), bk, False)
            if causal or mask.size > 0:
                block_mask(s, bk, mi, nke, i0, j0, causal, mask,
                           b * s_b + h * s_h + i0 * s_q + j0 * s_k, s_q, s_k)
            exp_block(s, bk, mi, nke, shifts, r0)
            # dV_j += P^T dO_i  (P^T read in place: panels of MR columns of P)
            block_matmul(nke, dv, mi, s, _U(0), mr, bk, dop, r0 * lddo, w, lddo, dvg, k0 * dv,
                         dv, True)
            # dP = dO_i V_j^T, then dS = scale * P * (dP - D_i) in place of P
            block_matmul(mi, nke, dv, dopk, doh + (i0 // mr) * dv * mr, dv * mr, mr, vt, vt0,
                         dv * w, w, dp, _U(0), bk, False)
            _ds_block(s, dp, bk, mi, nke, delta, r0, scale)
            # dK_j += dS^T Q_i (dS^T in place);  dQ_i += dS K_j (dS read row-major)
            block_matmul(nke, d, mi, s, _U(0), mr, bk, qp, r0 * ldq, w, ldq, dk, k0 * d, d,
                         True)
            block_matmul_rows(mi, d, nke, s, _U(0), bk, kp, kr, w, ldk, target,
                              dq0 + i0 * d, d, True)


@parallel_kernel
def _attention_backward(dout, qpk, qp, kp, kt, vt, dopk, dop, out, lse, mask, causal, scale,
                        stats, groups, dq_parts, dq, dk, dv):
    """The parallel loops: ``D`` and the shifts, the (head, key group) tasks, then the
    sum of the groups' copies of ``dq`` (``dq_parts`` is (G - 1, B, H, S_q, d): group 0
    sums into ``dq`` itself).  ``stats``: (2, B*H*S_q) scratch for ``D`` and the
    shifts."""
    n_b, n_h, sq, d = dq.shape
    sk = kp.shape[2]
    dvw = dv.shape[3]
    n_bh = n_b * n_h
    dof = dout.reshape(dout.size)
    of = out.reshape(out.size)
    lf = lse.reshape(lse.size)
    delta = stats[0]
    shifts = stats[1]
    inf = dq.dtype.type(np.inf)
    for row in prange(n_bh * sq):
        delta[row] = _dot(dof, _U(row) * _U(dvw), of, _U(row) * _U(dvw), _U(dvw))
        # every key masked: lse = -inf; shifting by +inf gives P = 0
        shifts[row] = inf if lf[row] == -inf else lf[row]
    ms = mask_strides(mask)
    sc = dq.dtype.type(scale)
    parts = dq_parts.reshape(dq_parts.size)
    dqf = dq.reshape(dq.size)
    dkf = dk.reshape(dk.size)
    dvf = dv.reshape(dv.size)
    for t in prange(n_bh * groups):
        _backward_task(_U(t), _U(groups), _U(n_h), _U(sq), _U(sk), _U(d), _U(dvw),
                       qpk.reshape(qpk.size), qp.reshape(qp.size), _U(qp.shape[3]),
                       kp.reshape(kp.size), _U(kp.shape[3]), kt.reshape(kt.size),
                       vt.reshape(vt.size), _U(kt.shape[2]), dopk.reshape(dopk.size),
                       dop.reshape(dop.size), _U(dop.shape[3]), shifts, delta,
                       mask.reshape(mask.size), ms, causal, sc, dqf, parts, dkf, dvf)
    if groups > 1:
        size = n_bh * sq * d
        for e0 in prange((size + 4095) // 4096):
            lo = e0 * 4096
            hi = min(lo + 4096, size)
            for e in range(lo, hi):
                total = dqf[e]
                for g in range(groups - 1):
                    total += parts[g * size + e]
                dqf[e] = total
    return dq


@parallel_kernel
def _attention_backward_short(dout, q, k, v, out, lse, mask, causal, scale, dq, dk, dv):
    """:func:`attention_backward` when each head is one task (``G = 1``: at least
    ``MIN_TASKS`` heads, or one key block; first written for ``S_k <= BLOCK_K``, hence
    the name): one task per head computes the head's ``D`` and shifts and packs its
    operands into buffers of its own (``O(S * d)``: 7 * 512 * 64 float32, 896 KiB, at
    S = 512, in L2), then runs :func:`_backward_head` on them (one key group); no passes
    over the whole arrays first, one parallel region, and the same arithmetic as
    :func:`_attention_backward`."""
    n_b, n_h, sq, d = q.shape
    sk = k.shape[2]
    dvw = v.shape[3]
    mr = _U(MR)
    w = _U(NRV) * lanes(q)
    ldq = cdiv(_U(d), w) * w
    lddo = cdiv(_U(dvw), w) * w
    n_panels = cdiv(_U(sk), w)
    rows = cdiv(_U(sq), mr) * mr
    ms = mask_strides(mask)
    sc = q.dtype.type(scale)
    inf = q.dtype.type(np.inf)
    dof = dout.reshape(dout.size)
    qf = q.reshape(q.size)
    kf = k.reshape(k.size)
    vf = v.reshape(v.size)
    of = out.reshape(out.size)
    lf = lse.reshape(lse.size)
    mf = mask.reshape(mask.size)
    dqf = dq.reshape(dq.size)
    dkf = dk.reshape(dk.size)
    dvf = dv.reshape(dv.size)
    for bh in prange(n_b * n_h):
        s, dp, sums = _backward_buffers(q)
        qpk = np.empty(rows * _U(d), q.dtype)
        dopk = np.empty(rows * _U(dvw), q.dtype)
        qp = np.empty(_U(sq) * ldq, q.dtype)
        dop = np.empty(_U(sq) * lddo, q.dtype)
        kp = np.empty(_U(sk) * ldq, q.dtype)
        kt = np.empty(n_panels * _U(d) * w, q.dtype)
        vt = np.empty(n_panels * _U(dvw) * w, q.dtype)
        stats = np.empty((2, sq), q.dtype)
        delta = stats[0]
        shifts = stats[1]
        row = _U(bh) * _U(sq)
        for i in range(sq):
            delta[i] = _dot(dof, (row + _U(i)) * _U(dvw), of, (row + _U(i)) * _U(dvw), _U(dvw))
            # every key masked: lse = -inf; shifting by +inf gives P = 0
            shifts[i] = inf if lf[row + _U(i)] == -inf else lf[row + _U(i)]
        q0 = row * _U(d)
        do0 = row * _U(dvw)
        pack_rows(qf, q0, _U(d), _U(sq), _U(d), qpk)
        for e in range(qpk.size):
            qpk[e] *= sc
        pack_rows(dof, do0, _U(dvw), _U(sq), _U(dvw), dopk)
        pad_head(qf, q0, _U(sq), _U(d), ldq, qp)
        pad_head(dof, do0, _U(sq), _U(dvw), lddo, dop)
        pad_head(kf, _U(bh) * _U(sk * d), _U(sk), _U(d), ldq, kp)
        pack_head_transposed(kf, _U(bh) * _U(sk * d), _U(sk), _U(d), w, kt)
        pack_head_transposed(vf, _U(bh) * _U(sk * dvw), _U(sk), _U(dvw), w, vt)
        _backward_head(_U(bh), _U(0), _U(1), _U(n_h), _U(sq), _U(sk), _U(d), _U(dvw),
                       qpk, _U(0), qp, ldq, kp, ldq, kt, _U(0), vt, _U(0), dopk, _U(0), dop,
                       lddo, shifts, delta, _U(0), _U(0), mf, ms, causal, sc, dqf, dqf, dkf,
                       dvf, s, dp, sums)
    return dq


def packed_rows(x, factor):
    """Every head of ``factor * x`` (``x`` (B, H, S, n)) as ``MR``-row panels
    (:func:`.attention_blocks.pack_heads_rows`)."""
    n_b, n_h, seq, n = x.shape
    return pack_heads_rows(x, float(factor),
                           np.empty((n_b, n_h, -(-seq // MR) * MR * n), x.dtype))


def attention_backward(dout, q, k, v, out, lse, mask, causal, scale, dq, dk, dv):
    """Gradients of :func:`.attention.attention_forward` (formulas in the module
    docstring).

    Parameters
    ----------
    dout : (B, H, S_q, d_v), the gradient of the loss with respect to ``out``.
    q, k, v, mask, causal, scale : as given to the forward.
    out, lse : (B, H, S_q, d_v) and (B, H, S_q), as the forward wrote them.
    dq : (B, H, S_q, d);  dk : (B, H, S_k, d);  dv : (B, H, S_k, d_v), written
        (overwritten, not accumulated).

    Returns ``(dq, dk, dv)``.
    """
    from .attention import as_mask4, packed_transposed, padded, short_keys
    n_b, n_h, sq, d = q.shape
    mask = as_mask4(mask, q.dtype)
    # one task per head (G = 1): pack inside the tasks, whatever S_k.  The passes over
    # the whole arrays (and the page faults of four fresh B*H*S*d buffers per call) cost
    # ~20% of the backward at (8, 8, 512, 64); the arithmetic is the same
    if short_keys(n_b * n_h, k.shape[2]) or key_groups(n_b * n_h, k.shape[2]) == 1:
        _attention_backward_short(dout, q, k, v, out, lse, mask, bool(causal), float(scale),
                                  dq, dk, dv)
        return dq, dk, dv
    w = panel_width(q.dtype)
    groups = key_groups(n_b * n_h, k.shape[2])
    parts = np.empty((groups - 1,) + dq.shape, dq.dtype)
    _attention_backward(dout, packed_rows(q, scale), padded(q, w), padded(k, w),
                        packed_transposed(k, w), packed_transposed(v, w),
                        packed_rows(dout, 1.0), padded(dout, w), out, lse,
                        mask, bool(causal), float(scale),
                        np.empty((2, n_b * n_h * sq), q.dtype), groups, parts, dq, dk, dv)
    return dq, dk, dv
