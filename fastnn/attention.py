"""Scaled dot-product attention: the public functions, and the helpers layers call.

:func:`scaled_dot_product_attention` and :func:`scaled_dot_product_attention_backward`
validate and convert user arrays, then run the backend's ``attention_forward`` (and
``attention_backward``) operations (Numba: the online-softmax kernels of
``fastnn/kernels/attention.py``, which never hold the ``S_q x S_k`` score matrix: peak
extra memory O(batch * heads * seq * d), the bound in
:func:`scaled_dot_product_attention`'s notes, tested at seq = 4096).
:func:`attention_forward` / :func:`attention_backward` run the operations on arrays that
are already in the kernels' layout and in the backend's memory, allocating the outputs:
what a layer's ``_forward`` / ``_backward`` needs.  :func:`attention_mask` turns a user
mask into the form the operations take.
"""
import math

import numpy as np

from .backends.memory import backend_for, is_device_array
from .validation import FLOAT_DTYPES, check_number

__all__ = ["scaled_dot_product_attention", "scaled_dot_product_attention_backward",
           "attention_forward", "attention_backward", "attention_mask"]

_NO_MASK = {dt: np.empty((0, 0, 0, 0), dt) for dt in FLOAT_DTYPES}


def _default_scale(scale, d):
    if scale is None:
        return 1.0 / math.sqrt(d)
    return check_number(scale, "scale")


def attention_forward(backend, q, k, v, mask=None, causal=False, scale=None):
    """``(out, lse)`` of the backend's ``attention_forward`` operation, outputs allocated
    in the backend's memory.

    ``q`` (B, H, S_q, d), ``k`` (B, H, S_k, d), ``v`` (B, H, S_k, d_v): C-contiguous
    arrays of one float dtype in ``backend``'s memory (not checked: this is the layers'
    path; a layer validates its own input).  ``mask``: None, or what
    :func:`attention_mask` returns.  ``scale``: None for ``1/sqrt(d)``.  Returns ``out``
    (B, H, S_q, d_v) and ``lse`` (B, H, S_q), the rows' log-sum-exp that
    :func:`attention_backward` needs.
    """
    n_b, n_h, sq, d = (int(n) for n in q.shape)
    out = backend.empty((n_b, n_h, sq, int(v.shape[3])), q.dtype)
    lse = backend.empty((n_b, n_h, sq), q.dtype)
    backend.attention_forward(q, k, v, _NO_MASK[np.dtype(q.dtype)] if mask is None else mask,
                              bool(causal), _default_scale(scale, d), out, lse)
    return out, lse


def attention_backward(backend, dout, q, k, v, out, lse, mask=None, causal=False, scale=None):
    """``(dq, dk, dv)``: the gradients of :func:`attention_forward` for ``dout`` (B, H,
    S_q, d_v), from the forward's inputs and its ``(out, lse)``; outputs allocated in the
    backend's memory (overwritten, not accumulated).  Same conventions as the forward."""
    d = int(q.shape[3])
    dq = backend.empty(tuple(int(n) for n in q.shape), q.dtype)
    dk = backend.empty(tuple(int(n) for n in k.shape), q.dtype)
    dv = backend.empty(tuple(int(n) for n in v.shape), q.dtype)
    backend.attention_backward(dout, q, k, v, out, lse,
                               _NO_MASK[np.dtype(q.dtype)] if mask is None else mask,
                               bool(causal), _default_scale(scale, d), dq, dk, dv)
    return dq, dk, dv


# --------------------------------------------------------------------------- validation
def _shape_text(shape):
    return "(" + ", ".join(str(n) for n in shape) + ")"


