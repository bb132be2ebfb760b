"""Scaled dot-product attention kernels (:mod:`fastnn.kernels.attention`,
:mod:`fastnn.kernels.attention_backward`): the Numba backend against the NumPy reference
(materialised softmax) with every kind of mask, the reference's backward and the
kernels' backward against finite differences, rows of huge logits, fully masked rows,
results that do not depend on the thread count, and the memory bound at seq = 4096.

Tolerances scale with the sums of absolute terms (see ``attention_cases.py``).  Mask
kinds and the inputs come from ``attention_cases.py``, shared with the API and CUDA
tests.  Compiling dominates the runtime: 8 specialisations (forward and backward,
float32 and float64, boolean and float masks; "no mask" is a size-0 float mask).
"""
import tracemalloc

import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn.backends import numpy_ops

from attention_cases import MASKS, assert_matches, kernel_args, make_case, reference
from conftest import numerical_gradient

# (B, H, S_q, S_k, d, d_v): sequence lengths 1, 7, 33, 130 (not multiples of the query
# block of 48 or the key block of 128), S_q != S_k both ways, d from 8 to 128 including
# widths that are not a multiple of the SIMD panel (24, 40, 72), d_v != d.  The last
# three have at least 8 heads and at most BLOCK_K keys: the short-key path (one task per
# head, operands packed inside it; the transformer example's (128, 4, 28, 16) is one).
SHAPES = [(1, 1, 1, 1, 8, 8), (2, 3, 7, 7, 24, 24), (2, 3, 7, 33, 40, 40),
          (2, 2, 33, 7, 72, 72), (1, 2, 130, 130, 128, 128), (2, 1, 33, 130, 64, 24),
          (1, 3, 130, 33, 8, 72), (4, 8, 28, 28, 16, 16), (3, 3, 130, 33, 16, 40),
          (2, 4, 7, 128, 24, 8), (1, 8, 161, 261, 24, 40)]


def _run_forward(ops, case):
    mask, causal, scale = kernel_args(case)
    q, v = case["q"], case["v"]
    # NaN-filled outputs: every element must be written, none accumulated into
    out = np.full(q.shape[:3] + v.shape[3:], np.nan, q.dtype)
    lse = np.full(q.shape[:3], np.nan, q.dtype)
    assert ops.attention_forward(q, case["k"], v, mask, causal, scale, out, lse) is out
    return out, lse


def _run_backward(ops, case, out, lse):
    mask, causal, scale = kernel_args(case)
    grads = tuple(np.full(case[n].shape, np.nan, case[n].dtype) for n in ("q", "k", "v"))
    result = ops.attention_backward(case["dout"], case["q"], case["k"], case["v"], out, lse,
                                    mask, causal, scale, *grads)
    assert all(r is g for r, g in zip(result, grads))
    return dict(zip(("dq", "dk", "dv"), grads))


def _check(got, case, names=("out", "lse", "dq", "dk", "dv")):
    expected, magnitude, tol = reference(case)
    for name in names:
        assert got[name].dtype == case["q"].dtype, name
        assert_matches(got[name], expected[name], magnitude[name], tol, name)


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_the_reference(shape, mask_name, dtype, rng, numba_ops):
    case = make_case(rng, shape, dtype, mask_name)
    out, lse = _run_forward(numba_ops, case)
    got = dict(out=out, lse=lse, **_run_backward(numba_ops, case, out, lse))
    _check(got, case)


@pytest.mark.parametrize("mask_name", ["none", "causal", "bool-B1QK-rows", "float-BHQK-rows"])
def test_rows_of_huge_logits_stay_finite(mask_name, dtype, rng, numba_ops):
    """``scale * q . k`` up to ~1e4: the row maximum is subtracted before ``exp``."""
    case = make_case(rng, (2, 2, 33, 40, 24, 24), dtype, mask_name)
    logits = case["scale"] * np.abs(case["q"] @ np.swapaxes(case["k"], -1, -2)).max()
    case["scale"] *= 1e4 / logits
    out, lse = _run_forward(numba_ops, case)
    got = dict(out=out, lse=lse, **_run_backward(numba_ops, case, out, lse))
    for name, value in got.items():
        assert not np.isnan(value).any() and not np.isposinf(value).any(), name
    assert np.nanmax(np.abs(np.where(np.isinf(lse), np.nan, lse))) > 1e3
    _check(got, case)


