"""Tests for fastnn.kernels.matmul against a float64 NumPy reference.

The shapes are chosen to reach every rule of the dispatcher (see ``_gemm`` in
kernels/matmul.py) and every path inside each, for the tiles of whichever instruction
set the kernels are compiled for (kernels/target.py; CI runs this file for the AVX-512,
AVX2 and portable paths): transposed output (``matmul_tn`` with N < 16 and K >= 32);
narrow tiles (N < 16, including ``matmul_nt``'s transposed copy of ``b``); dot-product
tiles (``matmul_nt`` with M < 24, one row and several); the one-row and few-row tiles
(M <= 7), with a ragged last column group read through a zero-padded copy; the
``MR x NR`` micro-kernel with the right operand read in place (M < 96) and packed
(M >= 96, and ``matmul_nt``); the serial and the parallel driver (2*M*N*K below and above
``SERIAL_FLOPS``), split by columns and by rows; several k blocks, column blocks and row
blocks; ragged micro-tiles (M, N, K not multiples of 6, 8, 12, 16, 32); short
contractions (K = 1, 2, 3, 7, 10) where the micro-kernel's fixed costs dominate.
"""
import numba
import numpy as np
import pytest

from fastnn.kernels import matmul as mm
from fastnn.kernels.matmul import matmul, matmul_nt, matmul_tn

DTYPES = [np.float32, np.float64]

# (M, N, K): the output is (M, N), the contraction has length K.
SHAPES = [
    (1, 1, 1),
    (2, 3, 1),          # K = 1: a rank-1 update
    (1, 13, 7),
    (3, 7, 13),
    (7, 13, 31),
    (13, 31, 67),       # dot tiles for matmul_nt (M < 24)
    (31, 67, 131),
    (67, 131, 7),
    (131, 67, 31),
    (17, 9, 300),       # narrow, several k blocks for the other paths
    (1, 1031, 300),     # one row, parallel: columns split among threads
    (3, 600, 257),      # 4-row tiles / dot tiles, ragged last vector group
    (5, 130, 17),
    (7, 2000, 70),      # few rows, parallel (columns split)
    (8, 33, 40),        # the smallest micro-kernel case
    (37, 250, 521),     # B in place, k blocks, ragged tiles
    (40, 700, 300),     # B in place, parallel: columns split
    (257, 300, 129),    # packed, several row blocks and column chunks
    (131, 1030, 263),   # rows, chunks and k blocks all with remainders
    (66, 4100, 3),      # several column blocks
    (515, 70, 300),     # many rows: packed in every layout, k blocks
    (513, 4100, 2),     # packed, several column blocks
    (300, 10, 100),     # narrow / transposed output, parallel: rows split
    (2000, 15, 70),     # narrow / transposed output, parallel
    (97, 89, 101),      # primes
    (300, 256, 10),     # K = 10: the input gradient of a 10-class layer
    (262, 513, 32),     # rows split between threads, short k, ragged everywhere
]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]

LAYOUTS = ["nn", "nt", "tn"]


def _operands(layout, M, N, K, dtype, rng):
    """Arguments for one layout and the float64 reference of the product."""
    a = rng.standard_normal((M, K)).astype(dtype)   # the logical left operand
    b = rng.standard_normal((K, N)).astype(dtype)   # the logical right operand
    if layout == "nn":
        fn, x, y = matmul, a, b
    elif layout == "nt":
        fn, x, y = matmul_nt, a, np.ascontiguousarray(b.T)
    else:
        fn, x, y = matmul_tn, np.ascontiguousarray(a.T), b
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return fn, x, y, a64 @ b64, np.abs(a64) @ np.abs(b64)


def _tolerance(dtype, K):
    """Allowed error relative to sum_k |a_ik| |b_kj| (plus |out| when accumulating)."""
    if dtype == np.float64:
        return 1e-12
    return 2.0 * np.sqrt(K) * np.finfo(np.float32).eps


