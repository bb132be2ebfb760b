"""Input checks at the API boundary: nothing malformed ever reaches a kernel.

The conversion rule (documented in the README): inputs are converted to the model's
float dtype and made C-contiguous.  Integer and boolean arrays (e.g. raw pixels) are
converted, not rejected; float32/float64 mismatches are converted to the model dtype;
object, string and complex arrays are refused with a ``TypeError``.  NaN/Inf in inputs
or targets raise ``ValueError``.
"""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_dtype(dtype):
    """``np.dtype`` for "float32"/"float64" (or the types); anything else is refused."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _numeric(array, name):
    if isinstance(array, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got a {type(array).__name__}")
    arr = np.asarray(array)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (float, int or bool), "
                        f"got dtype {arr.dtype}")
    return arr


def check_finite(arr, name):
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
        where = tuple(int(i) for i in np.unravel_index(bad[0], arr.shape))
        at = f"row {where[0]}, column {where[1]}" if len(where) == 2 else f"index {where}"
        raise ValueError(f"{name} contains NaN or Inf ({bad.size} value(s), the first at "
                         f"{at}); clean or impute the data first")


def _check_shape(shape, name, n_features):
    """A batch is ``(batch, ..., features)``: at least 2-D, nothing empty, and the last
    axis ``n_features`` wide when that is known."""
    if len(shape) < 2:
        hint = " (reshape a single sample with x.reshape(1, -1))" if len(shape) == 1 else ""
        raise ValueError(f"{name} must be (batch, features) or (batch, ..., features), at "
                         f"least 2-D, got shape {shape}{hint}")
    if shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {shape})")
    if n_features is not None and shape[-1] != n_features:
        raise ValueError(f"{name} has {shape[-1]} features per sample, expected "
                         f"{n_features} (shape {shape}; features are the last axis)")
    if 0 in shape[1:]:
        raise ValueError(f"{name} has an empty axis (shape {shape})")


def as_input(x, name, dtype, n_features=None, finite=True):
    """A C-contiguous ``(batch, ..., features)`` array of ``dtype`` made from ``x``."""
    arr = _numeric(x, name)
    _check_shape(arr.shape, name, n_features)
    return _convert(arr, name, dtype, finite)


def check_device_input(arr, name, dtype, n_features=None):
    """Shape and dtype checks of a ``(batch, ..., features)`` array that already lives on
    a GPU.

    Its values are not scanned for NaN/Inf (that would copy it to the host); data that
    enters through ``fit``/``predict`` or as a host array is always scanned."""
    _check_shape(tuple(arr.shape), name, n_features)
    if np.dtype(arr.dtype) not in FLOAT_DTYPES or np.dtype(arr.dtype) != np.dtype(dtype):
        raise TypeError(f"{name} is a {arr.dtype} device array; the model computes in "
                        f"{np.dtype(dtype)} (convert it, or pass a host array)")
    return arr


def as_indices(x, name, bound):
    """A C-contiguous int64 ``(batch, ...)`` array of indices (token ids) made from ``x``,
    each in ``[0, bound)`` (``bound`` None: not checked).

    Integer arrays of any width are accepted; floats, booleans and others are refused
    (an id is not a measurement: converting 2.7 would hide a bug)."""
    arr = _numeric(x, name)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer indices (token ids), got dtype "
                        f"{arr.dtype}; convert with x.astype(np.int64)")
    _check_index_shape(arr.shape, name)
    low, high = arr.min(), arr.max()     # before the cast, so huge values cannot wrap
    if low < 0 or (bound is not None and high >= bound):
        bad = low if low < 0 else high
        raise ValueError(f"{name} contains index {bad}, outside [0, {bound}) (the "
                         f"embedding table has {bound} rows)")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    return out if out.flags.writeable else out.copy()


def _check_index_shape(shape, name):
    if len(shape) < 1:
        raise ValueError(f"{name} must be a batch of indices, (batch,) or (batch, seq, "
                         f"...), got a scalar")
    if shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {shape})")
    if 0 in shape[1:]:
        raise ValueError(f"{name} has an empty axis (shape {shape})")


def check_device_indices(arr, name):
    """Shape and dtype checks of an index array already on a GPU: int64, ``(batch,
    ...)``.  Its values are not scanned (that would copy it to the host); the GPU lookup
    gives a row of NaN for an index out of range."""
    _check_index_shape(tuple(arr.shape), name)
    if np.dtype(arr.dtype) != np.int64:
        raise TypeError(f"{name} is a {arr.dtype} device array; indices on the device "
                        f"must be int64 (or pass a host array)")
    return arr


def _convert(arr, name, dtype, finite=True):
    """C-contiguous ``dtype`` copy/view of ``arr``; values that overflow ``dtype`` (e.g.
    1e39 into float32) are reported, not silently turned into Inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    if not out.flags.writeable:
        # Kernels never write their inputs, but Numba types read-only arrays separately
        # (a second compilation, and the GEMM core takes writable arrays only): copy.
        out = out.copy()
    if finite and out.dtype.kind == "f" and not np.isfinite(out).all():
        check_finite(arr, name)             # NaN/Inf already in the input
        raise ValueError(f"{name} has values too large for {np.dtype(dtype).name} "
                         f"(largest magnitude {np.abs(arr).max():.3g})")
    return out


def as_labels(y, name, n_samples, n_classes):
    """Integer class labels (n_samples,) as int64, each in ``[0, n_classes)``."""
    arr = _numeric(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels of shape ({n_samples},), "
                         f"got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} labels but the batch has {n_samples} samples")
    if arr.dtype.kind == "f":
        check_finite(arr, name)
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must be whole-number class labels, got non-integer "
                             f"values such as {arr[arr != np.round(arr)][0]!r}")
    if arr.size:   # range check before any cast, so huge values cannot wrap around
        low, high = arr.min(), arr.max()
        if low < 0 or high >= n_classes:
            bad = low if low < 0 else high
            raise ValueError(f"{name} contains label {bad}, outside [0, {n_classes}) for a "
                             f"model with {n_classes} outputs")
    return np.array(arr, dtype=np.int64, order="C")   # a fresh, writable copy


def as_targets(t, name, shape, dtype, low=None, high=None):
    """Float targets of exactly ``shape`` (``(n,)`` is accepted for one output)."""
    arr = _numeric(t, name)
    if arr.ndim == 1 and shape[1] == 1 and arr.shape[0] == shape[0]:
        arr = arr.reshape(-1, 1)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} to match the predictions, "
                         f"got {arr.shape}")
    if arr.dtype.kind == "f":
        check_finite(arr, name)
    arr = _convert(arr, name, dtype)
    if low is not None and arr.size and (arr.min() < low or arr.max() > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got values in "
                         f"[{arr.min()}, {arr.max()}]")
    return arr


def check_number(value, name, *, low=None, high=None, low_open=False, high_open=False,
                 integer=False):
    """A real (or integer) hyperparameter within bounds, else a ValueError naming it."""
    kinds = (numbers.Integral,) if integer else (numbers.Real,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a number'}, "
                        f"got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return value


def check_choice(value, name, choices):
    """Look ``value`` up in the mapping ``choices``; unknown names list the valid ones."""
    key = value.lower() if isinstance(value, str) else value
    if key not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid names: {', '.join(sorted(choices))}")
    return choices[key]
