"""Attention heads on the GPU (and the element-wise add of residual connections): the
index shuffles between a projection's layout
``(batch, seq, groups * heads * d)`` and the attention kernels' ``(groups, batch, heads,
seq, d)`` (``groups`` = 3 for the packed query/key/value projection, 1 for the output).

Both are element-wise copies (a grid-stride loop over the destination, coalesced writes);
they move no more than one read and one write per element.
"""
from numba import cuda

from ._common import grid_1d

__all__ = ["split_heads", "merge_heads", "add", "PTX_SIGNATURES"]


@cuda.jit
def _split_heads_kernel(x, out):
    g_n, b_n, h_n, s_n, d_n = out.shape
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for k in range(start, out.size, stride):
        d = k % d_n
        r = k // d_n
        s = r % s_n
        r //= s_n
        h = r % h_n
        r //= h_n
        b = r % b_n
        g = r // b_n
        out[g, b, h, s, d] = x[b, s, (g * h_n + h) * d_n + d]


@cuda.jit
def _merge_heads_kernel(x, out):
    g_n, b_n, h_n, s_n, d_n = x.shape
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for k in range(start, out.size, stride):
        d = k % d_n
        r = k // d_n
        h = r % h_n
        r //= h_n
        g = r % g_n
        r //= g_n
        s = r % s_n
        b = r // s_n
        out[b, s, (g * h_n + h) * d_n + d] = x[g, b, h, s, d]


@cuda.jit
def _add_kernel(x, y, out):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for k in range(start, out.size, stride):
        out[k] = x[k] + y[k]


def add(x, y, out):
    """``out = x + y`` element-wise (any shape, C-contiguous; the residual connections)."""
    _add_kernel[grid_1d(out.size), 128](x.reshape(x.size), y.reshape(y.size),
                                        out.reshape(out.size))
    return out


def split_heads(x, out):
    """``out[g, b, h, s, :] = x[b, s, (g*H + h)*D : (g*H + h + 1)*D]`` for ``x`` of shape
    ``(B, S, G*H*D)`` and ``out`` of shape ``(G, B, H, S, D)``."""
    _split_heads_kernel[grid_1d(out.size), 128](x, out)
    return out


def merge_heads(x, out):
    """The inverse of :func:`split_heads`: ``(G, B, H, S, D)`` into ``(B, S, G*H*D)``."""
    _merge_heads_kernel[grid_1d(out.size), 128](x, out)
    return out


PTX_SIGNATURES = [
    (f"{name}_{t}", kernel.py_func, f"void({t}[:, :, ::1], {t}[:, :, :, :, ::1])"
     if name == "split_heads" else f"void({t}[:, :, :, :, ::1], {t}[:, :, ::1])")
    for name, kernel in (("split_heads", _split_heads_kernel),
                         ("merge_heads", _merge_heads_kernel))
    for t in ("float32", "float64")
] + [(f"add_{t}", _add_kernel.py_func, f"void({t}[::1], {t}[::1], {t}[::1])")
     for t in ("float32", "float64")]
