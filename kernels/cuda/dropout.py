"""Inverted dropout on the GPU: the twin of :mod:`fastnn.kernels.dropout`.

The same counter-based stream (SplitMix64 indexed by ``offset + i``; formulas in that
module), so a mask drawn on the GPU equals the CPU's and the NumPy reference's for the
same ``seed`` and ``offset``.  The stream key and the keep threshold are computed on the
host by the CPU module's own functions; each thread hashes its elements' counters with
64-bit integer arithmetic (wrapping modulo 2**64) in a grid-stride loop over the flat
array.  The mask is one ``uint8`` per element (1 = kept), or not stored (size 0).

Under Numba's CUDA simulator the kernel runs on NumPy scalars, whose uint64 multiply
warns when it wraps ("overflow encountered in scalar multiply"); the wrap is what the
hash relies on, and GPUs wrap silently.
"""
import numba
import numpy as np
from numba import cuda

from ..dropout import _GAMMA, _MIX1, _MIX2, _ONE, _S27, _S30, _S31, _S32
from ..dropout import keep_threshold, stream_key
from ._common import THREADS, grid_1d, jit_family, ptx_entries

__all__ = ["dropout_forward", "dropout_backward"]


@cuda.jit(device=True, inline="always")
def _mix64(z):
    """SplitMix64's output function (as :func:`fastnn.kernels.dropout.mix64`)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def _make_kernels(dtype):
    zero = dtype(0)

    def dropout_forward_kernel(x, y, mask, key, offset, threshold, scale, store_mask):
        for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            g = offset + np.uint64(k)
            keep = (_mix64(key + (g + _ONE) * _GAMMA) >> _S32) < threshold
            if store_mask:
                mask[k] = np.uint8(1) if keep else np.uint8(0)
            y[k] = x[k] * scale if keep else zero

    def dropout_backward_kernel(dy, mask, scale, dx):
        for k in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
            dx[k] = dy[k] * scale if mask[k] != 0 else zero

    return jit_family((dropout_forward_kernel, dropout_backward_kernel), dtype)


#: numpy dtype name -> {name: kernel}.
_KERNELS = {str(dt): _make_kernels(dt) for dt in (numba.float32, numba.float64)}

_SIGNATURES = {
    "dropout_forward": "void({t}[::1], {t}[::1], uint8[::1], uint64, uint64, uint64, {t}, "
                       "boolean)",
    "dropout_backward": "void({t}[::1], uint8[::1], {t}, {t}[::1])",
}
PTX_SIGNATURES = ptx_entries(_KERNELS, _SIGNATURES)


def _flat(array):
    return array.reshape(array.size)


def _scale(p, dtype):
    """``1 / (1 - p)`` in ``dtype``; 0 for ``p = 1`` (everything dropped)."""
    return dtype.type(1.0 / (1.0 - p)) if p < 1.0 else dtype.type(0)


def dropout_forward(x, p, seed, offset, y, mask):
    """Inverted dropout (:func:`fastnn.kernels.dropout.dropout_forward`): ``y = x / (1 -
    p)`` where kept, else 0; the same mask as the CPU for the same ``seed``/``offset``.

    x, y : device arrays of one shape and float dtype, C-contiguous (``y`` may be ``x``);
    mask : uint8 device array of ``x``'s size (written), or size 0.  Returns ``y``.
    """
    if x.size:
        store = mask.size > 0
        p = float(p)
        _KERNELS[str(x.dtype)]["dropout_forward"][grid_1d(x.size), THREADS](
            _flat(x), _flat(y), _flat(mask), np.uint64(stream_key(np.uint64(seed))),
            np.uint64(offset), np.uint64(keep_threshold(p)), _scale(p, x.dtype), store)
    return y


def dropout_backward(dy, mask, p, dx):
    """``dx = dy / (1 - p)`` where ``mask`` is 1, else 0.  Returns ``dx``."""
    if dy.size:
        _KERNELS[str(dy.dtype)]["dropout_backward"][grid_1d(dy.size), THREADS](
            _flat(dy), _flat(mask), _scale(float(p), dy.dtype), _flat(dx))
    return dx
