"""Embedding and mean pooling on the GPU (:mod:`fastnn.kernels.cuda.embedding`,
:mod:`fastnn.kernels.cuda.pooling`) against the NumPy reference, and the sequence layers
(Embedding, positional encodings, Residual, MeanPool, FirstToken) training on the GPU as
on the CPU.

Shapes are tiny (every simulated GPU thread is a Python thread) but cover one row, widths
over one 32-column strip, duplicated ids, rows no id uses, and table blocks of more than
one row.
"""
import numpy as np
import pytest

import fastnn as fnn
from cudatest import assert_close, needs_cuda
from fastnn.backends import numpy_ops

pytestmark = needs_cuda

# (table rows V, width D, ids N)
EMBEDDING_SHAPES = [(1, 1, 1), (5, 3, 12), (9, 37, 4)]
POOL_SHAPES = [(1, 1, 1), (2, 5, 3), (3, 2, 37)]


def to_device(*arrays):
    from numba import cuda
    return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]


def test_ptx_signatures_cover_every_kernel_in_both_dtypes():
    from fastnn.kernels.cuda import embedding, pooling
    names = sorted(name for name, _, _ in embedding.PTX_SIGNATURES + pooling.PTX_SIGNATURES)
    kernels = ("embedding_forward", "embedding_backward", "mean_pool_forward",
               "mean_pool_backward")
    assert names == sorted(f"{k}_{t}" for k in kernels for t in ("float32", "float64"))


@pytest.mark.parametrize("shape", EMBEDDING_SHAPES, ids=str)
def test_embedding_forward(shape, dtype, rng):
    from fastnn.kernels.cuda import embedding
    n_table, width, n = shape
    weight = rng.standard_normal((n_table, width)).astype(dtype)
    idx = rng.integers(0, n_table, n).astype(np.int64)
    d_weight, d_idx, d_out = to_device(weight, idx, np.empty((n, width), dtype))
    assert embedding.embedding_forward(d_weight, d_idx, d_out) is d_out
    np.testing.assert_array_equal(d_out.copy_to_host(), weight[idx])


def test_embedding_forward_gives_nan_rows_for_ids_out_of_range():
    """Device ids are not scanned by the API: a bad one must not read out of bounds."""
    from fastnn.kernels.cuda import embedding
    weight = np.arange(6, dtype=np.float32).reshape(3, 2)
    d_weight, d_idx, d_out = to_device(weight, np.array([2, 3, -1, 0]),
                                       np.empty((4, 2), np.float32))
    out = embedding.embedding_forward(d_weight, d_idx, d_out).copy_to_host()
    np.testing.assert_array_equal(out[[0, 3]], weight[[2, 0]])
    assert np.isnan(out[1:3]).all()


@pytest.mark.parametrize("padding_idx", [-1, 1])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("shape", EMBEDDING_SHAPES, ids=str)
def test_embedding_backward_equals_the_reference(shape, accumulate, padding_idx, dtype, rng):
    """The same additions in the same order as ``np.add.at``: equal values; rows without
    ids zero (untouched when accumulating); no gradient for the padding row."""
    from fastnn.kernels.cuda import embedding
    n_table, width, n = shape
    pad = padding_idx if padding_idx < n_table else -1
    idx = rng.integers(0, n_table, n).astype(np.int64)
    dout = rng.standard_normal((n, width)).astype(dtype)
    start = rng.standard_normal((n_table, width)).astype(dtype)
    d_dout, d_idx, d_dweight = to_device(dout, idx, start)
    got = embedding.embedding_backward(d_dout, d_idx, d_dweight, accumulate, pad)
    assert got is d_dweight
    want = numpy_ops.embedding_backward(dout, idx, start.copy(), accumulate, pad)
    assert_close(got, want, dtype, rtol32=1e-6)


