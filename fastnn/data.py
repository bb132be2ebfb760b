"""Mini-batch iteration."""
import numpy as np

from .init import make_rng
from .validation import as_array, check_number


def batches(x, y=None, batch_size=32, shuffle=False, seed=None, drop_last=False):
    """Yield ``(x_batch, y_batch)`` (or ``x_batch`` when ``y`` is None) in mini-batches.

    Parameters
    ----------
    x : array (n, ...), y : array (n, ...), optional
        NumPy arrays, or pandas DataFrames/Series or lists: those are converted once to
        NumPy arrays of numbers (as ``fit`` converts them) and checked for missing
        values and NaN/Inf, reported by index label and column name; batches are taken
        by position, whatever the index.  That conversion happens on every call (every
        epoch of a loop): for large data, convert once, e.g. ``df.to_numpy(np.float32)``.
    batch_size : int
    shuffle : bool
        Visit the samples in a random order (a new order on every call).
    seed : int or numpy.random.Generator, optional
        Makes the shuffled order reproducible.
    drop_last : bool
        Skip a final batch smaller than ``batch_size``.

    Batches are C-contiguous: slices of ``x`` when not shuffled, gathered copies otherwise.
    """
    check_number(batch_size, "batch_size", low=1, integer=True)
    x = as_array(x, "x")
    y = None if y is None else as_array(y, "y")
    n = len(x)
    if y is not None and len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    order = make_rng(seed).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            sl = slice(start, min(start + batch_size, n))
            xb, yb = x[sl], None if y is None else y[sl]
        else:
            idx = order[start:start + batch_size]
            xb, yb = x[idx], None if y is None else y[idx]
        yield xb if y is None else (xb, yb)
