"""Scaled dot-product attention on the GPU: the twins of :mod:`fastnn.kernels.attention`.

Same operations, signatures and conventions (shapes, broadcast masks given as 4-D arrays
whose axes of length 1 are read with stride 0, causal aligned to the top left, a row
whose every key is masked gives zeros and ``lse = -inf``); formulas in the CPU modules'
docstrings.  Straightforward tiled kernels, no atomics: every sum is taken in a fixed
order, so results depend on the shape only.

Forward: **one block per (batch, head, tile of** :data:`ROWS` **queries), a thread per
query**, with the online softmax over tiles of :data:`TILE` keys (:data:`TILE_FLOAT64`
in float64).  The block stages each key tile in shared memory :data:`DC` features at a
time (a warp reads consecutive features of a key: coalesced; every thread then reads the
same element: a broadcast); each thread keeps its row's running maximum and sum and the
tile's probabilities in registers, and rescales and accumulates its output row in place.

Backward, two launches (in that order, on the default stream):

* ``attention_dq``: the same layout over queries; per key tile it recomputes
  ``P = exp(x - lse)``, ``dP = dout . v`` and ``dS = scale * P * (dP - D)`` for its row
  and accumulates ``dq``; it also writes ``D_i = dout_i . out_i`` for the second launch.
* ``attention_dkv``: **one block per (batch, head, tile of** :data:`ROWS` **keys), a
  thread per key**, over tiles of queries staged in shared memory likewise: ``dv_j +=
  sum_i P_ij dout_i``, ``dk_j += sum_i dS_ij q_i``.

Boolean and additive masks are separate specialisations (the kernels take the mask flat,
a boolean or a float array, with its four broadcast strides); no mask is a size-0 float
array.
"""
import math

import numba
import numpy as np
from numba import cuda

from ._common import MAX_BLOCKS, jit_family

__all__ = ["attention_forward", "attention_backward"]

#: Threads per block: one query each in the forward and ``attention_dq``, one key each in
#: ``attention_dkv`` (one warp).
ROWS = 32
#: Rows of the other operand per shared-memory tile (keys, or queries in
#: ``attention_dkv``), float32.  Each thread keeps two values per row in registers: with
#: 32 rows the float64 ``attention_dq`` needed 255 registers and spilled.
TILE = 16
#: The same for float64: with 16 rows the float64 ``attention_dkv`` used 254-255 of the
#: 255 registers (no spill, but none to spare); with 8 it needs ~170 (sm_80/sm_90).
TILE_FLOAT64 = 8
#: Features per shared-memory chunk of a tile.
DC = 32


