"""Mean pooling over one axis on the GPU: the twins of :mod:`fastnn.kernels.pooling`.

Both are grid-stride loops with consecutive threads on consecutive ``q`` (coalesced):
the forward gives each thread an output element and sums its ``S`` inputs in order (the
CPU's order, so the same rounding), the backward writes each input gradient element
``dy[p, q] / S``.
"""
import numba
from numba import cuda

from ._common import THREADS, grid_1d, jit_family, ptx_entries

__all__ = ["mean_pool_forward", "mean_pool_backward"]


def _make_kernels(dtype):
    def mean_pool_forward_kernel(x, out):
        n_seq = x.shape[1]
        n_inner = x.shape[2]
        s_ = dtype(n_seq)
        for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            p = k // n_inner
            q = k - p * n_inner
            total = x[p, 0, q]
            for s in range(1, n_seq):
                total += x[p, s, q]
            out[p, q] = total / s_

    def mean_pool_backward_kernel(dy, dx):
        n_seq = dx.shape[1]
        n_inner = dx.shape[2]
        s_ = dtype(n_seq)
        slab = n_seq * n_inner
        for k in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
            p = k // slab
            r = k - p * slab
            s = r // n_inner
            q = r - s * n_inner
            dx[p, s, q] = dy[p, q] / s_

    return jit_family((mean_pool_forward_kernel, mean_pool_backward_kernel), dtype)


#: numpy dtype name -> {name: kernel}.
_KERNELS = {str(dt): _make_kernels(dt) for dt in (numba.float32, numba.float64)}

_SIGNATURES = {
    "mean_pool_forward": "void({t}[:, :, ::1], {t}[:, ::1])",
    "mean_pool_backward": "void({t}[:, ::1], {t}[:, :, ::1])",
}
PTX_SIGNATURES = ptx_entries(_KERNELS, _SIGNATURES)


def mean_pool_forward(x, out):
    """Mean over the middle axis (:func:`fastnn.kernels.pooling.mean_pool_forward`):
    ``out[p, q] = sum_s x[p, s, q] / S``; x (P, S, Q), out (P, Q) device arrays.
    Returns ``out``."""
    if out.size:
        _KERNELS[str(out.dtype)]["mean_pool_forward"][grid_1d(out.size), THREADS](x, out)
    return out


def mean_pool_backward(dy, dx):
    """``dx[p, s, q] = dy[p, q] / S``; dy (P, Q), dx (P, S, Q) device arrays.  Returns
    ``dx``."""
    if dx.size:
        _KERNELS[str(dx.dtype)]["mean_pool_backward"][grid_1d(dx.size), THREADS](dy, dx)
    return dx
