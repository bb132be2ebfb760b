"""Activation functions and their derivatives.

Every activation ``name`` has two kernels with uniform signatures::

    name_forward(x, out, *params)            out = f(x)
    name_backward(dy, x, y, out, *params)    out = dy * f'(x)      (y = f(x) from the forward)

``x``, ``y``, ``dy`` and ``out`` are C-contiguous 2-D arrays (batch, features) of one dtype;
``out`` may be the same array as ``dy`` (in-place backward) or ``x`` (in-place forward).
Scalar parameters (``beta``, ``alpha``, ``x_min``, ``x_max``) come last, are converted to the
array dtype inside the kernel, and have defaults listed in :data:`ACTIVATIONS`, the one list
of activation names that layers, tests and benchmarks read.

NaN in gives NaN out in every forward except ``step``, whose output is a 0/1 mask
(``x >= 0`` is false for NaN, so NaN maps to 0, as in the NumPy reference).

How the element-wise kernels are built (each in three parts):

* ``_name(v, ...)``: the function of one element, written with :mod:`.vmath` so that LLVM
  inlines and vectorises it (``math.exp`` would be a scalar libm call, ~10x slower).
* ``_name_forward_span(x, out, ...)``: the loop over a flat stretch of elements.  When
  ``out`` is ``x`` itself it loops over ``out`` alone: with two names for one buffer LLVM's
  runtime overlap check fails and it falls back to scalar code (10x slower in place).
* ``name_forward``: flattens the arrays (one statement per array: a tuple assignment of
  several ``reshape`` calls miscompiled under ``parallel=True`` in numba 0.68.1, mixing up
  the arrays) and runs the span serially below a size threshold, else in chunks on
  ``prange`` (see :data:`SERIAL_MAX_TRANSCENDENTAL` and :data:`SERIAL_MAX_BYTES`).
  Waking Numba's thread pool costs 1-3 µs (more when its threads have gone to sleep),
  which is more than small problems take serially.

Softmax works on rows, in blocks of rows.  Constants are built with ``x.dtype.type(c)`` (or
:func:`.vmath.like` for scalars) so float32 stays float32.
"""
from numba import prange

from . import vmath
from ._jit import kernel, parallel_kernel
from .simd_intrinsics import maxnum

# 'contract' lets LLVM fuse a*b + c into one FMA: rounding only, never NaN/Inf behaviour.
_FLAGS = {"contract"}
# Row reductions (softmax sums) also need 'reassoc' to vectorise: again rounding only.
_REDUCE_FLAGS = {"contract", "reassoc"}

# When to use the second core, measured on the 2-core Zen 5 (warm pool: waking it costs
# ~1.2 µs; serial span vs the chunked parallel loop, float32):
#: Kernels built on exp/log/erf/tanh are compute-bound (~0.25-0.5 ns per float32 element
#: on one core): serial up to 8192 elements (2-4 µs), then tasks of 4096 elements
#: (sigmoid: 16K elements 3.7 µs serial, 3.1 µs on two threads; 8K: 2.0 vs 2.3 µs).
SERIAL_MAX_TRANSCENDENTAL = 8192
CHUNK_TRANSCENDENTAL = 4096
#: The other kernels are memory-bound: serial while all their array operands together
#: span at most 512 KiB (half the 1 MiB L2), i.e. 64K float32 elements for a forward
#: (x, out) and ~43K for a backward (dy, x, out); then tasks of 16384 elements
#: (ReLU forward at 64K elements: 2.4 µs serial, 2.9 µs parallel; at 128K 7.1 vs 3.5 µs;
#: ReLU backward at 32K: 1.9 vs 2.5 µs, at 64K 4.3 vs 3.3 µs).
SERIAL_MAX_BYTES = 1 << 19
CHUNK_CHEAP = 16384


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


# --------------------------------------------------------------------------- sigmoid
@kernel(fastmath=_FLAGS)
def _sigmoid(z):
    """``1/(1+e)`` for ``z >= 0`` and ``e/(1+e)`` otherwise, with ``e = exp(-|z|) <= 1``:
    never overflows, exactly 1 or 0 at ±large ``z`` and ±inf."""
    one = vmath.like(z, 1.0)
    e = vmath.exp(-abs(z))
    return (one if z >= vmath.like(z, 0.0) else e) / (one + e)


