"""Dropout with a counter-based random stream: the Numba kernels against the NumPy
reference (the same mask, bit for bit), the stream's statistics, its independence from
the thread count and the chunking, and the edge cases p = 0 and p = 1."""
import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn.kernels import dropout

from conftest import numerical_gradient, random

# sizes below and above the serial limit and the task size (CHUNK = 16384), not multiples
SHAPES = [(1,), (1, 1), (7, 3), (13, 1, 5), (300, 331), (3, 70001)]


def run_dropout(ops, x, p, seed, offset, store_mask=True):
    y = np.empty_like(x)
    mask = np.empty(x.shape if store_mask else 0, np.uint8)
    assert ops.dropout_forward(x, p, seed, offset, y, mask) is y
    return y, mask


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dropout_matches_reference(shape, p, dtype, rng, numba_ops, reference):
    x = random(rng, shape, dtype)
    dy = random(rng, shape, dtype)
    y, mask = run_dropout(numba_ops, x, p, 1234, 5678)
    y_ref, mask_ref = run_dropout(reference, x, p, 1234, 5678)
    np.testing.assert_array_equal(mask, mask_ref)
    assert y.dtype == dtype and mask.dtype == np.uint8
    np.testing.assert_array_equal(y, y_ref)
    scale = dtype(1 / (1 - p)) if p < 1 else dtype(0)
    np.testing.assert_array_equal(y, np.where(mask == 1, x * scale, 0))
    dx, dx_ref = np.empty_like(dy), np.empty_like(dy)
    assert numba_ops.dropout_backward(dy, mask, p, dx) is dx
    reference.dropout_backward(dy, mask, p, dx_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_array_equal(dx, np.where(mask == 1, dy * scale, 0))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_p_zero_and_one_are_exact(backend, dtype):
    ops = fnn.get_backend(backend)
    x = np.array([[-np.inf, -1e30, -1.0, 0.0, 2.5, 1e30, np.inf]], dtype)
    with np.errstate(all="raise"):                       # no division by zero for p = 1
        y, mask = run_dropout(ops, x, 0.0, 9, 0)
        np.testing.assert_array_equal(y, x)
        assert mask.all()
        y, mask = run_dropout(ops, x, 1.0, 9, 0)
        np.testing.assert_array_equal(y, 0)             # a dropped inf is 0, not NaN
        assert not mask.any()
        dx = ops.dropout_backward(np.ones_like(x), mask, 1.0, np.empty_like(x))
        np.testing.assert_array_equal(dx, 0)


def test_mask_is_optional_and_kernels_work_in_place(rng, numba_ops):
    x = random(rng, (301, 333), np.float32)
    y, mask = run_dropout(numba_ops, x, 0.3, 5, 77)
    y_nomask, empty = run_dropout(numba_ops, x, 0.3, 5, 77, store_mask=False)
    assert empty.size == 0
    np.testing.assert_array_equal(y_nomask, y)
    x_in = x.copy()
    assert numba_ops.dropout_forward(x_in, 0.3, 5, 77, x_in, np.empty(0, np.uint8)) is x_in
    np.testing.assert_array_equal(x_in, y)
    dy = random(rng, x.shape, np.float32)
    dx = numba_ops.dropout_backward(dy, mask, 0.3, np.empty_like(dy))
    assert numba_ops.dropout_backward(dy, mask, 0.3, dy) is dy
    np.testing.assert_array_equal(dy, dx)


def test_mask_depends_only_on_seed_offset_and_index(numba_ops, reference):
    """The counter model: element i of a call at ``offset`` is the element
    ``offset + i`` of the stream, however the array is split or shaped."""
    x = np.ones(100_003, np.float64)
    _, whole = run_dropout(numba_ops, x, 0.5, 42, 1000)
    for split in (1, 16383, 16384, 50_001):
        _, head = run_dropout(numba_ops, x[:split], 0.5, 42, 1000)
        _, tail = run_dropout(numba_ops, x[split:], 0.5, 42, 1000 + split)
        np.testing.assert_array_equal(np.concatenate([head, tail]), whole)
    _, shaped = run_dropout(numba_ops, x[:100_000].reshape(10, 100, 100), 0.5, 42, 1000)
    np.testing.assert_array_equal(shaped.reshape(-1), whole[:100_000])
    # the largest seed and an offset that wraps around 2**64: same in both backends
    for seed, offset in ((2**64 - 1, 2**64 - 50), (0, 0)):
        _, a = run_dropout(numba_ops, x[:200], 0.5, seed, offset)
        _, b = run_dropout(reference, x[:200], 0.5, seed, offset)
        np.testing.assert_array_equal(a, b)


def test_mask_identical_for_any_thread_count(dtype):
    x = random(np.random.default_rng(1), (517, 1031), dtype)
    ops = fnn.get_backend("numba")
    results = []
    before = numba.get_num_threads()
    try:
        for n_threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n_threads)
            y, mask = run_dropout(ops, x, 0.25, 2024, 31)
            dx = ops.dropout_backward(x, mask, 0.25, np.empty_like(x))
            results.append((y, mask, dx))
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_stream_statistics(p, numba_ops):
    """On 1e6 draws: the keep rate is within 5 sigma of 1 - p; neighbouring elements (lag
    1, and a row apart for a 1000-wide layer) are uncorrelated within 5 sigma; another
    offset or another seed gives another mask (agreement at the rate of independent
    masks, p**2 + (1 - p)**2, within 5 sigma); the same seed and offset the same mask."""
    n = 1_000_000
    x = np.ones(n, np.float32)
    _, mask = run_dropout(numba_ops, x, p, 17, 0)
    keep = mask.astype(np.float64)
    q = 1 - p
    sigma = np.sqrt(p * q / n)
    assert abs(keep.mean() - q) < 5 * sigma, keep.mean()
    for lag in (1, 2, 1000):
        r = np.corrcoef(keep[:-lag], keep[lag:])[0, 1]
        assert abs(r) < 5 / np.sqrt(n), (lag, r)
    agree = p * p + q * q
    agree_sigma = np.sqrt(agree * (1 - agree) / n)
    for seed, offset in ((17, n), (17, 1), (18, 0), (2**40 + 17, 0)):
        _, other = run_dropout(numba_ops, x, p, seed, offset)
        rate = np.mean(other == mask)
        assert abs(rate - agree) < 5 * agree_sigma, (seed, offset, rate)
    np.testing.assert_array_equal(run_dropout(numba_ops, x, p, 17, 0)[1], mask)


def test_keep_threshold_resolution():
    # keep iff u < floor((1 - p) 2**32): exact rates at the ends, 2**-32 resolution between
    assert dropout.keep_threshold(0.0) == 2**32
    assert dropout.keep_threshold(1.0) == 0
    assert dropout.keep_threshold(0.25) == 3 * 2**30
    assert dropout.keep_threshold(1 - 2.0**-32) == 1


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_backward_matches_finite_differences(backend, rng):
    ops = fnn.get_backend(backend)
    x = random(rng, (5, 7), np.float64)
    w = random(rng, (5, 7), np.float64)

    def loss():
        return float((w * run_dropout(ops, x, 0.4, 3, 11)[0]).sum())

    _, mask = run_dropout(ops, x, 0.4, 3, 11)
    dx = ops.dropout_backward(w, mask, 0.4, np.empty_like(x))
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
