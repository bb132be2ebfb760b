"""Input checks at the API boundary: nothing malformed ever reaches a kernel.

The conversion rule (documented in the README): inputs are converted to the model's
float dtype and made C-contiguous.  Integer and boolean arrays (e.g. raw pixels) are
converted, not rejected; float32/float64 mismatches are converted to the model dtype;
string, complex and date arrays are refused with a ``TypeError``.  NaN/Inf in inputs
or targets raise ``ValueError``.

Besides NumPy arrays, every entry point takes lists (nested for 2-D) and pandas
DataFrames/Series, converted once here (:func:`_numeric`): bool, integer and float
columns of any kind (NumPy, nullable ``Int64``/``Float64``/``boolean``, pyarrow,
sparse, categorical with numeric categories) mixed freely; a missing value (``pd.NA``,
``None``) is reported by its row (index label) and column name, a text, date or
categorical-of-strings column by its name and dtype.  pandas is never imported here:
it is recognised when the caller's data comes from it (already imported).
"""
import numbers
import sys

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
    """``(arr, labels)``: ``array`` as a NumPy array of bool, int or float, and the row
    and column labels it came from (a pandas object's; None for anything else) for
    :func:`check_finite` to name a bad value by.

    A NumPy array of numbers comes back as it is (no copy, no scan); a pandas object or
    a list is converted (see the module docstring), an object array of numbers too."""
    if type(array) is np.ndarray and array.dtype.kind in "biuf":
        return array, None                  # the fast path
    if isinstance(array, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got a {type(array).__name__}")
    pd = sys.modules.get("pandas")          # loaded if the data comes from pandas
    if pd is not None and not isinstance(array, np.ndarray):
        if isinstance(array, pd.api.extensions.ExtensionArray):
            array = pd.Series(array)
        if isinstance(array, (pd.DataFrame, pd.Series)):
            return _from_pandas(pd, array, name)
    arr = _asarray(array, name)
    if arr.dtype.kind in "US" and isinstance(array, (list, tuple)):
        # NumPy turned numbers mixed with text into text: find the value that is not one
        arr = np.asarray(array, dtype=object)
    if arr.dtype.kind == "O" and arr.ndim == 0:    # None, an arbitrary object
        raise TypeError(f"{name} must be an array of numbers, got a {type(array).__name__}")
    if arr.dtype.kind == "O":
        arr = _from_objects(arr, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (float, int or bool), "
                        f"got dtype {arr.dtype}" + _encode_hint(arr.dtype))
    return arr, None


def _asarray(array, name):
    """``np.asarray(array)``; a nested list with rows of different lengths is reported
    by the first row that differs, not by NumPy's "inhomogeneous shape"."""
    try:
        return np.asarray(array)
    except ValueError:
        if isinstance(array, (list, tuple)) and array and all(
                isinstance(row, (list, tuple, np.ndarray)) for row in array):
            first = len(array[0])
            for i, row in enumerate(array):
                if len(row) != first:
                    raise ValueError(f"{name} is a nested list with rows of different "
                                     f"lengths: row 0 has {first} values, row {i} has "
                                     f"{len(row)}; every row must have the same length"
                                     ) from None
        raise ValueError(f"{name} cannot be made into an array: its nested sequences "
                         "have different lengths (a ragged list)") from None


def _encode_hint(dtype):
    if dtype.kind in "USO":
        return ("; encode text or categories as numbers first (one-hot, or integer codes "
                "such as np.unique(values, return_inverse=True)[1])")
    if dtype.kind in "mM":
        return "; convert dates and durations to numbers first (e.g. .astype(np.int64))"
    if dtype.kind == "c":
        return "; keep the real part (x.real) or the magnitude (np.abs(x))"
    return "; convert it with .astype(np.float32)"


def _is_missing(value):
    """None, pandas' NA or NaT: no value at all (a float NaN is a value: NaN)."""
    return value is None or type(value).__name__ in ("NAType", "NaTType")


def _is_number(value):
    return isinstance(value, (numbers.Real, np.bool_)) and not _is_missing(value)


def _from_objects(arr, name):
    """An object array (lists of mixed numbers, or with None) as numbers: every element
    must be a real number; the first missing or other value is reported by position."""
    flat = arr.reshape(-1)
    for i, value in enumerate(flat):
        if not _is_number(value):
            where = _where(np.unravel_index(i, arr.shape))
            if _is_missing(value):
                raise ValueError(f"{name} has a missing value ({value!r}) at {where}; fill "
                                 "or drop missing values first")
            raise TypeError(f"{name} must hold real numbers (float, int or bool), got a "
                            f"{type(value).__name__} ({value!r}) at {where}"
                            + _encode_hint(np.dtype(object)))
    return np.array(flat.tolist()).reshape(arr.shape)


class _Labels:
    """The index (row labels) and, for a DataFrame, the columns of converted data."""

    def __init__(self, index, columns=None):
        self.index, self.columns = index, columns


def _label_text(axis, labels, i):
    label = labels[i]
    if isinstance(label, (int, np.integer)) and label == i:
        return f"{axis} {i}"
    if axis == "column" and isinstance(label, str):
        return f"{axis} {label!r}"
    return f"{axis} {label!r} (position {i})"


def _where(position, labels=None):
    """Words for an element's place: "row 3, column 7" (2-D), "row 3" (1-D), "index
    (1, 2, 3)" (N-D); for pandas data by index label and column name, e.g. "row 'r7'
    (position 3), column 'age'"."""
    position = tuple(int(i) for i in position)
    if labels is not None:
        where = _label_text("row", labels.index, position[0])
        if labels.columns is not None and len(position) == 2:
            where += ", " + _label_text("column", labels.columns, position[1])
        return where
    if len(position) == 1:
        return f"row {position[0]}"
    if len(position) == 2:
        return f"row {position[0]}, column {position[1]}"
    return f"index {position}"


# ---------------------------------------------------------------------------- pandas
#: what pandas' ``infer_dtype`` says of an object column that holds only numbers
_NUMERIC_OBJECTS = ("integer", "floating", "mixed-integer-float", "boolean", "empty")


def _pandas_number_dtype(pd, dtype):
    """The NumPy dtype (bool, int, float) a pandas column of ``dtype`` converts to, or
    None when its values are not numbers (object columns are looked at separately)."""
    if isinstance(dtype, pd.CategoricalDtype):
        return _pandas_number_dtype(pd, dtype.categories.dtype)
    if isinstance(dtype, pd.SparseDtype):
        return _pandas_number_dtype(pd, dtype.subtype)
    if not isinstance(dtype, np.dtype):
        dtype = getattr(dtype, "numpy_dtype", None)    # nullable and pyarrow dtypes
        if dtype is None:
            return None
        dtype = np.dtype(dtype)
    return dtype if dtype.kind in "biuf" else None


def _column_text(name, data, j):
    if j is None:                            # a Series
        return name if data.name is None else f"{name} (Series {data.name!r})"
    return f"{name} column {data.columns[j]!r}"


def _from_pandas(pd, data, name):
    """``(arr, labels)`` from a DataFrame or Series, checked column by column."""
    series = isinstance(data, pd.Series)
    dtypes = [data.dtype] if series else list(data.dtypes)
    labels = _Labels(data.index, None if series else data.columns)
    targets = []
    for j, dtype in enumerate(dtypes):
        if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
            targets.append(dtype)           # NaN/Inf are left to check_finite
            continue
        column, j = (data, None) if series else (data.iloc[:, j], j)
        if isinstance(dtype, np.dtype) and dtype.kind == "O":
            _check_object_column(pd, column, name, data, labels, j)
            targets.append(np.dtype(np.float64))
            continue
        number = _pandas_number_dtype(pd, dtype)
        if number is None:
            raise TypeError(_not_numbers(pd, column, dtype, name, data, j))
        _check_missing(column, name, labels, j)
        targets.append(number)
    common = np.result_type(*targets) if targets else np.dtype(np.float64)
    arr = data.to_numpy(dtype=common)
    return arr, labels


def _check_missing(column, name, labels, j):
    missing = column.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        where = _where((i,) if j is None else (i, j), labels)
        count = int(missing.sum())
        raise ValueError(f"{name} has {count} missing value(s) ({column.iloc[i]!r}), the "
                         f"first at {where} (dtype {column.dtype}); fill or drop them first "
                         "(.fillna(...) or .dropna())")


def _check_object_column(pd, column, name, data, labels, j):
    """An object column is numbers if every value is one (e.g. ints mixed with floats);
    a missing value or anything else (text) is reported by row."""
    kind = pd.api.types.infer_dtype(column, skipna=True)
    if kind not in _NUMERIC_OBJECTS:
        for i, value in enumerate(column.to_numpy()):
            if not _is_number(value) and not _is_missing(value):
                raise TypeError(
                    f"{_column_text(name, data, j)} has dtype {column.dtype} and holds "
                    f"{type(value).__name__} values such as {value!r} at "
                    f"{_where((i,), labels)}; fastnn takes numbers only: {_ENCODE[j is None]}")
    _check_missing(column, name, labels, j)


#: how to turn text into numbers: a DataFrame column (False), a Series (True: labels)
_ENCODE = {False: "encode it (pd.get_dummies for one-hot columns, or .astype('category')"
                  ".cat.codes for integer codes) or drop it",
           True: "encode it first, e.g. as integer codes 0..k-1 with "
                 "codes, uniques = pd.factorize(series)"}


def _not_numbers(pd, column, dtype, name, data, j):
    text = _column_text(name, data, j)
    if isinstance(dtype, pd.CategoricalDtype):
        cats = dtype.categories
        shown = ", ".join(repr(c) for c in cats[:3]) + (", ..." if len(cats) > 3 else "")
        return (f"{text} is categorical with {cats.dtype} categories ({shown}); encode it "
                "first: pd.get_dummies(...) for one-hot columns, or .cat.codes for integer "
                "codes")
    kind = getattr(dtype, "kind", "O")
    if kind in "mM":
        fix = ("convert it to numbers first (e.g. .astype('int64'), or features such as the "
               "day of the week)")
    elif kind in "USO":
        fix = _ENCODE[j is None]
    else:
        fix = "convert it to numbers first or drop it"
    return f"{text} has dtype {dtype}, not numbers (bool, int or float); {fix}"


def as_array(x, name):
    """``x`` for indexing by rows (:func:`fastnn.batches`): NumPy arrays and other
    array types as they are; a pandas object or a list converted once to a C-contiguous
    NumPy array of numbers, scanned for NaN/Inf (named by row label and column, which
    its batches no longer carry)."""
    if not isinstance(x, (list, tuple)) and not _is_pandas(x):
        return x
    return np.require(as_numbers(x, name), requirements=["C", "W"])


def as_numbers(x, name):
    """``x`` (an array, pandas object or list) as a NumPy array of bool, int or float
    without NaN/Inf; a bad value is named by row and column."""
    arr, labels = _numeric(x, name)
    check_finite(arr, name, labels)
    return arr


def _is_pandas(x):
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(x, (pd.DataFrame, pd.Series))


def shape_of(x):
    """The shape of array-like ``x`` (None for a ragged list), pandas objects not
    converted."""
    shape = getattr(x, "shape", None)
    if shape is None:
        try:
            shape = np.shape(x)
        except ValueError:
            return None
    return tuple(shape)


def check_finite(arr, name, labels=None):
    """ValueError naming the first NaN/Inf of a float ``arr`` by row and column (by
    index label and column name with ``labels``), or by its index for N-D arrays."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
        where = _where(np.unravel_index(bad[0], arr.shape), labels)
        raise ValueError(f"{name} contains NaN or Inf ({bad.size} value(s), the first at "
                         f"{where}); clean or impute the data first")


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
    """A C-contiguous ``(batch, ..., features)`` array of ``dtype`` made from ``x``
    (``dtype`` None: float32 or float64 as ``x`` is, float32 for other numbers)."""
    arr, labels = _numeric(x, name)
    _check_shape(arr.shape, name, n_features)
    if dtype is None:
        dtype = arr.dtype if arr.dtype in FLOAT_DTYPES else np.dtype(np.float32)
    return _convert(arr, name, dtype, finite, labels)


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
    arr, _ = _numeric(x, name)
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


def _convert(arr, name, dtype, finite=True, labels=None):
    """C-contiguous ``dtype`` copy/view of ``arr``; values that overflow ``dtype`` (e.g.
    1e39 into float32) are reported, not silently turned into Inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    if not out.flags.writeable:
        # Kernels never write their inputs, but Numba types read-only arrays separately
        # (a second compilation, and the GEMM core takes writable arrays only): copy.
        out = out.copy()
    if finite and out.dtype.kind == "f" and not np.isfinite(out).all():
        check_finite(arr, name, labels)     # NaN/Inf already in the input
        raise ValueError(f"{name} has values too large for {np.dtype(dtype).name} "
                         f"(largest magnitude {np.abs(arr).max():.3g})")
    return out


def as_labels(y, name, n_samples, n_classes):
    """Integer class labels (n_samples,) as int64, each in ``[0, n_classes)``."""
    arr, labels = _numeric(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels of shape ({n_samples},), "
                         f"got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} labels but the batch has {n_samples} samples")
    if arr.dtype.kind == "f":
        check_finite(arr, name, labels)
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must be whole-number class labels, got non-integer "
                             f"values such as {arr[arr != np.round(arr)][0]!r}")
    if arr.size:   # range check before any cast, so huge values cannot wrap around
        low, high = arr.min(), arr.max()
        if low < 0 or high >= n_classes:
            bad = low if low < 0 else high
            raise ValueError(f"{name} contains label {bad}, outside [0, {n_classes}) for a "
                             f"model with {n_classes} outputs; labels are class indices "
                             "0..outputs-1: map others (e.g. {3, 7} or strings) with "
                             "classes, y = np.unique(y, return_inverse=True), or use "
                             "fastnn.sklearn.FastMLPClassifier, which takes any labels")
    return np.array(arr, dtype=np.int64, order="C")   # a fresh, writable copy


def as_targets(t, name, shape, dtype, low=None, high=None):
    """Float targets of exactly ``shape`` (``(n,)`` is accepted for one output)."""
    arr, labels = _numeric(t, name)
    if arr.ndim == 1 and shape[1] == 1 and arr.shape[0] == shape[0]:
        arr = arr.reshape(-1, 1)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} to match the predictions, "
                         f"got {arr.shape}")
    if arr.dtype.kind == "f":
        check_finite(arr, name, labels)
    arr = _convert(arr, name, dtype, labels=labels)
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
