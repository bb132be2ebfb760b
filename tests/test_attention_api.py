"""The public attention functions (:func:`fastnn.scaled_dot_product_attention` and
:func:`fastnn.scaled_dot_product_attention_backward`): PyTorch's
``F.scaled_dot_product_attention`` and its autograd gradients (when torch is installed),
the NumPy reference, fully masked rows (zeros), masks never expanded, and the validation
errors.
"""
import re

import numpy as np
import pytest

import fastnn as fnn
from fastnn.attention import attention_mask

from attention_cases import assert_matches, make_case, reference

TORCH_TOL = {np.dtype(np.float32): dict(rtol=2e-5, atol=2e-6),
             np.dtype(np.float64): dict(rtol=1e-11, atol=1e-12)}

# name -> (3-D?, attention_cases.MASKS entry, scale factor).  No fully masked rows here
# (PyTorch before 2.5 gives NaN there; tested on their own below).
API_CASES = {
    "4d": (False, "none", 1.0),
    "4d-bool-QK": (False, "bool-QK", 1.0),
    "4d-float-keypad": (False, "float-keypad", 1.0),
    "4d-causal": (False, "causal", 1.0),
    "4d-scale": (False, "none", 0.37),
    "3d": (True, "none", 1.0),
    "3d-bool-QK": (True, "bool-QK", 1.0),
    "3d-float-keypad": (True, "float-keypad", 2.5),
    "3d-causal": (True, "causal", 1.0),
}


def _api_case(rng, name, dtype, shape=(2, 3, 7, 33, 24, 40)):
    """``(args, case)``: the public functions' arguments (``dout`` first) for
    :data:`API_CASES` ``name``, and the 4-D case of ``attention_cases`` they come from
    (3-D cases have one head).  ``scale`` is None (the default) for a factor of 1."""
    three_d, mask_name, factor = API_CASES[name]
    if three_d:
        shape = (shape[0], 1) + shape[2:]
    case = make_case(rng, shape, dtype, mask_name, logit_scale=factor)
    args = {n: case[n] for n in ("dout", "q", "k", "v")}
    mask = case["mask"]
    if mask is not None and mask.dtype != bool:
        # finite: PyTorch's float masks (-inf keys are tested with boolean masks)
        mask = np.where(np.isfinite(mask), mask, dtype(-30)).astype(dtype)
        case["mask"] = mask
    if three_d:
        args = {n: a[:, 0] for n, a in args.items()}
        if mask is not None and mask.ndim == 4:
            mask = mask[:, 0]
    args.update(mask=mask, causal=case["causal"], scale=None if factor == 1.0 else case["scale"])
    return args, case


def _forward(args):
    return fnn.scaled_dot_product_attention(args["q"], args["k"], args["v"], mask=args["mask"],
                                            causal=args["causal"], scale=args["scale"])


def _backward(args):
    return fnn.scaled_dot_product_attention_backward(
        args["dout"], args["q"], args["k"], args["v"], mask=args["mask"],
        causal=args["causal"], scale=args["scale"])


def _torch_result(torch, args):
    """PyTorch's output and the gradients of ``sum(out * dout)``."""
    import torch.nn.functional as F
    q, k, v = (torch.tensor(args[n], requires_grad=True) for n in ("q", "k", "v"))
    mask = None if args["mask"] is None else torch.tensor(args["mask"])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=args["causal"],
                                         scale=args["scale"])
    out.backward(torch.tensor(args["dout"]))
    return out.detach().numpy(), tuple(x.grad.numpy() for x in (q, k, v))


@pytest.mark.parametrize("name", list(API_CASES))
def test_matches_pytorch_forward_and_autograd(name, dtype, rng):
    torch = pytest.importorskip("torch")
    args, _ = _api_case(rng, name, dtype)
    out = _forward(args)
    grads = _backward(args)
    want_out, want_grads = _torch_result(torch, args)
    tol = TORCH_TOL[np.dtype(dtype)]
    assert out.dtype == dtype and out.shape == want_out.shape
    np.testing.assert_allclose(out, want_out, **tol)
    for label, got, want in zip(("dq", "dk", "dv"), grads, want_grads):
        assert got.dtype == dtype and got.shape == want.shape, label
        np.testing.assert_allclose(got, want, err_msg=label, **tol)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("mask_name", ["bool-B1QK-rows", "float-BHQK-rows"])
def test_backward_matches_the_reference_with_fully_masked_rows(backend, mask_name, dtype, rng):
    """Fully masked rows (PyTorch's NaN): zeros from both public functions, on both host
    backends."""
    case = make_case(rng, (2, 3, 7, 33, 24, 40), dtype, mask_name)
    expected, magnitude, tol = reference(case)
    with fnn.use_backend(backend):
        out = fnn.scaled_dot_product_attention(case["q"], case["k"], case["v"],
                                               mask=case["mask"], scale=case["scale"])
        grads = fnn.scaled_dot_product_attention_backward(
            case["dout"], case["q"], case["k"], case["v"], mask=case["mask"],
            scale=case["scale"])
    assert not out[:, :, ::3].any() and not grads[0][:, :, ::3].any()
    assert_matches(out, expected["out"], magnitude["out"], tol, "out")
    for label, got in zip(("dq", "dk", "dv"), grads):
        assert_matches(got, expected[label], magnitude[label], tol, label)


