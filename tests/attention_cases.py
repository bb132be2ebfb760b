"""Cases and checks shared by the attention tests (CPU kernels, public API, CUDA twins).

* :func:`make_case`: random ``q``, ``k``, ``v`` and ``dout`` (never zeros) and one of the
  :data:`MASKS` (boolean and additive, broadcast shapes, causal, fully masked rows).
* :func:`reference`: the NumPy backend's materialised-softmax attention (``out``, ``lse``
  and the three gradients) and the *magnitudes* the tolerances scale with.
* :func:`assert_matches`: ``|got - expected| <= tol * magnitude`` element by element.

Why magnitudes: a gradient can be a difference of large terms that cancel (with
``S_k = 1``, ``dq = 0`` exactly, and float32 gives ~1e-8), so a tolerance relative to the
result itself is too strict, and one relative to the array's maximum too loose.  Each
result is a sum of products; its rounding error is a few ulps of the sum of the terms'
absolute values, which is what :func:`reference` computes (``P @ |v|`` for ``out``, and
so on).  The logits' own rounding (``ulp(max |x|)``) moves every probability by that
relative amount, hence the factor ``1 + max |x|`` of the tolerance.
"""
import numpy as np

from fastnn.backends import numpy_layer_ops, numpy_ops

#: name -> (mask kind, mask shape, causal, fully masked rows).  Shapes use the letters
#: B, H, Q (S_q), K (S_k).  Kinds: None, "bool" (True = attend), "float" (added; -inf
#: masks).
MASKS = {
    "none": (None, None, False, False),
    "causal": (None, None, True, False),
    "bool-QK": ("bool", "QK", False, False),
    "bool-B1QK-rows": ("bool", "B1QK", False, True),
    "bool-BHQK-causal": ("bool", "BHQK", True, False),
    "float-keypad": ("float", "B11K", False, False),
    "float-QK-causal": ("float", "QK", True, False),
    "float-BHQK-rows": ("float", "BHQK", False, True),
}

#: Relative tolerances (times the magnitudes) per dtype: ~30 and ~50 units of roundoff.
#: The Numba kernels' worst errors measured 0.2x and 0.1x of these (AVX-512).
RTOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-14}


def _mask_shape(letters, b, h, sq, sk):
    sizes = {"B": b, "H": h, "Q": sq, "K": sk, "1": 1}
    return tuple(sizes[c] for c in letters)


def make_mask(rng, name, b, h, sq, sk, dtype):
    """``(mask, causal)`` for the :data:`MASKS` entry ``name`` (``mask`` None for none).

    Random masks keep about 70% of the keys; "-rows" masks also mask every key of a few
    query rows (one row in three, in every batch and head the mask covers); a key-padding
    mask gives batch ``b`` the first ``sk - b`` keys (at least one)."""
    kind, letters, causal, rows = MASKS[name]
    if kind is None:
        return None, causal
    shape = _mask_shape(letters, b, h, sq, sk)
    if letters == "B11K":
        lengths = np.maximum(sk - np.arange(shape[0]), 1)
        attend = np.arange(sk) < lengths[:, None, None, None]
    else:
        attend = rng.random(shape) < 0.7
    if rows:
        attend[..., ::3, :] = False
    if kind == "bool":
        return attend, causal
    additive = rng.standard_normal(shape).astype(dtype)
    return np.where(attend, additive, dtype(-np.inf)).astype(dtype), causal


def make_case(rng, shape, dtype, mask_name="none", logit_scale=1.0):
    """``dict(q, k, v, dout, mask, causal, scale)`` for ``shape = (B, H, S_q, S_k, d,
    d_v)``; ``scale = logit_scale / sqrt(d)``."""
    b, h, sq, sk, d, dv = shape
    dtype = np.dtype(dtype).type
    q, k = (rng.standard_normal((b, h, n, d)).astype(dtype) for n in (sq, sk))
    v = rng.standard_normal((b, h, sk, dv)).astype(dtype)
    dout = rng.standard_normal((b, h, sq, dv)).astype(dtype)
    mask, causal = make_mask(rng, mask_name, b, h, sq, sk, dtype)
    return dict(q=q, k=k, v=v, dout=dout, mask=mask, causal=causal,
                scale=logit_scale / np.sqrt(d))


