"""Row shares: one kernel body for a plain mean and for a weighted sum over rows.

A loss over a batch is ``sum_i share_i * loss_i``.  For the plain mean every row's share
is ``1/batch``; with class or sample weights each row has its own (a (batch,) array).  A
kernel written against :func:`share_of_row` takes either: it is compiled once for a
scalar ``share`` and once for an array, and :func:`pick` chooses the matching body at
compile time (no branch in the loop, and the scalar build is the unweighted kernel as it
would be written by hand).  The same functions run as plain Python (Numba's CUDA
simulator, ``NUMBA_DISABLE_JIT``).
"""
import inspect

import numpy as np
from numba import types
from numba.extending import overload


def pick(uniform, per_row):
    """A function ``f(share, ...)`` that runs ``uniform`` when ``share`` is a scalar and
    ``per_row`` when it is an array (both take the same parameters): in kernels (CPU and
    CUDA) chosen and inlined when the caller is compiled, in Python at each call."""
    def python(share, *args):
        return (uniform if np.ndim(share) == 0 else per_row)(share, *args)

    def typed(share, *args):
        return uniform if isinstance(share, types.Number) else per_row

    # Numba matches the typing function's parameters to the implementations' (and
    # inlines only calls without *args): all three show the implementations' signature
    python.__signature__ = typed.__signature__ = inspect.signature(uniform)
    python.__doc__ = uniform.__doc__
    overload(python, inline="always")(typed)
    return python


def _row_uniform(share, i):
    return share


def _row_per_row(share, i):
    return share[i]


def _rows_uniform(share, lo, hi):
    return share


def _rows_per_row(share, lo, hi):
    return share[lo:hi]


#: ``share_of_row(share, i)``: row ``i``'s share of the loss
share_of_row = pick(_row_uniform, _row_per_row)
#: ``shares_of_rows(share, lo, hi)``: the shares of rows ``lo:hi`` (for a task's block)
shares_of_rows = pick(_rows_uniform, _rows_per_row)
