"""Mean pooling over one axis: ``(P, S, Q) -> (P, Q)`` and its gradient.

The layer views its input as ``(P, S, Q)``: ``P`` the product of the axes before the
pooled one (the batch), ``S`` the pooled axis (the sequence), ``Q`` the product of the
axes after it (the features); all arrays C-contiguous, of one float dtype::

    forward:   out[p, q] = (sum_s x[p, s, q]) / S
    backward:  dx[p, s, q] = dy[p, q] / S

Each output row ``out[p]`` is summed by one task, over ``s`` in order (a vectorised add of
whole rows ``x[p, s, :]``), so the result does not depend on the thread count.
"""
from numba import prange

from ._jit import kernel, parallel_kernel

#: Input elements per parallel task (whole ``p`` slices).
CHUNK = 16384
#: Run serially while the operands span at most 512 KiB (waking the pool costs more).
SERIAL_MAX_BYTES = 1 << 19


@kernel
def _slices_per_task(slice_size):
    return max(1, CHUNK // max(1, slice_size))


@kernel
def _mean_rows(x, out, p0, p1):
    n_seq = x.shape[1]
    s_ = x.dtype.type(n_seq)
    for p in range(p0, p1):
        o = out[p]
        xp = x[p]
        first = xp[0]
        for q in range(o.size):
            o[q] = first[q]
        for s in range(1, n_seq):
            xs = xp[s]
            for q in range(o.size):
                o[q] += xs[q]
        for q in range(o.size):
            o[q] /= s_


@parallel_kernel
def mean_pool_forward(x, out):
    """Mean over the middle axis: ``out[p, q] = sum_s x[p, s, q] / S``.

    x : (P, S, Q), S >= 1; out : (P, Q), written.  Returns ``out``.
    """
    n_outer, n_seq, n_inner = x.shape
    if x.size * x.itemsize <= SERIAL_MAX_BYTES:
        _mean_rows(x, out, 0, n_outer)
    else:
        step = _slices_per_task(n_seq * n_inner)
        for task in prange((n_outer + step - 1) // step):
            p0 = task * step
            _mean_rows(x, out, p0, min(p0 + step, n_outer))
    return out


@kernel
def _spread_rows(dy, dx, p0, p1):
    n_seq = dx.shape[1]
    s_ = dy.dtype.type(n_seq)
    for p in range(p0, p1):
        g = dy[p]
        dxp = dx[p]
        for s in range(n_seq):
            d = dxp[s]
            for q in range(g.size):
                d[q] = g[q] / s_


@parallel_kernel
def mean_pool_backward(dy, dx):
    """Gradient of :func:`mean_pool_forward`: ``dx[p, s, q] = dy[p, q] / S``.

    dy : (P, Q); dx : (P, S, Q), written.  Returns ``dx``.
    """
    n_outer, n_seq, n_inner = dx.shape
    if dx.size * dx.itemsize <= SERIAL_MAX_BYTES:
        _spread_rows(dy, dx, 0, n_outer)
    else:
        step = _slices_per_task(n_seq * n_inner)
        for task in prange((n_outer + step - 1) // step):
            p0 = task * step
            _spread_rows(dy, dx, p0, min(p0 + step, n_outer))
    return dx
