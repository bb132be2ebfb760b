"""The smooth activations (sigmoid, tanh, ELU, softplus, GELU, Gaussian) and their
derivatives: kernels built on the vectorised :mod:`.vmath` functions (see
:mod:`.activations` for how every element-wise kernel is built, and :mod:`._act_common`
for the thresholds)."""
from numba import prange

from . import vmath
from ._act_common import (CHUNK_CHEAP, CHUNK_TRANSCENDENTAL, SERIAL_MAX_BYTES,
                          SERIAL_MAX_TRANSCENDENTAL, _FLAGS)
from ._jit import kernel, parallel_kernel


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


# --------------------------------------------------------------------------- ELU
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


# --------------------------------------------------------------------------- Gaussian
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