def test_embedding_backward_with_row_blocks_of_several_rows(monkeypatch, rng):
    """Fewer threads than table rows (a large table): each thread walks a block of rows."""
    from fastnn.kernels.cuda import embedding
    monkeypatch.setattr(embedding, "TARGET_THREADS", 64)
    n_table, width, n = 11, 3, 30
    idx = rng.integers(0, n_table, n).astype(np.int64)
    dout = rng.standard_normal((n, width))
    assert embedding._row_blocks(n_table, width) == (6, 2)
    d_dout, d_idx, d_dweight = to_device(dout, idx, np.full((n_table, width), 9.0))
    got = embedding.embedding_backward(d_dout, d_idx, d_dweight, False, 4).copy_to_host()
    want = numpy_ops.embedding_backward(dout, idx, np.empty((n_table, width)), False, 4)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", POOL_SHAPES, ids=str)
def test_mean_pool(shape, dtype, rng):
    from fastnn.kernels.cuda import pooling
    p, s, q = shape
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal((p, q)).astype(dtype)
    d_x, d_out, d_dy, d_dx = to_device(x, np.empty((p, q), dtype), dy, np.empty(shape, dtype))
    assert pooling.mean_pool_forward(d_x, d_out) is d_out
    assert_close(d_out, numpy_ops.mean_pool_forward(x, np.empty((p, q), dtype)), dtype,
                 atol_scale=3.0)
    assert pooling.mean_pool_backward(d_dy, d_dx) is d_dx
    assert_close(d_dx, numpy_ops.mean_pool_backward(dy, np.empty(shape, dtype)), dtype)


# --------------------------------------------------------------------------- layers
def _sequence_model(backend, dtype, variant, seed=2):
    if variant == "learned+mean":
        positions, pool = fnn.PositionalEmbedding(6, 5), fnn.MeanPool()
    else:
        positions, pool = fnn.SinusoidalPositionalEncoding(5, 6), fnn.FirstToken()
    return fnn.Sequential(fnn.Embedding(9, 5, padding_idx=0), positions,
                          fnn.Residual(fnn.Sequential(fnn.Linear(5, 7), fnn.ReLU(),
                                                      fnn.Linear(7, 5))),
                          pool, fnn.Linear(5, 3), dtype=dtype, backend=backend, seed=seed)


@pytest.mark.parametrize("variant, dtype, rtol", [("learned+mean", "float64", 1e-10),
                                                  ("sinusoidal+first", "float32", 2e-4)])
def test_a_sequence_model_trains_as_on_the_cpu(variant, dtype, rtol):
    """Integer ids through fit() on the GPU: the same losses, accuracies and weights as on
    the CPU backend (the embedding gradients are summed in the same order)."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 9, (16, 6))
    y = rng.integers(0, 3, 16)
    histories, weights = {}, {}
    for backend in ("numba", "cuda"):
        model = _sequence_model(backend, dtype, variant)
        model.compile(optimizer=fnn.Adam(lr=0.01), loss="cross_entropy", metrics=["accuracy"])
        histories[backend] = model.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0).history
        weights[backend] = model.state_dict()
        if backend == "cuda":
            labels = model.predict(x)
            assert type(labels) is np.ndarray and labels.shape == (16,)
    np.testing.assert_allclose(histories["cuda"]["loss"], histories["numba"]["loss"], rtol=rtol)
    assert histories["cuda"]["accuracy"] == histories["numba"]["accuracy"]
    for name, value in weights["numba"].items():
        np.testing.assert_allclose(weights["cuda"][name], value, rtol=rtol, atol=rtol,
                                   err_msg=name)
    assert not weights["cuda"]["0.weight"][0].any()            # the padding row


def test_device_ids_through_the_explicit_protocol():
    from numba import cuda
    rng = np.random.default_rng(2)
    x = rng.integers(0, 9, (4, 6))
    gpu, cpu = _sequence_model("cuda", "float64", "learned+mean"), \
        _sequence_model("numba", "float64", "learned+mean")
    out = gpu(cuda.to_device(x))
    np.testing.assert_allclose(out.copy_to_host(), cpu(x), rtol=1e-12)
    np.testing.assert_allclose(gpu(x).copy_to_host(), cpu(x), rtol=1e-12)   # host ids
    with pytest.raises(TypeError, match="int64"):
        gpu(cuda.to_device(x.astype(np.int32)))
    with pytest.raises(ValueError, match=r"outside \[0, 9\)"):
        gpu(x + 5)