def _make_kernels(dtype, bool_mask):
    tile_rows = TILE if dtype == numba.float32 else TILE_FLOAT64
    zero = dtype(0)
    one = dtype(1)
    neg_inf = dtype(-np.inf)
    inf = dtype(np.inf)

    @cuda.jit(device=True, inline="always")
    def masked(x, mask, index):
        if bool_mask:
            return x if mask[index] else neg_inf
        return x + mask[index]

    @cuda.jit(device=True, inline="always")
    def stage(tile, src, b, h, r0, n_rows, c0, n_cols, tid, n_threads):
        """``tile[r, c] = src[b, h, r0 + r, c0 + c]`` (0 outside), all threads."""
        for e in range(tid, tile_rows * DC, n_threads):
            r = e // DC
            c = e - r * DC
            tile[r, c] = src[b, h, r0 + r, c0 + c] if r0 + r < n_rows and c0 + c < n_cols \
                else zero

    @cuda.jit(device=True, inline="always")
    def row_dots(acc, src, b, h, i, tile, c0, n_cols):
        """``acc[j] += sum_c src[b, h, i, c0 + c] * tile[j, c]`` for a chunk of features."""
        for c in range(DC):
            if c0 + c < n_cols:
                x = src[b, h, i, c0 + c]
                for j in range(tile_rows):
                    acc[j] += x * tile[j, c]

    @cuda.jit(device=True, inline="always")
    def tile_dots(acc, src, b, h, i, tile, other, r0, n_rows, n_cols, tid):
        """``acc[j] = src[b, h, i, :n_cols] . other[b, h, r0 + j, :n_cols]`` for the tile's
        rows (0 past ``n_rows``), staging ``other`` chunk by chunk; all threads."""
        for j in range(tile_rows):
            acc[j] = zero
        for c0 in range(0, n_cols, DC):
            stage(tile, other, b, h, r0, n_rows, c0, n_cols, tid, ROWS)
            cuda.syncthreads()
            row_dots(acc, src, b, h, i, tile, c0, n_cols)
            cuda.syncthreads()

    @cuda.jit(device=True, inline="always")
    def tile_accumulate(dst, b, h, i, active, decay, coef, tile, src, r0, n_rows, n_cols, tid):
        """``dst[b, h, i, c] = decay * dst[b, h, i, c] + sum_j coef[j] * src[b, h, r0 + j, c]``
        for ``c < n_cols`` (written by active threads), staging ``src``; all threads."""
        for c0 in range(0, n_cols, DC):
            stage(tile, src, b, h, r0, n_rows, c0, n_cols, tid, ROWS)
            cuda.syncthreads()
            if active:
                for c in range(min(DC, n_cols - c0)):
                    acc = dst[b, h, i, c0 + c] * decay
                    for j in range(tile_rows):
                        acc += coef[j] * tile[j, c]
                    dst[b, h, i, c0 + c] = acc
            cuda.syncthreads()

    @cuda.jit(device=True, inline="always")
    def locate(block, n_tiles, n_h):
        """``(b, h, first row)`` of a block's tile of ``ROWS`` rows."""
        bh = block // n_tiles
        b = bh // n_h
        return b, bh - b * n_h, (block - bh * n_tiles) * ROWS

    def attention_forward_kernel(q, k, v, mask, mask_strides, causal, scale, out, lse):
        n_b, n_h, sq, d = q.shape
        sk = k.shape[2]
        dv = v.shape[3]
        n_tiles = (sq + ROWS - 1) // ROWS
        tile = cuda.shared.array((tile_rows, DC), dtype)
        p = cuda.local.array(tile_rows, dtype)
        tid = cuda.threadIdx.x
        has_mask = mask.size > 0
        for block in range(cuda.blockIdx.x, n_b * n_h * n_tiles, cuda.gridDim.x):
            b, h, q0 = locate(block, n_tiles, n_h)
            i = q0 + tid
            active = i < sq
            ic = i if active else sq - 1            # inactive threads read a valid row
            m = neg_inf
            l = zero
            if active:
                for c in range(dv):
                    out[b, h, i, c] = zero
            k_end = min(sk, q0 + ROWS) if causal else sk
            mask_row = mask_strides[0] * b + mask_strides[1] * h + mask_strides[2] * ic
            for j0 in range(0, k_end, tile_rows):
                tile_dots(p, q, b, h, ic, tile, k, j0, sk, d, tid)
                best = neg_inf
                for j in range(tile_rows):
                    key = j0 + j
                    x = p[j] * scale
                    if has_mask and key < k_end:
                        x = masked(x, mask, mask_row + mask_strides[3] * key)
                    if key >= k_end or (causal and key > ic):
                        x = neg_inf
                    p[j] = x
                    best = x if x > best else best
                m_new = best if best > m else m
                shift = m_new if m_new != neg_inf else zero   # all masked so far: P = 0
                alpha = math.exp(m - shift)
                total = zero
                for j in range(tile_rows):
                    e = math.exp(p[j] - shift)
                    p[j] = e
                    total += e
                l = l * alpha + total
                m = m_new
                tile_accumulate(out, b, h, i, active, alpha, p, tile, v, j0, sk, dv, tid)
            if active:
                inv = zero if l == zero else one / l
                for c in range(dv):
                    out[b, h, i, c] *= inv
                lse[b, h, i] = neg_inf if l == zero else m + math.log(l)

    def attention_dq_kernel(dout, q, k, v, out, lse, mask, mask_strides, causal, scale,
                            delta, dq):
        n_b, n_h, sq, d = q.shape
        sk = k.shape[2]
        dv = v.shape[3]
        n_tiles = (sq + ROWS - 1) // ROWS
        tile = cuda.shared.array((tile_rows, DC), dtype)
        p = cuda.local.array(tile_rows, dtype)
        dp = cuda.local.array(tile_rows, dtype)
        tid = cuda.threadIdx.x
        has_mask = mask.size > 0
        for block in range(cuda.blockIdx.x, n_b * n_h * n_tiles, cuda.gridDim.x):
            b, h, q0 = locate(block, n_tiles, n_h)
            i = q0 + tid
            active = i < sq
            ic = i if active else sq - 1
            dot = zero
            for c in range(dv):
                dot += dout[b, h, ic, c] * out[b, h, ic, c]
            shift = lse[b, h, ic]
            shift = inf if shift == neg_inf else shift     # every key masked: P = 0
            if active:
                delta[b, h, i] = dot
                for c in range(d):
                    dq[b, h, i, c] = zero
            k_end = min(sk, q0 + ROWS) if causal else sk
            mask_row = mask_strides[0] * b + mask_strides[1] * h + mask_strides[2] * ic
            for j0 in range(0, k_end, tile_rows):
                tile_dots(p, q, b, h, ic, tile, k, j0, sk, d, tid)
                tile_dots(dp, dout, b, h, ic, tile, v, j0, sk, dv, tid)
                for j in range(tile_rows):
                    key = j0 + j
                    x = p[j] * scale
                    if has_mask and key < k_end:
                        x = masked(x, mask, mask_row + mask_strides[3] * key)
                    if key >= k_end or (causal and key > ic):
                        x = neg_inf
                    p[j] = scale * math.exp(x - shift) * (dp[j] - dot)    # dS
                tile_accumulate(dq, b, h, i, active, one, p, tile, k, j0, sk, d, tid)

    def attention_dkv_kernel(dout, q, k, v, lse, delta, mask, mask_strides, causal, scale,
                             dk, dv_out):
        n_b, n_h, sq, d = q.shape
        sk = k.shape[2]
        dv = v.shape[3]
        n_tiles = (sk + ROWS - 1) // ROWS
        tile = cuda.shared.array((tile_rows, DC), dtype)
        p = cuda.local.array(tile_rows, dtype)
        dp = cuda.local.array(tile_rows, dtype)
        tid = cuda.threadIdx.x
        has_mask = mask.size > 0
        for block in range(cuda.blockIdx.x, n_b * n_h * n_tiles, cuda.gridDim.x):
            b, h, k0 = locate(block, n_tiles, n_h)
            j = k0 + tid
            active = j < sk
            jc = j if active else sk - 1
            if active:
                for c in range(d):
                    dk[b, h, j, c] = zero
                for c in range(dv):
                    dv_out[b, h, j, c] = zero
            mask_col = mask_strides[0] * b + mask_strides[1] * h + mask_strides[3] * jc
            # under the causal mask no query before the first key of the tile sees it
            i_start = (k0 // tile_rows) * tile_rows if causal else 0
            for i0 in range(i_start, sq, tile_rows):
                tile_dots(p, k, b, h, jc, tile, q, i0, sq, d, tid)
                tile_dots(dp, v, b, h, jc, tile, dout, i0, sq, dv, tid)
                for i in range(tile_rows):
                    query = i0 + i
                    qc = query if query < sq else sq - 1
                    x = p[i] * scale
                    if has_mask:
                        x = masked(x, mask, mask_col + mask_strides[2] * qc)
                    if query >= sq or (causal and jc > query):
                        x = neg_inf
                    shift = lse[b, h, qc]
                    shift = inf if shift == neg_inf else shift
                    prob = math.exp(x - shift)
                    p[i] = prob                                          # P
                    dp[i] = scale * prob * (dp[i] - delta[b, h, qc])      # dS
                tile_accumulate(dv_out, b, h, j, active, one, p, tile, dout, i0, sq, dv, tid)
                tile_accumulate(dk, b, h, j, active, one, dp, tile, q, i0, sq, d, tid)

    suffix = "_boolmask" if bool_mask else ""
    functions = []
    for fn in (attention_forward_kernel, attention_dq_kernel, attention_dkv_kernel):
        fn.__name__ = fn.__qualname__ = fn.__name__[:-len("_kernel")] + suffix + "_kernel"
        functions.append(fn)
    return jit_family(functions, str(dtype))


_KERNELS = {(str(t), bool_mask): _make_kernels(t, bool_mask)
            for t in (numba.float32, numba.float64) for bool_mask in (False, True)}

_A = "{t}[:, :, :, ::1]"
_V = "{t}[:, :, ::1]"
_STRIDES = "UniTuple(int64, 4)"


def _signatures():
    templates = {
        "attention_forward": f"void({_A}, {_A}, {_A}, {{m}}, {_STRIDES}, boolean, {{t}}, {_A}, "
                             f"{_V})",
        "attention_dq": f"void({_A}, {_A}, {_A}, {_A}, {_A}, {_V}, {{m}}, {_STRIDES}, boolean, "
                        f"{{t}}, {_V}, {_A})",
        "attention_dkv": f"void({_A}, {_A}, {_A}, {_A}, {_V}, {_V}, {{m}}, {_STRIDES}, boolean, "
                         f"{{t}}, {_A}, {_A})",
    }
    entries = []
    for (t, bool_mask), kernels in _KERNELS.items():
        for name, template in templates.items():
            key = name + ("_boolmask" if bool_mask else "")
            mask_type = "boolean[::1]" if bool_mask else f"{t}[::1]"
            entries.append((f"{key}_{t}", kernels[key].py_func,
                            template.format(t=t, m=mask_type)))
    return entries


PTX_SIGNATURES = _signatures()


# --------------------------------------------------------------------------- launches
_EMPTY = {}


def _device_mask(mask, dtype):
    """``(mask, strides, bool?)``: the mask as a flat device array (a size-0 one for
    none) and its element strides broadcast to (B, H, S_q, S_k) (0 along axes of length 1)."""
    if mask.size == 0:
        key = np.dtype(dtype)
        if key not in _EMPTY:
            _EMPTY[key] = cuda.device_array(0, dtype=key)
        return _EMPTY[key], (0, 0, 0, 0), False
    if not hasattr(mask, "copy_to_host"):
        mask = cuda.to_device(np.ascontiguousarray(mask))
    if len(mask.shape) < 4:
        mask = mask.reshape((1,) * (4 - len(mask.shape)) + tuple(mask.shape))
    mb, mh, mq, mk = (int(n) for n in mask.shape)
    strides = (mh * mq * mk if mb > 1 else 0, mq * mk if mh > 1 else 0,
               mk if mq > 1 else 0, 1 if mk > 1 else 0)
    return mask.reshape(mask.size), strides, np.dtype(mask.dtype) == np.bool_


def _grid(n_blocks):
    return max(1, min(MAX_BLOCKS, n_blocks))


def attention_forward(q, k, v, mask, causal, scale, out, lse):
    """``out = softmax(scale * q @ k^T + mask) @ v`` and ``lse``
    (:func:`fastnn.kernels.attention.attention_forward`).  ``q``, ``k``, ``v``, ``out``,
    ``lse``: device arrays; ``mask``: a device array, or a size-0 array (host or device)
    for none.  Returns ``out``."""
    n_b, n_h, sq, _ = q.shape
    mask, strides, bool_mask = _device_mask(mask, q.dtype)
    kernels = _KERNELS[(str(q.dtype), bool_mask)]
    name = "attention_forward" + ("_boolmask" if bool_mask else "")
    kernels[name][_grid(n_b * n_h * -(-sq // ROWS)), ROWS](
        q, k, v, mask, strides, bool(causal), q.dtype.type(scale), out, lse)
    return out


def attention_backward(dout, q, k, v, out, lse, mask, causal, scale, dq, dk, dv):
    """Gradients of :func:`attention_forward`
    (:func:`fastnn.kernels.attention_backward.attention_backward`): ``attention_dq``
    (also ``D``), then ``attention_dkv``.  Returns ``(dq, dk, dv)``."""
    n_b, n_h, sq, _ = q.shape
    sk = k.shape[2]
    mask, strides, bool_mask = _device_mask(mask, q.dtype)
    kernels = _KERNELS[(str(q.dtype), bool_mask)]
    suffix = "_boolmask" if bool_mask else ""
    t = q.dtype.type
    delta = cuda.device_array((n_b, n_h, sq), dtype=q.dtype)
    kernels["attention_dq" + suffix][_grid(n_b * n_h * -(-sq // ROWS)), ROWS](
        dout, q, k, v, out, lse, mask, strides, bool(causal), t(scale), delta, dq)
    kernels["attention_dkv" + suffix][_grid(n_b * n_h * -(-sk // ROWS)), ROWS](
        dout, q, k, v, lse, delta, mask, strides, bool(causal), t(scale), dk, dv)
    return dq, dk, dv