@pytest.mark.parametrize("causal", [False, True])
def test_fully_masked_rows_give_zeros_and_no_nan(causal, dtype, rng, numba_ops):
    """A query whose every key is masked: ``out = 0``, ``lse = -inf``, ``dq = 0``, and it
    adds nothing to ``dk``/``dv``; keys no query sees get ``dk = dv = 0``.  PyTorch gives
    NaN there."""
    b, h, sq, sk, d = 2, 3, 33, 7, 24
    case = make_case(rng, (b, h, sq, sk, d, d), dtype)
    attend = rng.random((b, 1, sq, sk)) < 0.7
    dead_rows, dead_keys = [0, 5, 32], [2, 6]
    attend[..., dead_rows, :] = False
    attend[..., dead_keys] = False
    for mask in (attend, np.where(attend, dtype(0.5), dtype(-np.inf)).astype(dtype)):
        case.update(mask=mask, causal=causal)
        out, lse = _run_forward(numba_ops, case)
        grads = _run_backward(numba_ops, case, out, lse)
        assert not out[:, :, dead_rows].any()
        assert np.isneginf(lse[:, :, dead_rows]).all()
        assert not grads["dq"][:, :, dead_rows].any()
        assert not grads["dk"][:, :, dead_keys].any() and not grads["dv"][:, :, dead_keys].any()
        for value in (out, lse, *grads.values()):
            assert not np.isnan(value).any()
        # the dead rows change nothing else: the same as without them (rows dropped)
        live = np.setdiff1d(np.arange(sq), dead_rows)
        if not causal:     # causal depends on the row index: dropping rows shifts it
            sub = dict(case, q=case["q"][:, :, live].copy(), dout=case["dout"][:, :, live].copy(),
                       mask=np.ascontiguousarray(mask[:, :, live]))
            sub_out, sub_lse = _run_forward(numba_ops, sub)
            sub_grads = _run_backward(numba_ops, sub, sub_out, sub_lse)
            np.testing.assert_allclose(sub_out, out[:, :, live], rtol=1e-5, atol=1e-6)
            for name in ("dk", "dv"):
                np.testing.assert_allclose(sub_grads[name], grads[name], rtol=1e-4, atol=1e-5)
    _check(dict(out=out, lse=lse, **grads), case)


def test_every_key_masked_everywhere(dtype, rng, numba_ops):
    case = make_case(rng, (2, 2, 7, 33, 8, 8), dtype)
    case["mask"] = np.zeros((1, 1, 1, 33), bool)
    out, lse = _run_forward(numba_ops, case)
    grads = _run_backward(numba_ops, case, out, lse)
    assert not out.any() and np.isneginf(lse).all()
    for name, grad in grads.items():
        assert not grad.any(), name


# --------------------------------------------------------------------------- finite differences
FD_SHAPE = (2, 2, 5, 7, 4, 3)


def _fd_gradients(ops, case):
    """Central differences of ``sum(out * dout)`` with respect to q, k, v (float64)."""
    mask, causal, scale = kernel_args(case)
    q, k, v, dout = case["q"], case["k"], case["v"], case["dout"]
    out = np.empty(q.shape[:3] + v.shape[3:])
    lse = np.empty(q.shape[:3])

    def loss():
        ops.attention_forward(q, k, v, mask, causal, scale, out, lse)
        return float((out * dout).sum())

    return {f"d{n}": numerical_gradient(loss, case[n]) for n in ("q", "k", "v")}


