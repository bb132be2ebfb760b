"""fastnn.distributed.predict_dask against model.predict / predict_proba / model(x) on the
whole array, on Dask's threaded scheduler and on a 2-process LocalCluster."""
import subprocess
import sys

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fastnn as fnn  # noqa: E402
from fastnn import distributed as fdist  # noqa: E402

METHODS = ["predict", "predict_proba", "__call__"]


@pytest.fixture(scope="module")
def model():
    m = fnn.Sequential(fnn.Linear(20, 16), fnn.ReLU(), fnn.Linear(16, 3), seed=0)
    m.compile(optimizer="sgd", loss="cross_entropy")
    return m


@pytest.fixture(scope="module")
def model_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("dask") / "model.fnn"
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).standard_normal((1000, 20)).astype(np.float32)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, host="127.0.0.1")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _reference(model, x, method):
    return model(x) if method == "__call__" else getattr(model, method)(x)


def _check(result, expected, x_chunks):
    assert result.dtype == expected.dtype
    assert result.shape == expected.shape
    assert result.chunks[0] == x_chunks
    out = result.compute()
    assert out.dtype == expected.dtype and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("as_path", [False, True], ids=["object", "path"])
def test_threaded_scheduler_matches_whole_array(model, model_path, x, method, as_path):
    dx = da.from_array(x, chunks=(333, 7))          # uneven rows; features split on purpose
    result = fdist.predict_dask(model_path if as_path else model, dx, method=method)
    with dask.config.set(scheduler="threads"):
        _check(result, _reference(model, x, method), dx.chunks[0])


def test_batch_size_inside_blocks(model, x):
    dx = da.from_array(x, chunks=333)
    result = fdist.predict_dask(model, dx, method="__call__", batch_size=50)
    np.testing.assert_array_equal(result.compute(scheduler="threads"), model(x))


def test_local_cluster_matches_and_loads_once_per_worker(client, model, model_path, x):
    dx = da.from_array(x, chunks=(333, 20))
    before = client.run(lambda: fdist._LOAD_COUNT)
    for method in METHODS:
        for source in (model, model_path):
            result = fdist.predict_dask(source, dx, method=method)
            np.testing.assert_array_equal(result.compute(), _reference(model, x, method))
            out = client.compute(result).result()
            assert out.dtype == _reference(model, x, method).dtype
    after = client.run(lambda: fdist._LOAD_COUNT)
    # Two sources (the object's bytes and the file), each loaded at most once per process,
    # however many blocks and methods ran there.
    for worker, count in after.items():
        assert count - before[worker] <= 2, (worker, before[worker], count)
    assert sum(after.values()) - sum(before.values()) >= 2


def test_num_threads_one_gives_the_same_and_restores(model, x):
    before = fnn.get_num_threads()
    result = fdist.predict_dask(model, da.from_array(x, chunks=333), num_threads=1)
    np.testing.assert_array_equal(result.compute(scheduler="sync"), model.predict(x))
    assert fnn.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"):
        fdist.predict_dask(model, da.from_array(x, chunks=333), num_threads=0)


def test_one_dimensional_input_raises_before_computing(model):
    with pytest.raises(ValueError, match="2-D"):
        fdist.predict_dask(model, da.zeros(20, chunks=5, dtype=np.float32))


def test_wrong_feature_count_raises(model, model_path):
    for source in (model, model_path):
        with pytest.raises(ValueError, match="expects 20 features, x has 19"):
            fdist.predict_dask(source, da.zeros((10, 19), chunks=5, dtype=np.float32))


def test_bad_method_raises(model):
    with pytest.raises(ValueError, match="method"):
        fdist.predict_dask(model, da.zeros((10, 20), chunks=5), method="transform")


def test_import_fastnn_does_not_import_dask():
    code = "import sys, fastnn; print('dask' in sys.modules or 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