def _assert_close(result, expected, scale, dtype, K):
    err = np.abs(result.astype(np.float64) - expected)
    bound = _tolerance(dtype, K) * scale + np.finfo(dtype).tiny
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (
        f"max error {err[worst]:.3g} > {bound[worst]:.3g} at {worst}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("accumulate", [False, True])
def test_matches_float64_reference(shape, layout, dtype, accumulate):
    M, N, K = shape
    rng = np.random.default_rng([M, N, K, LAYOUTS.index(layout), accumulate])
    fn, x, y, expected, scale = _operands(layout, M, N, K, dtype, rng)
    x_before, y_before = x.copy(), y.copy()
    if accumulate:
        out = rng.standard_normal((M, N)).astype(dtype)
        expected = expected + out.astype(np.float64)
        scale = scale + np.abs(out.astype(np.float64))
    else:
        out = np.full((M, N), np.nan, dtype=dtype)   # stale contents must not leak

    result = fn(x, y, out, accumulate)

    assert result is out
    assert result.dtype == dtype
    assert result.shape == (M, N)
    _assert_close(result, expected, scale, dtype, K)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_accumulate_defaults_to_overwrite(layout, dtype):
    M, N, K = 5, 6, 7
    rng = np.random.default_rng(1)
    fn, x, y, expected, scale = _operands(layout, M, N, K, dtype, rng)
    out = np.full((M, N), 1e3, dtype=dtype)
    assert fn(x, y, out) is out
    _assert_close(out, expected, scale, dtype, K)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_accumulate_twice_is_twice_the_product(layout, dtype):
    # Gradient accumulation over two micro-batches of the same data.
    M, N, K = 40, 70, 300
    rng = np.random.default_rng(2)
    fn, x, y, expected, scale = _operands(layout, M, N, K, dtype, rng)
    out = np.empty((M, N), dtype=dtype)
    fn(x, y, out, False)
    fn(x, y, out, True)
    _assert_close(out, 2.0 * expected, 2.0 * scale, dtype, K)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("M, N", [(3, 5), (1, 1), (0, 4), (4, 0)])
def test_empty_contraction_and_empty_output(layout, dtype, M, N):
    K = 0
    rng = np.random.default_rng(3)
    fn, x, y, _, _ = _operands(layout, M, N, K, dtype, rng)
    out = np.full((M, N), 2.5, dtype=dtype)
    assert fn(x, y, out, True) is out
    np.testing.assert_array_equal(out, np.full((M, N), 2.5, dtype=dtype))
    assert fn(x, y, out, False) is out
    np.testing.assert_array_equal(out, np.zeros((M, N), dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(5, 9, 6), (70, 600, 300), (3, 40, 70), (40, 10, 70),
                                   (130, 12, 40), (1, 50, 30)],
                         ids=["serial", "parallel", "rows-dot", "narrow-transposed",
                              "narrow", "one-row"])
def test_nan_and_inf_propagate(shape, layout, dtype):
    # Only 'contract' and 'reassoc' fast-math flags are used: a NaN or Inf in an
    # operand must reach exactly the outputs that depend on it.
    M, N, K = shape
    rng = np.random.default_rng(4)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    a[M // 2, K - 1] = np.nan
    b[0, N - 1] = np.inf
    a[:, 0] = np.abs(a[:, 0]) + 1          # so the Inf column is +Inf, not -Inf, ...
    a[M // 2, 0] = 1.0
    x, y = {"nn": (a, b), "nt": (a, np.ascontiguousarray(b.T)),
            "tn": (np.ascontiguousarray(a.T), b)}[layout]
    fn = {"nn": matmul, "nt": matmul_nt, "tn": matmul_tn}[layout]
    out = fn(x, y, np.empty((M, N), dtype=dtype))
    assert np.all(np.isnan(out[M // 2]))
    others = np.delete(np.arange(M), M // 2)
    assert np.all(np.isposinf(out[others, N - 1]))
    assert np.all(np.isfinite(out[others][:, :N - 1]))


def test_float32_stays_float32_inside():
    # 2*big overflows float32 but not float64: a float64 accumulator would return
    # 2*big + 2*big - 2*big - 2*big = 0, a float32 one cannot.
    big = np.float32(3e38)
    a = np.array([[big, big, -big, -big]] * 3, dtype=np.float32)
    b = np.full((4, 5), np.float32(2.0), dtype=np.float32)
    out = matmul(a, b, np.empty((3, 5), dtype=np.float32))
    assert out.dtype == np.float32
    assert not np.any(np.isfinite(out))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(130, 700, 300), (40, 700, 300), (5, 2000, 100),
                                   (3000, 10, 300), (7, 800, 200), (1, 3000, 200),
                                   (2000, 10, 100), (700, 130, 300)],
                         ids=["packed", "in-place", "rows", "narrow", "dot", "one-row",
                              "transposed", "row-split"])
def test_result_does_not_depend_on_thread_count(shape, layout):
    M, N, K = shape
    assert 2 * M * N * K >= mm.SERIAL_FLOPS   # the parallel driver runs
    rng = np.random.default_rng(5)
    fn, x, y, _, _ = _operands(layout, M, N, K, np.float32, rng)
    before = numba.get_num_threads()
    try:
        outs = []
        for threads in sorted({1, 2, before}):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            outs.append(fn(x, y, np.empty((M, N), dtype=np.float32)))
    finally:
        numba.set_num_threads(before)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_small_shape(dtype):
    # Every M, N in 1..17 with contractions around the vector width and the dispatch
    # thresholds, in every layout, accumulating and not: the ragged edges of every tile.
    rng = np.random.default_rng(6)
    for K in (1, 2, 7, 16, 17, 31, 64, 67):
        for M in range(1, 18):
            for N in range(1, 18):
                for layout in LAYOUTS:
                    fn, x, y, expected, scale = _operands(layout, M, N, K, dtype, rng)
                    out = rng.standard_normal((M, N)).astype(dtype)
                    expected = expected + out.astype(np.float64)
                    scale = scale + np.abs(out.astype(np.float64))
                    assert fn(x, y, out, True) is out
                    _assert_close(out, expected, scale, dtype, K)


def test_float64_keeps_float64_precision():
    # A float64 product must not go through float32 anywhere (e.g. a float32 scratch).
    rng = np.random.default_rng(7)
    for M, N, K in [(3, 5, 100), (40, 10, 100), (130, 70, 300), (2, 600, 40)]:
        for layout in LAYOUTS:
            fn, x, y, expected, scale = _operands(layout, M, N, K, np.float64, rng)
            out = fn(x, y, np.empty((M, N)))
            _assert_close(out, expected, scale, np.float64, K)