@pytest.mark.parametrize("mask_name", ["none", "causal", "bool-B1QK-rows", "float-QK-causal",
                                       "float-BHQK-rows"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_backward_matches_finite_differences(backend, mask_name, rng):
    """The reference's materialised-softmax backward, and the kernels' backward, against
    central differences of the forward (float64)."""
    ops = numpy_ops if backend == "numpy" else fnn.get_backend("numba")
    case = make_case(rng, FD_SHAPE, np.float64, mask_name)
    numeric = _fd_gradients(ops, case)
    out, lse = _run_forward(ops, case)
    analytic = _run_backward(ops, case, out, lse)
    for name in numeric:
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=1e-6, atol=1e-8,
                                   err_msg=name)


# --------------------------------------------------------------------------- threads
@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize("shape, mask_name", [((1, 1, 130, 130, 40, 40), "causal"),
                                              ((2, 3, 33, 130, 24, 72), "float-keypad"),
                                              ((1, 2, 200, 300, 64, 64), "bool-QK"),
                                              ((3, 3, 130, 100, 16, 24), "causal")], ids=str)
def test_results_do_not_depend_on_the_thread_count(shape, mask_name, rng, numba_ops):
    """Bit for bit on 1 and 2 threads: the work split depends on the shape only (the
    backward's key-block groups with few heads included)."""
    case = make_case(rng, shape, np.float32, mask_name)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            out, lse = _run_forward(numba_ops, case)
            results.append((out, lse, *_run_backward(numba_ops, case, out, lse).values()))
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


# --------------------------------------------------------------------------- public function
@pytest.mark.parametrize("mask_name", ["none", "bool-QK", "float-keypad"])
def test_three_dimensional_batches_through_the_public_function(mask_name, dtype, rng):
    """(B, S, d) inputs: the kernels with a heads axis of length 1, masks (S_q, S_k) and
    (B, 1, S_k) of the 3-D convention."""
    case = make_case(rng, (3, 1, 33, 7, 40, 24), dtype, mask_name)
    mask = case["mask"]
    if mask is not None:
        mask = mask[:, 0] if mask.ndim == 4 else mask      # (B, 1, 1, K) -> (B, 1, K)
    squeeze = {n: case[n][:, 0] for n in ("q", "k", "v")}
    got = fnn.scaled_dot_product_attention(squeeze["q"], squeeze["k"], squeeze["v"], mask=mask,
                                           scale=case["scale"])
    assert got.shape == (3, 33, 24) and got.dtype == dtype
    expected, magnitude, tol = reference(case)
    assert_matches(got, expected["out"][:, 0], magnitude["out"][:, 0], tol, "out")


# --------------------------------------------------------------------------- memory
def _extra_bytes_bound(b, h, s, d, dtype, threads):
    """The stated bound of peak extra memory of a forward + backward beyond inputs,
    outputs and ``lse`` (``fastnn.attention``'s module docstring)::

        itemsize * (6 * B * H * S * d' + 8 * S * d') + 256 KiB * (threads + 1)

    with ``d'`` the feature size rounded up to 32 (the widest SIMD panel): packed and
    widened copies of K, V, q, dout, the backward's per-group partial ``dq`` (at most
    8 heads' worth) and per-thread blocks of scores."""
    d_pad = -(-d // 32) * 32
    return np.dtype(dtype).itemsize * (6 * b * h * s * d_pad + 8 * s * d_pad) \
        + 256 * 1024 * (threads + 1)


@numba.njit(parallel=True)
def _allocate_in_threads(n, tasks):
    total = 0.0
    for t in numba.prange(tasks):
        block = np.empty(n)
        block[:] = t
        total += block.sum()
    return total


def test_tracemalloc_sees_allocations_inside_parallel_kernels():
    """What the memory test relies on: Numba's runtime allocates with PyMem_RawMalloc,
    which tracemalloc traces, also on the worker threads (were it plain malloc, the test
    below would see only the wrappers' NumPy arrays)."""
    _allocate_in_threads(10, 2)
    tracemalloc.start()
    try:
        _allocate_in_threads(1 << 20, 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak >= 8 << 20            # at least one 8 MiB block traced


@pytest.mark.parametrize("causal", [False, True])
def test_peak_memory_at_seq_4096_is_linear_in_seq(causal, numba_ops):
    """Forward + backward at (B, H, S, d) = (1, 2, 4096, 64) float32: the extra memory
    traced (NumPy and Numba runtime allocations, see the test above) stays under the
    bound, O(B * H * S * d), and far below the S x S scores of all heads (128 MiB)."""
    b, h, s, d, dtype = 1, 2, 4096, 64, np.float32
    rng = np.random.default_rng(7)
    case = make_case(rng, (b, h, s, s, d, d), dtype, "causal" if causal else "none")
    warm = make_case(rng, (b, h, 40, 40, d, d), dtype)
    _run_backward(numba_ops, warm, *_run_forward(numba_ops, warm))     # compile / load
    out, lse = (np.empty((b, h, s, d), dtype), np.empty((b, h, s), dtype))
    grads = tuple(np.empty((b, h, s, d), dtype) for _ in range(3))
    mask, causal, scale = kernel_args(case)
    tracemalloc.start()
    try:
        numba_ops.attention_forward(case["q"], case["k"], case["v"], mask, causal, scale, out,
                                    lse)
        numba_ops.attention_backward(case["dout"], case["q"], case["k"], case["v"], out, lse,
                                     mask, causal, scale, *grads)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    bound = _extra_bytes_bound(b, h, s, d, dtype, numba.get_num_threads())
    scores = h * s * s * np.dtype(dtype).itemsize
    print(f"peak extra {peak / 2**20:.2f} MiB, bound {bound / 2**20:.2f} MiB, "
          f"S x S scores {scores / 2**20:.0f} MiB")
    assert peak <= bound
    assert peak < scores / 4
    assert np.isfinite(out).all() and all(np.isfinite(g).all() for g in grads)
