"""Embedding lookup (a gather of table rows) and its gradient (a scatter-add of rows).

Shapes: ``weight`` is the table ``(V, D)`` (``V`` embeddings of width ``D``),
``indices`` a flat ``(N,)`` integer array (the layer flattens ``(batch, ...)`` token ids;
the API has checked every id lies in ``[0, V)``), ``out``/``dout`` are ``(N, D)``; all
C-contiguous, the float arrays of one dtype::

    forward:   out[n, :] = weight[indices[n], :]
    backward:  dweight[v, :] (+)= sum over n with indices[n] == v of dout[n, :]

The backward is PyTorch's dense gradient: ``dweight`` has the table's shape.  With
``accumulate`` the sums are added to it and a row that no index uses is **not touched**
(neither read nor written: gradient accumulation over batches costs the batch, not the
table); without, every row is written: the sums, and zeros for the rows no index uses.
``padding_idx`` (``-1``: none) names a row whose gradient is always zero: skipped when
accumulating, zeroed otherwise, so an optimiser never moves it.

Determinism.  Duplicated ids are the point of this kernel (a frequent token appears many
times in a batch), and a parallel scatter-add with atomics would add them in a
thread-timing-dependent order.  Here the ids are first bucketed by a stable counting sort
(serial, ``O(N + V)``; ~10 µs for V = 10,000), then the table is cut into blocks of rows
of about equal work (:func:`_balanced_tasks`), one task per block: a task owns its rows
and adds each row's ``dout`` rows in ascending ``n``.  Every output element is therefore ``((0 + dout[n1]) + dout[n2]) + ...``
(or ``((w + dout[n1]) + ...)`` when accumulating) with ``n1 < n2 < ...``, whatever the
thread count: the same bits as ``np.add.at`` in the NumPy reference, and as the CUDA twin.
Each table row is written once, while it sits in L1: the backward streams ``dout`` once
and the table once (without ``accumulate``), where a scatter into a zeroed table would
write it twice.
"""
import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel

#: Table elements per task of the backward (whole rows): 64 KiB of float32.
CHUNK = 16384
#: Run serially while the operands span at most 512 KiB (waking the pool costs more).
SERIAL_MAX_BYTES = 1 << 19


@kernel
def _rows_per_task(width):
    """Whole rows per task: about :data:`CHUNK` elements."""
    return max(1, CHUNK // max(1, width))


# --------------------------------------------------------------------------- forward
@kernel
def _gather_rows(weight, indices, out, n0, n1):
    for n in range(n0, n1):
        src = weight[indices[n]]
        dst = out[n]
        for j in range(dst.size):
            dst[j] = src[j]


@parallel_kernel
def embedding_forward(weight, indices, out):
    """Embedding lookup: ``out[n, :] = weight[indices[n], :]``.

    Parameters
    ----------
    weight : (V, D) float32/float64, C-contiguous.
    indices : (N,) int64, each in ``[0, V)`` (not checked here).
    out : (N, D) of ``weight``'s dtype, written.

    Returns ``out``.
    """
    n_rows, width = out.shape
    if out.size * 2 * out.itemsize <= SERIAL_MAX_BYTES:
        _gather_rows(weight, indices, out, np.int64(0), n_rows)   # not a literal: one compile
    else:
        step = _rows_per_task(width)
        for task in prange((n_rows + step - 1) // step):
            n0 = task * step
            _gather_rows(weight, indices, out, n0, min(n0 + step, n_rows))
    return out


# --------------------------------------------------------------------------- backward
@kernel
def _bucket_by_row(indices, n_table_rows):
    """Stable counting sort of ``indices``: ``(starts, order)`` with the positions ``n``
    of the ids equal to ``v`` in ``order[starts[v]:starts[v + 1]]``, ascending."""
    starts = np.zeros(n_table_rows + 1, np.int64)
    for n in range(indices.size):
        starts[indices[n] + 1] += 1
    for v in range(n_table_rows):
        starts[v + 1] += starts[v]
    cursor = starts[:-1].copy()
    order = np.empty(indices.size, np.int64)
    for n in range(indices.size):
        v = indices[n]
        order[cursor[v]] = n
        cursor[v] += 1
    return starts, order


@kernel(inline="always")
def _add_row(dst, src):
    for j in range(dst.size):
        dst[j] += src[j]


@kernel
def _scatter_rows(dout, starts, order, dweight, v0, v1, accumulate, padding_idx):
    """Table rows ``v0:v1``: each the sum of its ``dout`` rows in ascending order (added
    to the row with ``accumulate``; rows without ids and the padding row zeroed without,
    left alone with)."""
    zero = dweight.dtype.type(0)
    for v in range(v0, v1):
        lo = starts[v]
        hi = starts[v + 1]
        if accumulate and (lo == hi or v == padding_idx):
            continue
        row = dweight[v]
        if not accumulate:
            for j in range(row.size):
                row[j] = zero
            if v == padding_idx:
                continue
        for k in range(lo, hi):
            _add_row(row, dout[order[k]])


@kernel
def _balanced_tasks(starts, width, accumulate):
    """Boundaries ``bounds[t]:bounds[t + 1]`` of table rows per task, each task about
    :data:`CHUNK` elements of work: row ``v`` costs its ``count * width`` additions, plus
    ``width`` stores without ``accumulate``.  Token ids are far from uniform (a few are in
    every sequence), so equal numbers of rows would leave one thread most of the work.
    Any partition gives the same result: a row is always summed by one task, in order."""
    n_table = starts.size - 1
    per_row = 0 if accumulate else 1
    total = (starts[n_table] + per_row * n_table) * width
    n_tasks = max(1, min(n_table, total // CHUNK))
    bounds = np.empty(n_tasks + 1, np.int64)
    bounds[0] = 0
    t = 1
    done = 0
    for v in range(n_table):
        done += (starts[v + 1] - starts[v] + per_row) * width
        while t < n_tasks and done * n_tasks >= t * total:
            bounds[t] = v + 1
            t += 1
    for k in range(t, n_tasks + 1):
        bounds[k] = n_table
    return bounds


@parallel_kernel
def embedding_backward(dout, indices, dweight, accumulate=False, padding_idx=-1):
    """Gradient of :func:`embedding_forward` with respect to the table (a deterministic
    scatter-add of rows; see the module docstring).

    Parameters
    ----------
    dout : (N, D) float32/float64, C-contiguous: the gradient of the looked-up rows.
    indices : (N,) int64, each in ``[0, V)``.
    dweight : (V, D) of ``dout``'s dtype: ``dweight[v] (+)= sum_{n: indices[n] = v}
        dout[n]``; without ``accumulate`` rows no index uses are set to zero, with it they
        are not touched.
    accumulate : bool, add to ``dweight`` instead of overwriting it.
    padding_idx : int, a row whose gradient is zero (zeroed without ``accumulate``,
        untouched with it), or -1 for none.

    Returns ``dweight``.
    """
    n_table_rows, width = dweight.shape
    starts, order = _bucket_by_row(indices, n_table_rows)
    touched = dout.size if accumulate else dweight.size
    if (dout.size + touched) * dout.itemsize <= SERIAL_MAX_BYTES:
        _scatter_rows(dout, starts, order, dweight, 0, n_table_rows, accumulate,
                      padding_idx)
    else:
        bounds = _balanced_tasks(starts, width, accumulate)
        for task in prange(bounds.size - 1):
            _scatter_rows(dout, starts, order, dweight, bounds[task], bounds[task + 1],
                          accumulate, padding_idx)
    return dweight
