"""Embedding (row gather / scatter-add) and mean-pooling kernels: the Numba backend against
the NumPy reference, duplicates, the padding row, gradient accumulation, rows no index
uses, edge values, and results that do not depend on the thread count."""
import numba
import numpy as np
import pytest

from fastnn.kernels import embedding, pooling

from conftest import assert_close, numerical_gradient, random

# (table rows V, width D, indices N): one row, width 1, primes, N > V (many duplicates),
# N < V (most rows unused), and sizes that run on the thread pool (over SERIAL_MAX_BYTES,
# tasks of CHUNK elements that do not divide the table).
EMBEDDING_SHAPES = [(1, 1, 1), (1, 5, 9), (7, 1, 3), (13, 3, 40), (37, 17, 11),
                    (1031, 67, 4099), (4099, 129, 1000), (5, 8, 20000)]
# (P, S, Q) of mean pooling.
POOL_SHAPES = [(1, 1, 1), (1, 7, 1), (3, 1, 5), (5, 7, 3), (67, 13, 129), (33, 130, 257)]


def _indices(rng, n_table, n):
    return rng.integers(0, n_table, n).astype(np.int64)


@pytest.fixture(params=[None, "first", "middle"])
def padding(request):
    return request.param


def _padding_idx(which, n_table):
    return {None: -1, "first": 0, "middle": n_table // 2}[which]


@pytest.mark.parametrize("shape", EMBEDDING_SHAPES, ids=str)
def test_embedding_forward_gathers_rows(shape, dtype, rng, numba_ops, reference):
    n_table, width, n = shape
    weight = random(rng, (n_table, width), dtype)
    idx = _indices(rng, n_table, n)
    out = np.empty((n, width), dtype)
    assert numba_ops.embedding_forward(weight, idx, out) is out
    np.testing.assert_array_equal(out, weight[idx])
    expected = reference.embedding_forward(weight, idx, np.empty((n, width), dtype))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("shape", EMBEDDING_SHAPES, ids=str)
def test_embedding_backward_equals_add_at_bit_for_bit(shape, accumulate, padding, dtype, rng,
                                                     numba_ops, reference):
    """Duplicates are added in index order, as ``np.add.at`` does: the same bits, not just
    close values; rows no index uses are zero (or untouched when accumulating), and the
    padding row gets no gradient."""
    n_table, width, n = shape
    pad = _padding_idx(padding, n_table)
    idx = _indices(rng, n_table, n)
    if pad >= 0:
        idx[::3] = pad                                    # padding appears, with duplicates
    dout = random(rng, (n, width), dtype)
    start = random(rng, (n_table, width), dtype)
    got, want = start.copy(), start.copy()
    assert numba_ops.embedding_backward(dout, idx, got, accumulate, pad) is got
    reference.embedding_backward(dout, idx, want, accumulate, pad)
    np.testing.assert_array_equal(got, want)
    unused = np.setdiff1d(np.arange(n_table), idx)
    if accumulate:
        np.testing.assert_array_equal(got[unused], start[unused])
        if pad >= 0:
            np.testing.assert_array_equal(got[pad], start[pad])
    else:
        assert not got[unused].any()
        if pad >= 0:
            assert not got[pad].any()


def test_embedding_backward_sums_duplicates(dtype, numba_ops):
    dout = np.arange(12, dtype=dtype).reshape(4, 3) + dtype(1)
    idx = np.array([2, 0, 2, 2], np.int64)
    dweight = np.full((4, 3), 7, dtype)
    numba_ops.embedding_backward(dout, idx, dweight, False)
    np.testing.assert_array_equal(dweight, [[4, 5, 6], [0, 0, 0], [1 + 7 + 10, 2 + 8 + 11,
                                                                    3 + 9 + 12], [0, 0, 0]])
    numba_ops.embedding_backward(dout, idx, dweight, True, 0)     # row 0 is padding now
    np.testing.assert_array_equal(dweight[2], [36, 42, 48])
    np.testing.assert_array_equal(dweight[0], [4, 5, 6])
    np.testing.assert_array_equal(dweight[[1, 3]], 0)


def test_embedding_backward_with_no_indices(dtype, numba_ops):
    dweight = np.ones((5, 3), dtype)
    numba_ops.embedding_backward(np.empty((0, 3), dtype), np.empty(0, np.int64), dweight, True)
    np.testing.assert_array_equal(dweight, 1)
    numba_ops.embedding_backward(np.empty((0, 3), dtype), np.empty(0, np.int64), dweight, False)
    np.testing.assert_array_equal(dweight, 0)


def test_embedding_edge_values_pass_through(numba_ops):
    """Large, infinite and NaN values are gathered and summed as they are."""
    weight = np.array([[1e38, -np.inf], [np.nan, 0.0]], np.float32)
    out = np.empty((3, 2), np.float32)
    numba_ops.embedding_forward(weight, np.array([1, 0, 1]), out)
    np.testing.assert_array_equal(out, weight[[1, 0, 1]])
    dweight = np.empty((2, 2), np.float32)
    dout = np.array([[3e38, 1.0], [3e38, np.nan]], np.float32)
    with np.errstate(over="ignore"):
        numba_ops.embedding_backward(dout, np.array([0, 0]), dweight, False)
    assert dweight[0, 0] == np.inf and np.isnan(dweight[0, 1])
    np.testing.assert_array_equal(dweight[1], 0)


def test_embedding_backward_matches_finite_differences(rng, numba_ops):
    """The table gradient of ``sum(w * out)`` (float64)."""
    weight = rng.normal(size=(6, 4))
    idx = np.array([5, 1, 1, 0, 5, 5, 3], np.int64)
    w = rng.normal(size=(idx.size, 4))

    def loss():
        return np.sum(w * numba_ops.embedding_forward(weight, idx, np.empty((idx.size, 4))))

    dweight = numba_ops.embedding_backward(w, idx, np.empty_like(weight), False)
    np.testing.assert_allclose(dweight, numerical_gradient(loss, weight), rtol=1e-7,
                               atol=1e-9)


# --------------------------------------------------------------------------- mean pooling
@pytest.mark.parametrize("shape", POOL_SHAPES, ids=str)
def test_mean_pool_matches_reference(shape, dtype, rng, numba_ops, reference):
    p, s, q = shape
    x = random(rng, shape, dtype, 3.0) + dtype(1)
    out = np.empty((p, q), dtype)
    assert numba_ops.mean_pool_forward(x, out) is out
    assert_close(out, reference.mean_pool_forward(x, np.empty((p, q), dtype)), dtype,
                 atol_scale=3.0)
    assert_close(out, x.astype(np.float64).mean(axis=1), dtype, rtol32=1e-5, atol_scale=3.0)
    dy = random(rng, (p, q), dtype)
    dx = np.empty(shape, dtype)
    assert numba_ops.mean_pool_backward(dy, dx) is dx
    np.testing.assert_array_equal(dx, reference.mean_pool_backward(dy, np.empty(shape, dtype)))


def test_mean_pool_of_equal_values_is_exact(numba_ops, dtype):
    x = np.full((3, 7, 5), 0.1, dtype)
    out = numba_ops.mean_pool_forward(x, np.empty((3, 5), dtype))
    assert np.abs(out - dtype(0.1)).max() <= 4 * np.finfo(dtype).eps


def test_mean_pool_backward_matches_finite_differences(rng, numba_ops):
    x = rng.normal(size=(3, 4, 5))
    w = rng.normal(size=(3, 5))

    def loss():
        return np.sum(w * numba_ops.mean_pool_forward(x, np.empty((3, 5))))

    dx = numba_ops.mean_pool_backward(w, np.empty_like(x))
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- threads
@pytest.mark.parametrize("accumulate", [False, True])
def test_results_identical_for_any_thread_count(accumulate, dtype):
    """Large enough for the thread pool; skewed ids (a few very frequent, as tokens are)."""
    rng = np.random.default_rng(7)
    n_table, width, n = 3001, 131, 9000
    idx = np.minimum(rng.zipf(1.3, n) - 1, n_table - 1).astype(np.int64)
    weight = random(rng, (n_table, width), dtype)
    dout = random(rng, (n, width), dtype)
    start = random(rng, (n_table, width), dtype)
    x = random(rng, (40, 97, 131), dtype)
    dy = random(rng, (40, 131), dtype)
    results = []
    before = numba.get_num_threads()
    try:
        for n_threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n_threads)
            results.append((
                embedding.embedding_forward(weight, idx, np.empty((n, width), dtype)),
                embedding.embedding_backward(dout, idx, start.copy(), accumulate, 1),
                pooling.mean_pool_forward(x, np.empty((40, 131), dtype)),
                pooling.mean_pool_backward(dy, np.empty_like(x))))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("accumulate", [False, True])
def test_backward_tasks_cover_the_table_with_balanced_work(accumulate):
    """Skewed ids: the tasks split the rows by work (ids plus, without accumulate, the
    rows written), contiguous and in order."""
    rng = np.random.default_rng(3)
    n_table, width = 5000, 64
    idx = np.minimum(rng.zipf(1.2, 20000) - 1, n_table - 1).astype(np.int64)
    starts, _ = embedding._bucket_by_row(idx, n_table)
    bounds = embedding._balanced_tasks(starts, width, accumulate)
    assert bounds[0] == 0 and bounds[-1] == n_table and np.all(np.diff(bounds) >= 0)
    counts = np.diff(starts)
    work = [(counts[a:b].sum() + (0 if accumulate else b - a)) * width
            for a, b in zip(bounds[:-1], bounds[1:])]
    heaviest_row = (counts.max() + 1) * width
    assert max(work) <= 2 * embedding.CHUNK + heaviest_row