def _check_qkv(q, k, v):
    """``(q, k, v, three_d)``: the arrays as they are (host or device), checked."""
    arrays = {}
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not is_device_array(x):
            if isinstance(x, (str, bytes)):
                raise TypeError(f"{name} must be an array, got a {type(x).__name__}")
            x = np.asarray(x)
        if np.dtype(x.dtype) not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float32 or float64 array, got dtype "
                            f"{x.dtype}; convert it with .astype(np.float32)")
        if len(x.shape) not in (3, 4):
            raise ValueError(f"{name} must be (batch, seq, d) or (batch, heads, seq, d), got "
                             f"shape {_shape_text(x.shape)}")
        if 0 in x.shape:
            raise ValueError(f"{name} has an empty axis (shape {_shape_text(x.shape)})")
        arrays[name] = x
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    dtypes = {np.dtype(x.dtype).name for x in (q, k, v)}
    if len(dtypes) > 1:
        raise TypeError(f"q, k and v must have one dtype, got {q.dtype}, {k.dtype} and "
                        f"{v.dtype}; convert them with .astype(...)")
    # plain tuples: the CUDA simulator's device-array shapes reject negative indices
    qs, ks, vs = (tuple(int(n) for n in x.shape) for x in (q, k, v))
    shapes = f"{_shape_text(qs)}, {_shape_text(ks)} and {_shape_text(vs)}"
    if not len(qs) == len(ks) == len(vs):
        raise ValueError(f"q, k and v must have the same number of axes, got shapes {shapes}")
    lead = "(batch, heads)" if len(qs) == 4 else "batch"
    if not qs[:-2] == ks[:-2] == vs[:-2]:
        raise ValueError(f"q, k and v must agree on {lead}: got shapes {shapes}")
    if qs[-1] != ks[-1]:
        raise ValueError(f"q and k must have the same feature size d (their last axis): got "
                         f"{qs[-1]} and {ks[-1]}")
    if ks[-2] != vs[-2]:
        raise ValueError(f"k and v must have the same sequence length (their second-last "
                         f"axis): got {ks[-2]} and {vs[-2]}")
    return q, k, v, len(q.shape) == 3


def _host_array(x, name, finite):
    """A C-contiguous, writable host copy or view of ``x``, scanned for NaN/Inf."""
    out = np.ascontiguousarray(x)
    if not out.flags.writeable:
        out = out.copy()     # Numba types read-only arrays separately (a second compile)
    if finite and not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or Inf ({np.count_nonzero(~np.isfinite(out))} "
                         f"value(s))")
    return out


def _collapse_broadcast(mask):
    """``mask`` with every axis that repeats one value by stride 0 (``np.broadcast_to``)
    cut to length 1, so making it contiguous never expands it."""
    index = tuple(slice(0, 1) if stride == 0 and n > 1 else slice(None)
                  for n, stride in zip(mask.shape, mask.strides))
    return mask[index]


def attention_mask(mask, q_shape, k_shape, dtype, backend, three_d=False):
    """``mask`` as the attention operations take it, in ``backend``'s memory.

    ``mask``: None (no mask), a boolean array (``True`` = attend) or a float array added
    to the scaled scores (``-inf`` masks; converted to ``dtype``), broadcastable under
    NumPy's rules to (B, H, S_q, S_k) (``three_d``: to (B, S_q, S_k), the inputs having
    no heads axis).  Axes of length 1, missing leading axes and broadcast views stay
    unexpanded: a key-padding mask (B, 1, 1, S_k) costs B * S_k elements.  Returns a
    C-contiguous 4-D array (``None`` for no mask).
    """
    if mask is None:
        return None
    device = is_device_array(mask)
    if not device:
        mask = np.asarray(mask)
    kind = np.dtype(mask.dtype).kind
    if kind not in "bf":
        raise TypeError(f"mask must be boolean (True = attend) or float (added to the "
                        f"scores), got dtype {mask.dtype}; for a 0/1 mask use "
                        f"mask.astype(bool)")
    n_b, n_h, sq = (int(n) for n in q_shape[:3])
    sk = int(k_shape[2])
    target = (n_b, sq, sk) if three_d else (n_b, n_h, sq, sk)
    names = ("batch", "S_q", "S_k") if three_d else ("batch", "heads", "S_q", "S_k")
    shape = tuple(int(n) for n in mask.shape)
    if len(shape) > len(target) or any(
            m not in (1, t) for m, t in zip(reversed(shape), reversed(target))):
        raise ValueError(f"mask of shape {_shape_text(shape)} does not broadcast to "
                         f"({', '.join(names)}) = {_shape_text(target)}: each of its axes, "
                         f"aligned from the right, must be 1 or the full length")
    if device:
        if kind == "f" and np.dtype(mask.dtype) != np.dtype(dtype):
            raise TypeError(f"mask is a {mask.dtype} device array; the inputs are {dtype}")
    else:
        mask = _collapse_broadcast(mask)
        if kind == "f":
            with np.errstate(over="ignore"):
                mask = mask.astype(dtype, copy=False)
            if np.isnan(mask).any() or np.isposinf(mask).any():
                raise ValueError("an additive mask must hold finite values or -inf "
                                 "(found NaN or +inf)")
        mask = _host_array(mask, "mask", finite=False)
    if three_d and len(shape) == 3:
        mask = mask.reshape((shape[0], 1) + shape[1:])
    if len(mask.shape) < 4:
        mask = mask.reshape((1,) * (4 - len(mask.shape)) + tuple(mask.shape))
    if not device and backend.memory != "host":
        mask = backend.asarray(mask, mask.dtype)
    return mask