@kernel(fastmath=_FLAGS)
def _sigmoid_forward_span(x, out, beta):
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = _sigmoid(beta * out[i])
    else:
        for i in range(x.size):
            out[i] = _sigmoid(beta * x[i])


@parallel_kernel
def sigmoid_forward(x, out, beta):
    """Logistic sigmoid with slope ``beta``: ``out = 1 / (1 + exp(-beta * x))``.

    Computed as ``1/(1+e)`` for ``beta*x >= 0`` and ``e/(1+e)`` otherwise, with
    ``e = exp(-|beta*x|)``, so it never overflows (finite for ``x = ±1e4``).
    """
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    b = x.dtype.type(beta)
    n = xf.size
    if n <= SERIAL_MAX_TRANSCENDENTAL:
        _sigmoid_forward_span(xf, of, b)
    else:
        for c in prange((n + CHUNK_TRANSCENDENTAL - 1) // CHUNK_TRANSCENDENTAL):
            lo = c * CHUNK_TRANSCENDENTAL
            hi = min(lo + CHUNK_TRANSCENDENTAL, n)
            _sigmoid_forward_span(xf[lo:hi], of[lo:hi], b)
    return out


@kernel(fastmath=_FLAGS)
def _sigmoid_backward_span(dy, y, out, beta):
    one = y.dtype.type(1)
    if dy.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = out[i] * beta * y[i] * (one - y[i])
    else:
        for i in range(dy.size):
            out[i] = dy[i] * beta * y[i] * (one - y[i])


@parallel_kernel
def sigmoid_backward(dy, x, y, out, beta):
    """``out = dy * beta * y * (1 - y)`` with ``y = sigmoid(beta * x)``."""
    df = dy.reshape(dy.size)
    yf = y.reshape(y.size)
    of = out.reshape(out.size)
    b = y.dtype.type(beta)
    n = df.size
    if n * 3 * df.itemsize <= SERIAL_MAX_BYTES:
        _sigmoid_backward_span(df, yf, of, b)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _sigmoid_backward_span(df[lo:hi], yf[lo:hi], of[lo:hi], b)
    return out


# --------------------------------------------------------------------------- tanh
@kernel(fastmath=_FLAGS)
def _tanh_forward_span(x, out):
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = vmath.tanh(out[i])
    else:
        for i in range(x.size):
            out[i] = vmath.tanh(x[i])


@parallel_kernel
def tanh_forward(x, out):
    """Hyperbolic tangent: ``out = tanh(x)``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n = xf.size
    if n <= SERIAL_MAX_TRANSCENDENTAL:
        _tanh_forward_span(xf, of)
    else:
        for c in prange((n + CHUNK_TRANSCENDENTAL - 1) // CHUNK_TRANSCENDENTAL):
            lo = c * CHUNK_TRANSCENDENTAL
            hi = min(lo + CHUNK_TRANSCENDENTAL, n)
            _tanh_forward_span(xf[lo:hi], of[lo:hi])
    return out


@kernel(fastmath=_FLAGS)
def _tanh_backward_span(dy, y, out):
    one = y.dtype.type(1)
    if dy.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = out[i] * (one - y[i] * y[i])
    else:
        for i in range(dy.size):
            out[i] = dy[i] * (one - y[i] * y[i])


@parallel_kernel
def tanh_backward(dy, x, y, out):
    """``out = dy * (1 - y**2)`` with ``y = tanh(x)``."""
    df = dy.reshape(dy.size)
    yf = y.reshape(y.size)
    of = out.reshape(out.size)
    n = df.size
    if n * 3 * df.itemsize <= SERIAL_MAX_BYTES:
        _tanh_backward_span(df, yf, of)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _tanh_backward_span(df[lo:hi], yf[lo:hi], of[lo:hi])
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


@kernel(fastmath=_FLAGS)
def _elu(v, alpha):
    zero = vmath.like(v, 0.0)
    # expm1 of a non-positive number (or NaN): accurate near 0, never overflows.
    return v if v > zero else alpha * vmath.expm1(zero if v > zero else v)


@kernel(fastmath=_FLAGS)
def _elu_forward_span(x, out, alpha):
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = _elu(out[i], alpha)
    else:
        for i in range(x.size):
            out[i] = _elu(x[i], alpha)


@parallel_kernel
def elu_forward(x, out, alpha):
    """Exponential linear unit: ``out = x`` for ``x > 0`` else ``alpha * (exp(x) - 1)``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    a = x.dtype.type(alpha)
    n = xf.size
    if n <= SERIAL_MAX_TRANSCENDENTAL:
        _elu_forward_span(xf, of, a)
    else:
        for c in prange((n + CHUNK_TRANSCENDENTAL - 1) // CHUNK_TRANSCENDENTAL):
            lo = c * CHUNK_TRANSCENDENTAL
            hi = min(lo + CHUNK_TRANSCENDENTAL, n)
            _elu_forward_span(xf[lo:hi], of[lo:hi], a)
    return out


@kernel
def _elu_backward_span(dy, x, y, out, alpha):
    zero = x.dtype.type(0)
    if dy.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            d = out[i]
            out[i] = d if x[i] > zero else d * (y[i] + alpha)
    else:
        for i in range(dy.size):
            d = dy[i]
            out[i] = d if x[i] > zero else d * (y[i] + alpha)


@parallel_kernel
def elu_backward(dy, x, y, out, alpha):
    """``out = dy`` for ``x > 0`` else ``dy * (y + alpha)`` (= ``dy * alpha * exp(x)``)."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    of = out.reshape(out.size)
    a = x.dtype.type(alpha)
    n = df.size
    if n * 4 * df.itemsize <= SERIAL_MAX_BYTES:
        _elu_backward_span(df, xf, yf, of, a)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _elu_backward_span(df[lo:hi], xf[lo:hi], yf[lo:hi], of[lo:hi], a)
    return out


# --------------------------------------------------------------------------- smooth ReLUs
@kernel(fastmath=_FLAGS)
def _softplus(v):
    zero = vmath.like(v, 0.0)
    return (v if v > zero else zero) + vmath.log1p(vmath.exp(-abs(v)))


@kernel(fastmath=_FLAGS)
def _softplus_forward_span(x, out):
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = _softplus(out[i])
    else:
        for i in range(x.size):
            out[i] = _softplus(x[i])


@parallel_kernel
def softplus_forward(x, out):
    """Softplus: ``out = log(1 + exp(x))``, computed as ``max(x, 0) + log1p(exp(-|x|))``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n = xf.size
    if n <= SERIAL_MAX_TRANSCENDENTAL:
        _softplus_forward_span(xf, of)
    else:
        for c in prange((n + CHUNK_TRANSCENDENTAL - 1) // CHUNK_TRANSCENDENTAL):
            lo = c * CHUNK_TRANSCENDENTAL
            hi = min(lo + CHUNK_TRANSCENDENTAL, n)
            _softplus_forward_span(xf[lo:hi], of[lo:hi])
    return out


@kernel(fastmath=_FLAGS)
def _softplus_backward_span(dy, x, out):
    if dy.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = out[i] * _sigmoid(x[i])
    else:
        for i in range(dy.size):
            out[i] = dy[i] * _sigmoid(x[i])


@parallel_kernel
def softplus_backward(dy, x, y, out):
    """``out = dy * sigmoid(x)`` (the derivative of softplus is the logistic sigmoid)."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n = df.size
    if n <= SERIAL_MAX_TRANSCENDENTAL:
        _softplus_backward_span(df, xf, of)
    else:
        for c in prange((n + CHUNK_TRANSCENDENTAL - 1) // CHUNK_TRANSCENDENTAL):
            lo = c * CHUNK_TRANSCENDENTAL
            hi = min(lo + CHUNK_TRANSCENDENTAL, n)
            _softplus_backward_span(df[lo:hi], xf[lo:hi], of[lo:hi])
    return out


@kernel(fastmath=_FLAGS)
def _gelu_forward_span(x, out):
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            v = out[i]
            out[i] = v * vmath.normal_cdf(v)
    else:
        for i in range(x.size):
            v = x[i]
            out[i] = v * vmath.normal_cdf(v)


@parallel_kernel
def gelu_forward(x, out):
    """Gaussian error linear unit (exact form): ``out = x * Phi(x) = x/2 * (1 + erf(x/sqrt 2))``
    with ``Phi`` the standard normal cdf (computed via erfc: accurate in both tails)."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n = xf.size
    if n <= SERIAL_MAX_TRANSCENDENTAL:
        _gelu_forward_span(xf, of)
    else:
        for c in prange((n + CHUNK_TRANSCENDENTAL - 1) // CHUNK_TRANSCENDENTAL):
            lo = c * CHUNK_TRANSCENDENTAL
            hi = min(lo + CHUNK_TRANSCENDENTAL, n)
            _gelu_forward_span(xf[lo:hi], of[lo:hi])
    return out


@kernel(fastmath=_FLAGS)
def _gelu_backward_span(dy, x, out):
    if dy.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            v = x[i]
            out[i] = out[i] * (vmath.normal_cdf(v) + v * vmath.normal_pdf(v))
    else:
        for i in range(dy.size):
            v = x[i]
            out[i] = dy[i] * (vmath.normal_cdf(v) + v * vmath.normal_pdf(v))


@parallel_kernel
def gelu_backward(dy, x, y, out):
    """``out = dy * (Phi(x) + x * phi(x))`` with ``phi`` the standard normal density."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n = df.size
    if n <= SERIAL_MAX_TRANSCENDENTAL:
        _gelu_backward_span(df, xf, of)
    else:
        for c in prange((n + CHUNK_TRANSCENDENTAL - 1) // CHUNK_TRANSCENDENTAL):
            lo = c * CHUNK_TRANSCENDENTAL
            hi = min(lo + CHUNK_TRANSCENDENTAL, n)
            _gelu_backward_span(df[lo:hi], xf[lo:hi], of[lo:hi])
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


@kernel(fastmath=_FLAGS)
def _gaussian_forward_span(x, out):
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = vmath.gaussian(out[i])
    else:
        for i in range(x.size):
            out[i] = vmath.gaussian(x[i])


@parallel_kernel
def gaussian_forward(x, out):
    """Gaussian bump: ``out = exp(-x**2)``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n = xf.size
    if n <= SERIAL_MAX_TRANSCENDENTAL:
        _gaussian_forward_span(xf, of)
    else:
        for c in prange((n + CHUNK_TRANSCENDENTAL - 1) // CHUNK_TRANSCENDENTAL):
            lo = c * CHUNK_TRANSCENDENTAL
            hi = min(lo + CHUNK_TRANSCENDENTAL, n)
            _gaussian_forward_span(xf[lo:hi], of[lo:hi])
    return out


@kernel(fastmath=_FLAGS)
def _gaussian_backward_span(dy, x, y, out):
    minus_two = x.dtype.type(-2)
    if dy.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = minus_two * out[i] * x[i] * y[i]
    else:
        for i in range(dy.size):
            out[i] = minus_two * dy[i] * x[i] * y[i]


@parallel_kernel
def gaussian_backward(dy, x, y, out):
    """``out = dy * (-2 x exp(-x**2)) = -2 * dy * x * y``."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    of = out.reshape(out.size)
    n = df.size
    if n * 4 * df.itemsize <= SERIAL_MAX_BYTES:
        _gaussian_backward_span(df, xf, yf, of)
    else:
        for c in prange((n + CHUNK_CHEAP - 1) // CHUNK_CHEAP):
            lo = c * CHUNK_CHEAP
            hi = min(lo + CHUNK_CHEAP, n)
            _gaussian_backward_span(df[lo:hi], xf[lo:hi], yf[lo:hi], of[lo:hi])
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


# --------------------------------------------------------------------------- softmax (rows)
@kernel(fastmath=_REDUCE_FLAGS)
def _softmax_rows(x, out):
    """Softmax of a block of rows in three passes, so that exp vectorises even for rows
    shorter than a vector: (1) ``out = x - max(row)`` per row, (2) ``out = exp(out)`` over
    the whole block, (3) each row divided by its sum."""
    n_rows, n_cols = x.shape
    one = x.dtype.type(1)
    for i in range(n_rows):
        xi = x[i]
        oi = out[i]
        m = xi[0]
        for j in range(1, n_cols):
            m = maxnum(m, xi[j])      # ignores NaN; a NaN element still makes the sum NaN
        if xi.ctypes.data == oi.ctypes.data:     # in place: one name, so LLVM vectorises
            for j in range(n_cols):
                oi[j] -= m
        else:
            for j in range(n_cols):
                oi[j] = xi[j] - m
    of = out.reshape(out.size)
    for k in range(of.size):
        of[k] = vmath.exp(of[k])
    for i in range(n_rows):
        oi = out[i]
        s = x.dtype.type(0)
        for j in range(n_cols):
            s += oi[j]
        inv = one / s
        for j in range(n_cols):
            oi[j] *= inv


@parallel_kernel
def softmax_forward(x, out):
    """Row-wise softmax: ``out[i] = exp(x[i] - max x[i]) / sum_j exp(x[i, j] - max x[i])``.

    Subtracting the row maximum makes every exponent <= 0, so rows of logits of any size
    (e.g. ±1000) give finite probabilities that sum to 1.  A NaN makes its row NaN.
    """
    n_rows, n_cols = x.shape
    if x.size <= SERIAL_MAX_TRANSCENDENTAL:
        _softmax_rows(x, out)
    else:
        step = max(1, CHUNK_TRANSCENDENTAL // n_cols)     # rows per task
        for t in prange((n_rows + step - 1) // step):
            lo = t * step
            hi = min(lo + step, n_rows)
            _softmax_rows(x[lo:hi], out[lo:hi])
    return out


@kernel(fastmath=_REDUCE_FLAGS)
def _softmax_backward_rows(dy, y, out):
    n_rows, n_cols = y.shape
    for i in range(n_rows):
        dyi = dy[i]
        yi = y[i]
        oi = out[i]
        dot = y.dtype.type(0)
        for j in range(n_cols):
            dot += dyi[j] * yi[j]
        for j in range(n_cols):
            oi[j] = yi[j] * (dyi[j] - dot)


@parallel_kernel
def softmax_backward(dy, x, y, out):
    """Jacobian-vector product of the row softmax: ``out = y * (dy - sum_j(dy * y))`` per row."""
    n_rows, n_cols = y.shape
    if y.size * 3 * y.itemsize <= SERIAL_MAX_BYTES:
        _softmax_backward_rows(dy, y, out)
    else:
        step = max(1, CHUNK_CHEAP // n_cols)
        for t in prange((n_rows + step - 1) // step):
            lo = t * step
            hi = min(lo + step, n_rows)
            _softmax_backward_rows(dy[lo:hi], y[lo:hi], out[lo:hi])
    return out


# --------------------------------------------------------------------------- the registry
#: The one list of activation names: name -> default scalar parameters, in the order the
#: kernels ``name_forward(x, out, *params)`` / ``name_backward(dy, x, y, out, *params)``
#: take them.  Layers, tests, benchmarks and every backend are driven by this table.
ACTIVATIONS = {
    "identity": {},
    "sigmoid": {"beta": 1.0},
    "tanh": {},
    "relu": {},
    "leaky_relu": {"alpha": 0.01},
    "elu": {"alpha": 1.0},
    "softplus": {},
    "gelu": {},
    "piecewise_linear": {"x_min": -0.5, "x_max": 0.5},
    "gaussian": {},
    "step": {},
    "softmax": {},
}

#: Activations whose derivative is zero almost everywhere: no gradient flows through them.
NOT_DIFFERENTIABLE = frozenset({"step"})

#: Activations that act on whole rows rather than element by element.
ROW_WISE = frozenset({"softmax"})

__all__ = ([f"{name}_{way}" for name in ACTIVATIONS for way in ("forward", "backward")]
           + ["ACTIVATIONS", "NOT_DIFFERENTIABLE", "ROW_WISE"])
