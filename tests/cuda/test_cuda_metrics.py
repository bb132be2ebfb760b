"""The metric sums of ``fit(metrics=[...])`` on the GPU against the NumPy backend."""
import numpy as np
import pytest

from fastnn.backends import numpy_ops
from cudatest import device_random, needs_cuda

pytestmark = needs_cuda


@pytest.mark.parametrize("rows, cols", [(1, 1), (7, 3), (37, 10), (300, 2)])
def test_argmax_matches(rows, cols, dtype, rng):
    from numba import cuda
    from fastnn.kernels.cuda import metrics
    host, outputs = device_random(rng, (rows, cols), dtype)
    host[::3, :] = 0.5                               # ties: the first index wins
    outputs = cuda.to_device(host)
    labels = rng.integers(0, cols, rows)
    labels[::2] = host[::2].argmax(axis=1)           # some matches for sure
    assert metrics.argmax_matches(outputs, cuda.to_device(labels)) == \
        numpy_ops.argmax_matches(host, labels)
    soft_host = rng.random((rows, cols)).astype(dtype)
    soft_host[::2] = host[::2]
    assert metrics.argmax_matches_soft(outputs, cuda.to_device(soft_host)) == \
        numpy_ops.argmax_matches_soft(host, soft_host)


@pytest.mark.parametrize("shape", [(1, 1), (13, 3), (300, 1)])
def test_sign_matches_and_abs_error_sum(shape, dtype, rng):
    from numba import cuda
    from fastnn.kernels.cuda import metrics
    host, outputs = device_random(rng, shape, dtype)
    targets = rng.random(shape).astype(dtype)
    assert metrics.sign_matches(outputs, cuda.to_device(targets)) == \
        numpy_ops.sign_matches(host, targets)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert metrics.abs_error_sum(outputs, cuda.to_device(targets)) == pytest.approx(
        numpy_ops.abs_error_sum(host, targets), rel=rtol)


@pytest.mark.parametrize("shape", [(1, 1), (13, 3), (300, 1)])
def test_squared_error_sum(shape, dtype, rng):
    from numba import cuda
    from fastnn.kernels.cuda import metrics
    host, outputs = device_random(rng, shape, dtype)
    targets = rng.random(shape).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert metrics.squared_error_sum(outputs, cuda.to_device(targets)) == pytest.approx(
        numpy_ops.squared_error_sum(host, targets), rel=rtol)


@pytest.mark.parametrize("rows, cols", [(1, 1), (7, 3), (37, 10), (300, 6)])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_matches(rows, cols, k, dtype, rng):
    from numba import cuda
    from fastnn.kernels.cuda import metrics
    host = rng.standard_normal((rows, cols)).astype(dtype)
    host[::4, :] = 0.5                               # ties: all in the top k
    host[1::7, 0] = np.nan                           # a NaN at the label never counts
    labels = rng.integers(0, cols, rows)
    outputs = cuda.to_device(host)
    expected = numpy_ops.top_k_matches(host, labels, k)
    assert metrics.top_k_matches(outputs, cuda.to_device(labels), k) == expected
    soft = rng.random((rows, cols)).astype(dtype)
    assert metrics.top_k_matches_soft(outputs, cuda.to_device(soft), k) == \
        numpy_ops.top_k_matches_soft(host, soft, k)


@pytest.mark.parametrize("loss, metrics, classes", [
    ("cross_entropy", ["accuracy", "top_2_accuracy", "top_k_accuracy"], 6),
    ("mse", ["mse", "mae", "rmse"], 3)])
def test_fit_reports_the_cpu_metrics(loss, metrics, classes):
    """fit on the GPU logs the metrics (and val_ metrics) the CPU backend logs."""
    import fastnn as fnn
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 4))
    y = rng.integers(0, classes, 30) if loss == "cross_entropy" else rng.standard_normal((30, 3))
    histories = {}
    for backend in ("numba", "cuda"):
        model = fnn.Sequential(fnn.Linear(4, 5), fnn.Tanh(), fnn.Linear(5, classes),
                               dtype="float64", backend=backend, seed=1)
        model.compile(optimizer=fnn.SGD(lr=0.1), loss=loss, metrics=metrics)
        histories[backend] = model.fit(x[:20], y[:20], epochs=2, batch_size=8, shuffle=False,
                                       validation_data=(x[20:], y[20:]), verbose=0).history
    for key, values in histories["numba"].items():
        if key != "samples_per_second":
            np.testing.assert_allclose(histories["cuda"][key], values, rtol=1e-10, err_msg=key)
