"""Scaled dot-product attention on the GPU (:mod:`fastnn.kernels.cuda.attention`) against
the NumPy reference (materialised softmax), through the public function and the
MultiHeadAttention layer as on the CPU.

Shapes are tiny (every simulated GPU thread is a Python thread) but cover a query block
of more than one tile of 32 rows, key tiles (16 float32 / 8 float64 rows) of which the
last is ragged, features over one 32-wide chunk, d_v != d, S_q != S_k both ways, boolean
and additive broadcast masks, causal, and fully masked rows.  Tolerances scale with the
sums of absolute terms (``tests/attention_cases.py``).
"""
import numpy as np
import pytest

import fastnn as fnn
from fastnn.backends.memory import to_host
from cudatest import needs_cuda

from attention_cases import assert_matches, kernel_args, make_case, reference

pytestmark = needs_cuda

# ((B, H, S_q, S_k, d, d_v), mask): see attention_cases.MASKS.
CASES = [((1, 2, 5, 7, 3, 3), "none"),
         ((2, 1, 7, 5, 33, 4), "bool-B1QK-rows"),
         ((1, 1, 34, 17, 5, 2), "float-QK-causal"),
         ((1, 2, 3, 40, 4, 5), "causal"),
         ((2, 1, 6, 9, 4, 4), "float-keypad"),
         ((1, 2, 4, 3, 2, 3), "float-BHQK-rows")]


def _run(case):
    """``{out, lse, dq, dk, dv}`` from the CUDA kernels (host copies)."""
    from numba import cuda
    from fastnn.kernels.cuda import attention
    q, k, v, dout = (cuda.to_device(case[n]) for n in ("q", "k", "v", "dout"))
    mask, causal, scale = kernel_args(case)
    dtype = case["q"].dtype
    out = cuda.device_array(q.shape[:3] + v.shape[3:], dtype)
    lse = cuda.device_array(q.shape[:3], dtype)
    assert attention.attention_forward(q, k, v, mask, causal, scale, out, lse) is out
    grads = tuple(cuda.device_array(x.shape, dtype) for x in (q, k, v))
    result = attention.attention_backward(dout, q, k, v, out, lse, mask, causal, scale, *grads)
    assert all(r is g for r, g in zip(result, grads))
    return {name: x.copy_to_host()
            for name, x in zip(("out", "lse", "dq", "dk", "dv"), (out, lse, *grads))}


@pytest.mark.parametrize("shape, mask_name", CASES, ids=str)
def test_kernels_match_the_reference(shape, mask_name, dtype, rng):
    case = make_case(rng, shape, dtype, mask_name)
    got = _run(case)
    expected, magnitude, tol = reference(case)
    for name, value in got.items():
        assert value.dtype == dtype, name
        assert_matches(value, expected[name], magnitude[name], tol, name)


def test_fully_masked_rows_give_zeros(dtype, rng):
    case = make_case(rng, (1, 2, 5, 6, 3, 3), dtype)
    attend = rng.random((5, 6)) < 0.7
    attend[[1, 4]] = False
    attend[:, 2] = False                              # a key no query sees
    case.update(mask=attend, causal=True)
    got = _run(case)
    assert not got["out"][:, :, [1, 4]].any() and np.isneginf(got["lse"][:, :, [1, 4]]).all()
    assert not got["dq"][:, :, [1, 4]].any()
    assert not got["dk"][:, :, 2].any() and not got["dv"][:, :, 2].any()
    for name, value in got.items():
        assert not np.isnan(value).any(), name


def test_the_public_function_on_device_arrays(rng):
    """Device inputs pick the CUDA backend; a host mask is moved (a device mask gives the
    same), a 3-D batch works, and the result stays on the device."""
    from numba import cuda
    case = make_case(rng, (2, 1, 6, 9, 4, 5), np.float32, "bool-QK")
    q, k, v = (cuda.to_device(case[n][:, 0]) for n in ("q", "k", "v"))
    out = fnn.scaled_dot_product_attention(q, k, v, mask=case["mask"], scale=case["scale"])
    assert hasattr(out, "copy_to_host") and out.shape == (2, 6, 5)
    grads = fnn.scaled_dot_product_attention_backward(cuda.to_device(case["dout"][:, 0]), q, k,
                                                      v, mask=case["mask"], scale=case["scale"])
    on_device = fnn.scaled_dot_product_attention(q, k, v, mask=cuda.to_device(case["mask"]),
                                                 scale=case["scale"])
    np.testing.assert_array_equal(on_device.copy_to_host(), out.copy_to_host())
    expected, magnitude, tol = reference(case)
    assert_matches(out.copy_to_host(), expected["out"][:, 0], magnitude["out"][:, 0], tol, "out")
    for name, grad in zip(("dq", "dk", "dv"), grads):
        assert_matches(grad.copy_to_host(), expected[name][:, 0], magnitude[name][:, 0], tol,
                       name)


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_forward_and_backward_as_on_the_cpu(causal):
    """MultiHeadAttention (E = 6, 2 heads of 3, seq 5) on the "cuda" backend: output,
    input gradient and parameter gradients equal the NumPy backend's (the reference:
    nothing to compile)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 6))
    dy = rng.standard_normal((2, 5, 6))
    results = {}
    for backend in ("numpy", "cuda"):
        model = fnn.Sequential(fnn.MultiHeadAttention(6, 2, causal=causal), dtype="float64",
                               backend=backend, seed=5)
        y = to_host(model(x))
        model.zero_grad()
        dx = to_host(model.backward(dy, input_grad=True))
        grads = {name: to_host(p.grad) for name, p in model.named_parameters()}
        results[backend] = (y, dx, grads)
    (y_gpu, dx_gpu, g_gpu), (y_cpu, dx_cpu, g_cpu) = results["cuda"], results["numpy"]
    np.testing.assert_allclose(y_gpu, y_cpu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx_gpu, dx_cpu, rtol=1e-12, atol=1e-12)
    assert g_gpu.keys() == g_cpu.keys() and g_cpu
    for name, value in g_cpu.items():
        np.testing.assert_allclose(g_gpu[name], value, rtol=1e-12, atol=1e-12, err_msg=name)