# --------------------------------------------------------------------------- the functions
def _prepare(q, k, v, mask, causal, scale):
    """Validate and convert the arguments of the public functions: ``(backend, q, k, v,
    mask, causal, scale, three_d)`` with 4-D C-contiguous inputs in the backend's memory
    and the mask as :func:`attention_mask` returns it."""
    q, k, v, three_d = _check_qkv(q, k, v)
    backend = backend_for(q if is_device_array(q) else (k if is_device_array(k) else v))
    dtype = np.dtype(q.dtype)
    if backend.memory == "host":
        q, k, v = (_host_array(x, name, finite=True)
                   for x, name in ((q, "q"), (k, "k"), (v, "v")))
    else:
        q, k, v = (backend.asarray(x, dtype) for x in (q, k, v))
    if three_d:
        q, k, v = (_add_heads_axis(x) for x in (q, k, v))
    scale = _default_scale(scale, int(q.shape[3]))
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be True or False, got {causal!r}")
    mask = attention_mask(mask, q.shape, k.shape, dtype, backend, three_d)
    return backend, q, k, v, mask, bool(causal), scale, three_d


def _add_heads_axis(x):
    return x.reshape((x.shape[0], 1) + tuple(x.shape[1:]))


def _drop_heads_axis(x):
    return x.reshape((x.shape[0],) + tuple(x.shape[2:]))


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, scale=None):
    """``softmax(scale * q @ k^T + mask) @ v``, as PyTorch's
    ``torch.nn.functional.scaled_dot_product_attention`` (forward; the gradients are
    :func:`scaled_dot_product_attention_backward`).

    Per batch and head, with ``x_ij = scale * q_i . k_j`` (+ the mask): ``out_i =
    sum_j softmax_j(x_i) v_j``.  Runs on the current backend (the CUDA backend for device
    arrays) with kernels that process queries in blocks with a running (online) softmax:
    extra memory O(batch * heads * seq * d), never the seq x seq score matrix (see Notes).

    Parameters
    ----------
    q : array, (batch, heads, S_q, d) or (batch, S_q, d)
    k : array, (batch, heads, S_k, d) or (batch, S_k, d)
    v : array, (batch, heads, S_k, d_v) or (batch, S_k, d_v)
        float32 or float64, one dtype for all three (float32 stays float32); ``S_q`` and
        ``S_k`` may differ.  NaN or Inf is an error.
    mask : array, optional
        Boolean (``True`` = attend, ``False`` = masked) or float (added to the scaled
        scores; ``-inf`` masks), broadcastable to (batch, heads, S_q, S_k) (to (batch,
        S_q, S_k) for 3-D inputs), e.g. (S_q, S_k), (batch, 1, S_q, S_k) or a key-padding
        mask (batch, 1, 1, S_k).  Never expanded in memory.
    causal : bool, default False
        Query ``i`` attends to keys ``j <= i`` only (the lower triangle aligned to the top
        left when ``S_q != S_k``, as PyTorch's ``is_causal``).  Combines with ``mask``.
    scale : float, optional
        The factor of the scores; default ``1 / sqrt(d)``.

    Returns
    -------
    out : array, (batch, heads, S_q, d_v) or (batch, S_q, d_v)
        A NumPy array on the host backends (a device array on the CUDA backend).

    Notes
    -----
    **Fully masked rows.**  A query whose every key is masked (by ``mask``, or by
    ``causal`` combined with it) gets an output of zeros and zero gradients: it adds
    nothing to the gradients of ``k`` and ``v``.  PyTorch's
    ``F.scaled_dot_product_attention`` does the same since 2.5 (its ``_safe_softmax``);
    earlier versions, and ``softmax(scores) @ v`` written out, give NaN there.

    **Large scores.**  Rows of very large scores stay finite (the row maximum is
    subtracted before ``exp``).

    **Memory** (the Numba backend).  Beyond its inputs and outputs, a forward plus a
    backward (:func:`scaled_dot_product_attention_backward`) needs at most::

        itemsize * (6 * batch * heads * S * d' + 8 * S * d') + 256 KiB * (threads + 1)

    with ``S = max(S_q, S_k)`` and ``d' = max(d, d_v)`` rounded up to 32: packed copies of
    ``k`` and ``v``, copies of ``q``, ``k`` and ``dout`` widened to the SIMD width, the
    backward's partial ``dq`` of groups of key blocks (at most 8 heads' worth, when
    batch * heads < 8) and each thread's blocks of scores.  Measured (tracemalloc, which
    traces NumPy's and Numba's allocations, ``tests/test_attention_kernels.py``) at
    (batch, heads, S, d) = (1, 2, 4096, 64) float32: 14.2 MiB, the bound there 20.75 MiB;
    the score matrices would take 128 MiB.  The public functions also make C-contiguous
    copies of non-contiguous inputs; the backward recomputes the forward's output and
    row statistics (one more ``out`` and ``lse``).

    Layers use :func:`attention_forward` / :func:`attention_backward` (forward and
    backward on prepared arrays, keeping the forward's ``out`` and ``lse``).
    """
    backend, q, k, v, mask, causal, scale, three_d = _prepare(q, k, v, mask, causal, scale)
    out, _ = attention_forward(backend, q, k, v, mask, causal, scale)
    return _drop_heads_axis(out) if three_d else out


