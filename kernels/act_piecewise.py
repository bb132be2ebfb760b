"""The piecewise-linear activations (identity, ReLU, leaky ReLU, piecewise linear, unit
step) and their derivatives: memory-bound kernels (see :mod:`.activations` for how every
element-wise kernel is built, and :mod:`._act_common` for the thresholds)."""
from numba import prange

from ._act_common import CHUNK_CHEAP, SERIAL_MAX_BYTES
from ._jit import kernel, parallel_kernel


# --------------------------------------------------------------------------- identity / linear
@kernel
def _copy_span(src, out):
    if src.ctypes.data != out.ctypes.data:        # in place: nothing to copy
        for i in range(src.size):
            out[i] = src[i]


@parallel_kernel
def identity_forward(x, out):
    """Identity (linear) activation: ``out = x``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n = xf.size
    if n * 2 * xf.itemsize <= SERIAL_MAX_BYTES:
        _copy_span(xf, of)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _copy_span(xf[lo:hi], of[lo:hi])
    return out


@parallel_kernel
def identity_backward(dy, x, y, out):
    """Derivative of the identity: ``out = dy``."""
    df = dy.reshape(dy.size)
    of = out.reshape(out.size)
    n = df.size
    if n * 2 * df.itemsize <= SERIAL_MAX_BYTES:
        _copy_span(df, of)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _copy_span(df[lo:hi], of[lo:hi])
    return out


# --------------------------------------------------------------------------- ReLU family
@kernel
def _relu_forward_span(x, out):
    zero = x.dtype.type(0)
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            v = out[i]
            out[i] = zero if v < zero else v      # NaN is not < 0: it passes through
    else:
        for i in range(x.size):
            v = x[i]
            out[i] = zero if v < zero else v


@parallel_kernel
def relu_forward(x, out):
    """Rectified linear unit: ``out = max(x, 0)`` (NaN stays NaN)."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n = xf.size
    if n * 2 * xf.itemsize <= SERIAL_MAX_BYTES:
        _relu_forward_span(xf, of)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _relu_forward_span(xf[lo:hi], of[lo:hi])
    return out


@kernel
def _relu_backward_span(dy, x, out):
    zero = x.dtype.type(0)
    if dy.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = out[i] if x[i] > zero else zero
    else:
        for i in range(dy.size):
            out[i] = dy[i] if x[i] > zero else zero


@parallel_kernel
def relu_backward(dy, x, y, out):
    """``out = dy * (x > 0)`` (the derivative at 0 is taken as 0, as in PyTorch)."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n = df.size
    if n * 3 * df.itemsize <= SERIAL_MAX_BYTES:
        _relu_backward_span(df, xf, of)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _relu_backward_span(df[lo:hi], xf[lo:hi], of[lo:hi])
    return out


@kernel
def _leaky_relu_forward_span(x, out, alpha):
    zero = x.dtype.type(0)
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            v = out[i]
            out[i] = v if v > zero else alpha * v
    else:
        for i in range(x.size):
            v = x[i]
            out[i] = v if v > zero else alpha * v


@parallel_kernel
def leaky_relu_forward(x, out, alpha):
    """Leaky ReLU: ``out = x`` for ``x > 0`` else ``alpha * x``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    a = x.dtype.type(alpha)
    n = xf.size
    if n * 2 * xf.itemsize <= SERIAL_MAX_BYTES:
        _leaky_relu_forward_span(xf, of, a)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _leaky_relu_forward_span(xf[lo:hi], of[lo:hi], a)
    return out


@kernel
def _leaky_relu_backward_span(dy, x, out, alpha):
    zero = x.dtype.type(0)
    if dy.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            d = out[i]
            out[i] = d if x[i] > zero else alpha * d
    else:
        for i in range(dy.size):
            d = dy[i]
            out[i] = d if x[i] > zero else alpha * d


