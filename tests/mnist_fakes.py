"""Tiny synthetic MNIST files (IDX, CSV) for the dataset tests."""
import gzip
import struct

import numpy as np

import fastnn.datasets as ds

N_TRAIN, N_TEST = 7, 3  # primes, unlike anything MNIST-sized; synthetic splits of other sizes

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