def scaled_dot_product_attention_backward(dout, q, k, v, mask=None, causal=False, scale=None):
    """``(dq, dk, dv)``: the gradients of :func:`scaled_dot_product_attention` given
    ``dout``, the gradient of a loss with respect to its output.

    With ``P = softmax(scale * q @ k^T + mask)`` per batch and head (masked entries 0)::

        dv = P^T @ dout          dP = dout @ v^T
        dS = scale * P * (dP - rowsum(P * dP))
        dq = dS @ k              dk = dS^T @ q

    The forward's output and row log-sum-exp are recomputed (one forward pass); the
    backward then recomputes the probabilities block by block, as the forward does: no
    seq x seq matrix (memory in :func:`scaled_dot_product_attention`'s notes).

    Parameters
    ----------
    dout : array, (batch, heads, S_q, d_v) or (batch, S_q, d_v)
        Same dtype and number of axes as ``q``; finite.
    q, k, v, mask, causal, scale
        As in :func:`scaled_dot_product_attention`.

    Returns
    -------
    dq, dk, dv : arrays shaped as ``q``, ``k`` and ``v``
        New arrays (device arrays on the CUDA backend).  A query whose every key is masked
        gets ``dq = 0`` and contributes nothing to ``dk``/``dv`` (as PyTorch >= 2.5; see
        the forward's notes).
    """
    backend, q, k, v, mask, causal, scale, three_d = _prepare(q, k, v, mask, causal, scale)
    dout = _check_dout(dout, q, v, three_d, backend)
    out, lse = attention_forward(backend, q, k, v, mask, causal, scale)
    grads = attention_backward(backend, dout, q, k, v, out, lse, mask, causal, scale)
    return tuple(_drop_heads_axis(g) for g in grads) if three_d else grads


def _check_dout(dout, q, v, three_d, backend):
    """``dout`` checked against the output's shape and dtype, 4-D, in the backend's memory."""
    expected = tuple(int(n) for n in q.shape[:3]) + (int(v.shape[3]),)
    if three_d:
        expected = expected[:1] + expected[2:]
    if not is_device_array(dout):
        if isinstance(dout, (str, bytes)):
            raise TypeError(f"dout must be an array, got a {type(dout).__name__}")
        dout = np.asarray(dout)
    if np.dtype(dout.dtype) != np.dtype(q.dtype):
        raise TypeError(f"dout must have the inputs' dtype {q.dtype}, got {dout.dtype}; "
                        f"convert it with .astype(np.{np.dtype(q.dtype).name})")
    if tuple(int(n) for n in dout.shape) != expected:
        raise ValueError(f"dout must have the output's shape {_shape_text(expected)}, got "
                         f"{_shape_text(dout.shape)}")
    if backend.memory == "host":
        dout = _host_array(dout, "dout", finite=True)
    else:
        dout = backend.asarray(dout, dout.dtype)
    return _add_heads_axis(dout) if three_d else dout