@parallel_kernel
def leaky_relu_backward(dy, x, y, out, alpha):
    """``out = dy`` for ``x > 0`` else ``alpha * dy``."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    a = x.dtype.type(alpha)
    n = df.size
    if n * 3 * df.itemsize <= SERIAL_MAX_BYTES:
        _leaky_relu_backward_span(df, xf, of, a)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _leaky_relu_backward_span(df[lo:hi], xf[lo:hi], of[lo:hi], a)
    return out


# --------------------------------------------------------------------------- piecewise / bumps
@kernel
def _piecewise_linear_forward_span(x, out, lo_, hi_, inv_width):
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            v = out[i]
            out[i] = zero if v <= lo_ else (one if v >= hi_ else (v - lo_) * inv_width)
    else:
        for i in range(x.size):
            v = x[i]
            out[i] = zero if v <= lo_ else (one if v >= hi_ else (v - lo_) * inv_width)


@parallel_kernel
def piecewise_linear_forward(x, out, x_min, x_max):
    """Piecewise-linear unit: 0 below ``x_min``, 1 above ``x_max``, linear in between:
    ``out = clip((x - x_min) / (x_max - x_min), 0, 1)``.  Requires ``x_min < x_max``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    lo_ = x.dtype.type(x_min)
    hi_ = x.dtype.type(x_max)
    inv_width = x.dtype.type(1) / (hi_ - lo_)
    n = xf.size
    if n * 2 * xf.itemsize <= SERIAL_MAX_BYTES:
        _piecewise_linear_forward_span(xf, of, lo_, hi_, inv_width)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _piecewise_linear_forward_span(xf[lo:hi], of[lo:hi], lo_, hi_, inv_width)
    return out


@kernel
def _piecewise_linear_backward_span(dy, x, out, lo_, hi_, inv_width):
    zero = x.dtype.type(0)
    if dy.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            v = x[i]
            out[i] = out[i] * inv_width if (v > lo_ and v < hi_) else zero
    else:
        for i in range(dy.size):
            v = x[i]
            out[i] = dy[i] * inv_width if (v > lo_ and v < hi_) else zero


@parallel_kernel
def piecewise_linear_backward(dy, x, y, out, x_min, x_max):
    """``out = dy / (x_max - x_min)`` strictly inside ``(x_min, x_max)``, else 0."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    lo_ = x.dtype.type(x_min)
    hi_ = x.dtype.type(x_max)
    inv_width = x.dtype.type(1) / (hi_ - lo_)
    n = df.size
    if n * 3 * df.itemsize <= SERIAL_MAX_BYTES:
        _piecewise_linear_backward_span(df, xf, of, lo_, hi_, inv_width)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _piecewise_linear_backward_span(df[lo:hi], xf[lo:hi], of[lo:hi], lo_, hi_,
                                            inv_width)
    return out


@kernel
def _step_forward_span(x, out):
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = one if out[i] >= zero else zero
    else:
        for i in range(x.size):
            out[i] = one if x[i] >= zero else zero


@parallel_kernel
def step_forward(x, out):
    """Unit (Heaviside) step: ``out = 1`` for ``x >= 0`` else 0.

    The output is a 0/1 mask: NaN is not ``>= 0``, so NaN maps to 0 (as in the NumPy
    reference); detect NaN upstream (e.g. in the loss) rather than through a step."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n = xf.size
    if n * 2 * xf.itemsize <= SERIAL_MAX_BYTES:
        _step_forward_span(xf, of)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _step_forward_span(xf[lo:hi], of[lo:hi])
    return out


@kernel
def _zero_span(out):
    zero = out.dtype.type(0)
    for i in range(out.size):
        out[i] = zero


@parallel_kernel
def step_backward(dy, x, y, out):
    """The unit step is forward-only: its derivative is 0 almost everywhere (and undefined
    at 0), so no gradient flows through it and ``out = 0``.  Train with sigmoid or
    piecewise-linear units instead and use the step for inference/thresholding."""
    of = out.reshape(out.size)
    n = of.size
    if n * 1 * of.itemsize <= SERIAL_MAX_BYTES:
        _zero_span(of)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _zero_span(of[lo:hi])
    return out