def reference(case):
    """``(expected, magnitude, tol)``: dicts of ``out``, ``lse``, ``dq``, ``dk``, ``dv``
    from the NumPy reference in float64, the sums of absolute terms each is made of, and
    the tolerance factor ``RTOL * (1 + max |x|)`` of the case's dtype."""
    dtype = np.dtype(case["q"].dtype)
    q, k, v, dout = (case[n].astype(np.float64) for n in ("q", "k", "v", "dout"))
    mask = case["mask"]
    mask = np.empty((0, 0, 0, 0)) if mask is None else (
        mask if mask.dtype == bool else mask.astype(np.float64))
    causal, scale = case["causal"], float(case["scale"])
    expected = dict(out=np.empty(q.shape[:3] + v.shape[3:]), lse=np.empty(q.shape[:3]),
                    dq=np.empty(q.shape), dk=np.empty(k.shape), dv=np.empty(v.shape))
    numpy_ops.attention_forward(q, k, v, mask, causal, scale, expected["out"], expected["lse"])
    numpy_ops.attention_backward(dout, q, k, v, expected["out"], expected["lse"], mask, causal,
                                 scale, expected["dq"], expected["dk"], expected["dv"])
    p, _, _ = numpy_layer_ops._attention_softmax(q, k, mask, causal, scale)
    dp = np.abs(dout) @ np.abs(np.swapaxes(v, -1, -2))
    ds = scale * p * (dp + (p * dp).sum(axis=-1, keepdims=True))
    magnitude = dict(out=p @ np.abs(v), lse=np.ones(q.shape[:3]),
                     dq=ds @ np.abs(k), dk=np.swapaxes(ds, -1, -2) @ np.abs(q),
                     dv=np.swapaxes(p, -1, -2) @ np.abs(dout))
    logits = np.abs(scale * q @ np.swapaxes(k, -1, -2))
    if mask.dtype != bool and mask.size:
        logits = np.abs(logits + np.where(np.isfinite(mask), mask, 0))
    tol = RTOL[dtype] * (1 + logits.max())
    return expected, magnitude, tol


def assert_matches(got, expected, magnitude, tol, what=""):
    """``|got - expected| <= tol * magnitude`` everywhere (``-inf`` must match exactly; a
    NaN anywhere fails).  Terms below the smallest normal number of ``got``'s dtype (times
    the largest magnitude) may flush to 0: float32 probabilities underflow where float64
    ones are 1e-261."""
    floor = np.finfo(got.dtype).tiny * (1 + magnitude.max(initial=0))
    got = np.asarray(got, np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    infinite = np.isinf(expected)
    assert np.array_equal(got[infinite], expected[infinite]), f"{what}: infinities differ"
    with np.errstate(invalid="ignore"):
        error = np.where(infinite, 0.0, np.abs(got - expected))
    bad = ~(error <= tol * magnitude + floor)
    if bad.any():
        where = np.unravel_index(np.argmax(np.where(bad, error / np.maximum(magnitude, 1e-300),
                                                    -1)), bad.shape)
        raise AssertionError(
            f"{what}: {np.count_nonzero(bad)} of {bad.size} elements off; worst at {where}: "
            f"got {got[where]!r}, expected {expected[where]!r}, magnitude "
            f"{magnitude[where]:.3g}, allowed {tol * magnitude[where]:.3g}")


def kernel_args(case):
    """``(mask, causal, scale)`` as the backend operations take them: a size-0 4-D array
    of the dtype for no mask."""
    mask = case["mask"]
    if mask is None:
        mask = np.empty((0, 0, 0, 0), case["q"].dtype)
    return mask, case["causal"], case["scale"]