def test_fully_masked_rows_give_zeros_as_pytorch_does(rng):
    """The documented behaviour: zeros and zero gradients for a query that attends to
    nothing, as PyTorch's SDPA since 2.5, where a plain softmax gives NaN."""
    torch = pytest.importorskip("torch")
    args, _ = _api_case(rng, "4d-bool-QK", np.float64)
    args["mask"][2] = False                               # query 2 attends to nothing
    out, grads = _forward(args), _backward(args)
    assert not out[:, :, 2].any() and not grads[0][:, :, 2].any()
    for got in (out, *grads):
        assert np.isfinite(got).all()
    assert torch.isnan(torch.softmax(torch.full((3,), -torch.inf), 0)).all()
    if tuple(int(n) for n in re.findall(r"\d+", torch.__version__)[:2]) >= (2, 5):
        want_out, want_grads = _torch_result(torch, args)
        np.testing.assert_allclose(out, want_out, **TORCH_TOL[np.dtype(np.float64)])
        for got, want in zip(grads, want_grads):
            np.testing.assert_allclose(got, want, **TORCH_TOL[np.dtype(np.float64)])


def test_inputs_are_not_modified_and_views_are_accepted(rng):
    """Non-contiguous and read-only inputs (transposed views, broadcast masks) work and
    are left as they were."""
    case = make_case(rng, (2, 3, 7, 33, 24, 24), np.float32)
    q = np.ascontiguousarray(case["q"].transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    k = case["k"].copy()
    k.flags.writeable = False
    mask = np.broadcast_to(rng.random((7, 33)) < 0.8, (2, 3, 7, 33))
    before = [x.copy() for x in (q, k, case["v"], mask)]
    out = fnn.scaled_dot_product_attention(q, k, case["v"], mask=mask)
    grads = fnn.scaled_dot_product_attention_backward(case["dout"], q, k, case["v"], mask=mask)
    for x, x0 in zip((q, k, case["v"], mask), before):
        np.testing.assert_array_equal(x, x0)
    case.update(q=np.ascontiguousarray(q), mask=np.ascontiguousarray(mask))
    expected, magnitude, tol = reference(case)
    assert_matches(out, expected["out"], magnitude["out"], tol, "out")
    assert_matches(grads[0], expected["dq"], magnitude["dq"], tol, "dq")


# --------------------------------------------------------------------------- masks
@pytest.mark.parametrize("shape, kept", [((2, 3, 7, 33), 2 * 3 * 7 * 33), ((7, 33), 7 * 33),
                                         ((2, 1, 1, 33), 2 * 33), ((1, 33), 33),
                                         ((2, 3, 1, 1), 6), ((1,), 1)], ids=str)
@pytest.mark.parametrize("kind", [bool, np.float32])
def test_masks_are_never_expanded(shape, kept, kind, rng, monkeypatch):
    """The operation gets the mask with its own elements only: broadcast views (stride 0)
    are cut back to length 1, axes of length 1 stay 1."""
    mask = rng.random(shape) < 0.8 if kind is bool else rng.standard_normal(shape)
    seen = []
    backend = fnn.get_backend()
    real = backend.attention_forward
    monkeypatch.setattr(backend, "attention_forward",
                        lambda q, k, v, m, *rest: seen.append(m) or real(q, k, v, m, *rest))
    case = make_case(rng, (2, 3, 7, 33, 8, 8), np.float32)
    for given in (mask, np.broadcast_to(mask, (2, 3, 7, 33))):
        fnn.scaled_dot_product_attention(case["q"], case["k"], case["v"], mask=given)
        assert seen[-1].size == kept and seen[-1].ndim == 4
    assert attention_mask(np.broadcast_to(mask, (2, 3, 7, 33)), (2, 3, 7, 8), (2, 3, 33, 8),
                          np.float32, backend).size == kept


def test_bool_masks_are_passed_without_a_copy(rng):
    mask = rng.random((2, 1, 7, 33)) < 0.8
    got = attention_mask(mask, (2, 3, 7, 8), (2, 3, 33, 8), np.float32, fnn.get_backend())
    assert np.shares_memory(got, mask)


# --------------------------------------------------------------------------- validation
def _valid(rng, dtype=np.float32):
    q = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    k = rng.standard_normal((2, 3, 5, 8)).astype(dtype)
    v = rng.standard_normal((2, 3, 5, 4)).astype(dtype)
    return dict(q=q, k=k, v=v)


def _nan_at_0(x):
    x = x.copy()
    x.flat[0] = np.nan
    return x


# name -> (change to the valid arguments, exception, message pattern)
INVALID = {
    "q 2-D": (lambda a: dict(a, q=a["q"][0, 0]), ValueError,
              r"q must be \(batch, seq, d\) or \(batch, heads, seq, d\), got shape \(7, 8\)"),
    "k 5-D": (lambda a: dict(a, k=a["k"][None]), ValueError, r"k must be .*got shape \(1, 2"),
    "3-D with 4-D": (lambda a: dict(a, q=a["q"][:, 0]), ValueError, "same number of axes"),
    "int q": (lambda a: dict(a, q=a["q"].astype(np.int32)), TypeError,
              "q must be a float32 or float64 array, got dtype int32"),
    "dtype mismatch": (lambda a: dict(a, v=a["v"].astype(np.float64)), TypeError,
                       "one dtype, got float32, float32 and float64"),
    "batch mismatch": (lambda a: dict(a, k=a["k"][:1], v=a["v"][:1]), ValueError,
                       r"must agree on \(batch, heads\)"),
    "d mismatch": (lambda a: dict(a, k=a["k"][..., :6]), ValueError,
                   "same feature size d .* got 8 and 6"),
    "S_k mismatch": (lambda a: dict(a, v=a["v"][:, :, :4]), ValueError,
                     "same sequence length .* got 5 and 4"),
    "empty axis": (lambda a: dict(a, q=a["q"][:, :, :0]), ValueError, "empty axis"),
    "string": (lambda a: dict(a, q="q"), TypeError, "q must be an array, got a str"),
    "NaN in q": (lambda a: dict(a, q=_nan_at_0(a["q"])), ValueError,
                 r"q contains NaN or Inf \(1 value"),
    "Inf in v": (lambda a: dict(a, v=a["v"] * np.float32(np.inf)), ValueError,
                 "v contains NaN or Inf"),
    "int mask": (lambda a: dict(a, mask=np.ones((7, 5), np.int64)), TypeError,
                 r"mask must be boolean .* got dtype int64; .*astype\(bool\)"),
    "mask shape": (lambda a: dict(a, mask=np.ones((7, 6), bool)), ValueError,
                   r"mask of shape \(7, 6\) does not broadcast to \(batch, heads, S_q, S_k\) "
                   r"= \(2, 3, 7, 5\)"),
    "mask 5-D": (lambda a: dict(a, mask=np.ones((1, 2, 3, 7, 5), bool)), ValueError,
                 "does not broadcast"),
    "mask NaN": (lambda a: dict(a, mask=np.full((7, 5), np.nan, np.float32)), ValueError,
                 "finite values or -inf"),
    "mask +inf": (lambda a: dict(a, mask=np.full((7, 5), np.inf, np.float32)), ValueError,
                  "finite values or -inf"),
    "causal str": (lambda a: dict(a, causal="yes"), TypeError,
                   "causal must be True or False, got 'yes'"),
    "causal int": (lambda a: dict(a, causal=1), TypeError, "causal must be True or False"),
    "scale str": (lambda a: dict(a, scale="0.1"), TypeError, "scale must be a number"),
    "scale NaN": (lambda a: dict(a, scale=float("nan")), ValueError, "scale must be finite"),
}


@pytest.mark.parametrize("name", list(INVALID))
@pytest.mark.parametrize("function", ["forward", "backward"])
def test_invalid_arguments_give_clear_errors(name, function, rng):
    change, error, pattern = INVALID[name]
    args = change(_valid(rng))
    if function == "forward":
        call = lambda: fnn.scaled_dot_product_attention(**args)          # noqa: E731
    else:
        dout = np.ones((2, 3, 7, 4), np.float32)
        call = lambda: fnn.scaled_dot_product_attention_backward(dout, **args)  # noqa: E731
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("dout, error, pattern", [
    (np.ones((2, 3, 7, 8), np.float32), ValueError,
     re.escape("dout must have the output's shape (2, 3, 7, 4), got (2, 3, 7, 8)")),
    (np.ones((2, 3, 7, 4)), TypeError, "dout must have the inputs' dtype float32, got float64"),
    (np.full((2, 3, 7, 4), np.nan, np.float32), ValueError, "dout contains NaN or Inf"),
    ("dout", TypeError, "dout must be an array"),
], ids=["shape", "dtype", "NaN", "string"])
def test_invalid_dout_gives_clear_errors(dout, error, pattern, rng):
    with pytest.raises(error, match=pattern):
        fnn.scaled_dot_product_attention_backward(dout, **_valid(rng))


def test_three_d_masks_follow_the_three_d_convention(rng):
    """For (batch, seq, d) inputs a 3-D mask is (batch, S_q, S_k): the heads axis is not
    part of it, and a 4-D mask is an error."""
    args = {n: a[:, 0] for n, a in _valid(rng).items()}
    mask = rng.random((2, 7, 5)) < 0.8
    per_batch = [fnn.scaled_dot_product_attention(*(args[n][i:i + 1] for n in "qkv"),
                                                  mask=mask[i]) for i in range(2)]
    np.testing.assert_array_equal(fnn.scaled_dot_product_attention(**args, mask=mask),
                                  np.concatenate(per_batch))
    with pytest.raises(ValueError, match=r"to \(batch, S_q, S_k\) = \(2, 7, 5\)"):
        fnn.scaled_dot_product_attention(**args, mask=mask[:, None])


def test_public_functions_are_exported():
    assert {"scaled_dot_product_attention",
            "scaled_dot_product_attention_backward"} <= set(fnn.__all__)
