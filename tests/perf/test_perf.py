"""pytest-benchmark cases for the hot kernels (the same cases as ``fastnn bench``).

CI runs them with ``--benchmark-disable`` (once each, as tests); for numbers run
``python -m pytest tests/perf --benchmark-enable --benchmark-only``.  Each case also
checks that the benchmarked Numba call agrees with the NumPy backend.
"""
import numpy as np
import pytest

from fastnn import bench


@pytest.mark.parametrize("layout", ["nn", "nt", "tn"])
@pytest.mark.parametrize("batch", [1, 32, 128])
def test_gemm(benchmark, layout, batch):
    case = bench.gemm_case(layout, batch, 784, 512)
    expected = case.run["numpy"]().copy()
    result = benchmark(case.run["numba"])
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("batch", [1, 32, 2048])
def test_dense(benchmark, direction, batch):
    case = bench.dense_case(direction, batch)
    expected = case.run["numpy"]()
    expected = [a.copy() for a in expected] if direction == "backward" else expected.copy()
    result = benchmark(case.run["numba"])
    for got, want in zip(result, expected) if direction == "backward" else [(result, expected)]:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "gelu"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_activation(benchmark, name, direction):
    case = bench.activation_case(name, direction, shape=(256, 512))
    expected = case.run["numpy"]().copy()
    result = benchmark(case.run["numba"])
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 128, 2048])
def test_softmax_xent(benchmark, batch):
    case = bench.loss_case("softmax_xent", batch)
    expected = case.run["numpy"]()
    assert benchmark(case.run["numba"]) == pytest.approx(expected, rel=1e-5)


def test_sgd_momentum(benchmark):
    case = bench.optimizer_case(True, 784 * 512)
    benchmark(case.run["numba"])
    fast, ref = bench.optimizer_case(True, 784 * 512), bench.optimizer_case(True, 784 * 512)
    for _ in range(3):
        fast.run["numba"]()
        ref.run["numpy"]()
    np.testing.assert_allclose(fast.data["param"], ref.data["param"], rtol=1e-6)
    np.testing.assert_allclose(fast.data["velocity"], ref.data["velocity"], rtol=1e-5)


def test_adam(benchmark):
    """fastnn.Adam.step() on a 784x512 float32 parameter (fastnn bench races it against
    the careful NumPy user's Adam and PyTorch's foreach Adam)."""
    case = bench.adam_case(torch=False)
    benchmark(case.run["numba"])
    check = bench.adam_case(torch=False)
    for _ in range(3):
        check.run["numba"]()
        check.run["numpy"]()
    np.testing.assert_allclose(check.data["numba"], check.data["numpy"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch", [32, 512])
def test_training_step(benchmark, batch):
    case = bench.training_step_case(batch)
    benchmark(case.run["numba"])
    check = bench.training_step_case(batch)
    for _ in range(2):
        check.run["numba"]()
        check.run["numpy"]()
    for (name, a), (_, b) in zip(check.data["numba"].named_parameters(),
                                 check.data["numpy"].named_parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("batch", [32, 128])
def test_adam_training_step(benchmark, batch):
    """The training step with Adam (the training-adam table of fastnn bench)."""
    benchmark(bench.FastnnStep(batch, "numba", optimizer="adam"))


@pytest.mark.parametrize("contender", ["fastnn", "torch"])
@pytest.mark.parametrize("batch", [32, 128])
def test_bn_dropout_training_step(benchmark, contender, batch):
    """The step with Linear(bias=False) -> BatchNorm1d -> ReLU -> Dropout(0.2) hidden
    layers (the training-bn table of fastnn bench): fastnn, and PyTorch eager with the
    same modules (skipped without PyTorch); the parameters stay finite.  (That both
    compute the same step is tested with p = 0 in tests/test_bench.py.)"""
    if contender == "torch":
        pytest.importorskip("torch")
    step = bench.make_contender(f"{contender}-bn", batch).fn
    benchmark(step)
    assert all(np.isfinite(p).all() for p in step.parameters())


@pytest.mark.parametrize("contender", ["fastnn", "torch"])
def test_transformer_training_step(benchmark, contender):
    """The step of ``fastnn train --model transformer`` at its batch of 128 (the
    training-transformer table of fastnn bench): fastnn, and PyTorch eager from the same
    weights (skipped without PyTorch); the parameters stay finite.  (That both compute
    the same step is tested in tests/test_bench_transformer.py.)"""
    if contender == "torch":
        pytest.importorskip("torch")
    step = bench.make_contender(f"{contender}-transformer", 128).fn
    benchmark(step)
    assert all(np.isfinite(p).all() for p in step.parameters())


@pytest.mark.parametrize("contender", ["numpy", "torch", "jax"])
@pytest.mark.parametrize("batch", [32, 128])
def test_baseline_training_step(benchmark, contender, batch):
    """The baselines ``fastnn bench`` races fastnn's step against: the hand-written NumPy
    step, PyTorch eager and JAX jit (the last two when installed).  Each one, after two
    steps, holds the same weights as fastnn's NumPy backend."""
    if contender != "numpy":
        pytest.importorskip(contender)
    step = bench.make_contender(contender, batch).fn
    benchmark(step)
    check, reference = bench.make_contender(contender, batch).fn, bench.FastnnStep(batch, "numpy")
    for _ in range(2):
        check()
        reference()
    for got, want in zip(check.parameters(), reference.parameters()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["batch_norm", "layer_norm"])
def test_norm_forward_backward(benchmark, kind):
    """BatchNorm1d / LayerNorm forward + backward at (2048, 512) float32 (fastnn bench
    races it against the careful NumPy user and PyTorch); checked against the NumPy one."""
    case = bench.norm_case(kind)
    expected = [a.copy() for a in case.run["numpy"]()]
    result = benchmark(case.run["numba"])
    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3)


def test_dropout_forward_backward(benchmark):
    """Dropout (p = 0.5) forward + backward at (2048, 512) float32; the outputs follow the
    mask and about half the elements are kept."""
    case = bench.dropout_case()
    y, dx, mask = benchmark(case.run["numba"])
    x, dy = case.data["x"], case.data["dy"]
    np.testing.assert_array_equal(y, np.where(mask == 1, x * np.float32(2), 0))
    np.testing.assert_array_equal(dx, np.where(mask == 1, dy * np.float32(2), 0))
    assert abs(mask.mean() - 0.5) < 0.01


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_embedding(benchmark, direction):
    """Embedding lookup / table gradient, (32, 128) ids into a (10000, 256) float32 table
    (fastnn bench races it against fancy indexing and np.add.at); checked against them."""
    case = bench.embedding_case(direction)
    expected = case.run["numpy"]().copy()
    np.testing.assert_array_equal(benchmark(case.run["numba"]), expected)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", [(8, 8, 512, 64), (1, 8, 2048, 64)], ids=str)
@pytest.mark.parametrize("direction", ["forward", "forward+backward"])
def test_attention(benchmark, direction, shape, causal):
    """Scaled dot-product attention, float32, issue 11's shapes (fastnn bench races it
    against the careful NumPy user and PyTorch); checked against the NumPy user's."""
    case = bench.attention_case(direction, shape, causal)
    expected = case.run["numpy"]()
    expected = [a.copy() for a in (expected if isinstance(expected, tuple) else (expected,))]
    result = benchmark(case.run["numba"])
    for got, want in zip(result if isinstance(result, tuple) else (result,), expected):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4)
