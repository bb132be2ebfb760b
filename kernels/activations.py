"""Activation functions and their derivatives.

Every activation ``name`` has two kernels with uniform signatures::

    name_forward(x, out, *params)            out = f(x)
    name_backward(dy, x, y, out, *params)    out = dy * f'(x)      (y = f(x) from the forward)

``x``, ``y``, ``dy`` and ``out`` are C-contiguous 2-D arrays (batch, features) of one dtype;
``out`` may be the same array as ``dy`` (in-place backward) or ``x`` (in-place forward).
Scalar parameters (``beta``, ``alpha``, ``x_min``, ``x_max``) come last, are converted to the
array dtype inside the kernel, and have defaults listed in :data:`ACTIVATIONS`, the one list
of activation names that layers, tests and benchmarks read.

Element-wise kernels flatten their arguments (one statement per array: a tuple assignment
of several ``reshape`` calls miscompiled under ``parallel=True`` in numba 0.68.1, mixing up
the arrays) and run one ``prange`` loop; softmax works on
rows.  Constants are built with ``x.dtype.type(c)`` so float32 stays float32.
"""
import math

from numba import prange

from ._jit import parallel_kernel


# --------------------------------------------------------------------------- identity / linear
@parallel_kernel
def identity_forward(x, out):
    """Identity (linear) activation: ``out = x``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    for i in prange(xf.size):
        of[i] = xf[i]
    return out


@parallel_kernel
def identity_backward(dy, x, y, out):
    """Derivative of the identity: ``out = dy``."""
    df = dy.reshape(dy.size)
    of = out.reshape(out.size)
    for i in prange(df.size):
        of[i] = df[i]
    return out


# --------------------------------------------------------------------------- sigmoid
@parallel_kernel
def sigmoid_forward(x, out, beta):
    """Logistic sigmoid with slope ``beta``: ``out = 1 / (1 + exp(-beta * x))``.

    Computed as ``1/(1+e)`` for ``beta*x >= 0`` and ``e/(1+e)`` otherwise, with
    ``e = exp(-|beta*x|)``, so it never overflows (finite for ``x = ±1e4``).
    """
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    b = x.dtype.type(beta)
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in prange(xf.size):
        z = b * xf[i]
        e = math.exp(-abs(z))
        of[i] = (one if z >= zero else e) / (one + e)
    return out


@parallel_kernel
def sigmoid_backward(dy, x, y, out, beta):
    """``out = dy * beta * y * (1 - y)`` with ``y = sigmoid(beta * x)``."""
    df = dy.reshape(dy.size)
    yf = y.reshape(y.size)
    of = out.reshape(out.size)
    b = y.dtype.type(beta)
    one = y.dtype.type(1)
    for i in prange(df.size):
        of[i] = df[i] * b * yf[i] * (one - yf[i])
    return out


# --------------------------------------------------------------------------- tanh
@parallel_kernel
def tanh_forward(x, out):
    """Hyperbolic tangent: ``out = tanh(x)``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    for i in prange(xf.size):
        of[i] = math.tanh(xf[i])
    return out


@parallel_kernel
def tanh_backward(dy, x, y, out):
    """``out = dy * (1 - y**2)`` with ``y = tanh(x)``."""
    df = dy.reshape(dy.size)
    yf = y.reshape(y.size)
    of = out.reshape(out.size)
    one = y.dtype.type(1)
    for i in prange(df.size):
        of[i] = df[i] * (one - yf[i] * yf[i])
    return out


# --------------------------------------------------------------------------- ReLU family
@parallel_kernel
def relu_forward(x, out):
    """Rectified linear unit: ``out = max(x, 0)``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    zero = x.dtype.type(0)
    for i in prange(xf.size):
        v = xf[i]
        of[i] = v if v > zero else zero
    return out


@parallel_kernel
def relu_backward(dy, x, y, out):
    """``out = dy * (x > 0)`` (the derivative at 0 is taken as 0, as in PyTorch)."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    zero = x.dtype.type(0)
    for i in prange(df.size):
        of[i] = df[i] if xf[i] > zero else zero
    return out


@parallel_kernel
def leaky_relu_forward(x, out, alpha):
    """Leaky ReLU: ``out = x`` for ``x > 0`` else ``alpha * x``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    a = x.dtype.type(alpha)
    zero = x.dtype.type(0)
    for i in prange(xf.size):
        v = xf[i]
        of[i] = v if v > zero else a * v
    return out


@parallel_kernel
def leaky_relu_backward(dy, x, y, out, alpha):
    """``out = dy`` for ``x > 0`` else ``alpha * dy``."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    a = x.dtype.type(alpha)
    zero = x.dtype.type(0)
    for i in prange(df.size):
        of[i] = df[i] if xf[i] > zero else a * df[i]
    return out


@parallel_kernel
def elu_forward(x, out, alpha):
    """Exponential linear unit: ``out = x`` for ``x > 0`` else ``alpha * (exp(x) - 1)``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    a = x.dtype.type(alpha)
    zero = x.dtype.type(0)
    for i in prange(xf.size):
        v = xf[i]
        # expm1 of a non-positive number: accurate near 0, never overflows.
        of[i] = v if v > zero else a * math.expm1(min(v, zero))
    return out


@parallel_kernel
def elu_backward(dy, x, y, out, alpha):
    """``out = dy`` for ``x > 0`` else ``dy * (y + alpha)`` (= ``dy * alpha * exp(x)``)."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    of = out.reshape(out.size)
    a = x.dtype.type(alpha)
    zero = x.dtype.type(0)
    for i in prange(df.size):
        of[i] = df[i] if xf[i] > zero else df[i] * (yf[i] + a)
    return out


# --------------------------------------------------------------------------- smooth ReLUs
@parallel_kernel
def softplus_forward(x, out):
    """Softplus: ``out = log(1 + exp(x))``, computed as ``max(x, 0) + log1p(exp(-|x|))``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    zero = x.dtype.type(0)
    for i in prange(xf.size):
        v = xf[i]
        of[i] = max(v, zero) + math.log1p(math.exp(-abs(v)))
    return out


@parallel_kernel
def softplus_backward(dy, x, y, out):
    """``out = dy * sigmoid(x)`` (the derivative of softplus is the logistic sigmoid)."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in prange(df.size):
        v = xf[i]
        e = math.exp(-abs(v))
        of[i] = df[i] * (one if v >= zero else e) / (one + e)
    return out


@parallel_kernel
def gelu_forward(x, out):
    """Gaussian error linear unit (exact form): ``out = x * Phi(x) = x/2 * (1 + erf(x/sqrt 2))``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    half = x.dtype.type(0.5)
    one = x.dtype.type(1)
    inv_sqrt2 = x.dtype.type(0.7071067811865476)
    for i in prange(xf.size):
        v = xf[i]
        of[i] = half * v * (one + math.erf(v * inv_sqrt2))
    return out


@parallel_kernel
def gelu_backward(dy, x, y, out):
    """``out = dy * (Phi(x) + x * phi(x))`` with ``phi`` the standard normal density."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    half = x.dtype.type(0.5)
    one = x.dtype.type(1)
    inv_sqrt2 = x.dtype.type(0.7071067811865476)
    inv_sqrt_2pi = x.dtype.type(0.3989422804014327)
    for i in prange(df.size):
        v = xf[i]
        cdf = half * (one + math.erf(v * inv_sqrt2))
        pdf = inv_sqrt_2pi * math.exp(-half * v * v)
        of[i] = df[i] * (cdf + v * pdf)
    return out


# --------------------------------------------------------------------------- piecewise / bumps
@parallel_kernel
def piecewise_linear_forward(x, out, x_min, x_max):
    """Piecewise-linear unit: 0 below ``x_min``, 1 above ``x_max``, linear in between:
    ``out = clip((x - x_min) / (x_max - x_min), 0, 1)``.  Requires ``x_min < x_max``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    lo = x.dtype.type(x_min)
    hi = x.dtype.type(x_max)
    inv_width = x.dtype.type(1) / (hi - lo)
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in prange(xf.size):
        v = xf[i]
        of[i] = zero if v <= lo else (one if v >= hi else (v - lo) * inv_width)
    return out


@parallel_kernel
def piecewise_linear_backward(dy, x, y, out, x_min, x_max):
    """``out = dy / (x_max - x_min)`` strictly inside ``(x_min, x_max)``, else 0."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    lo = x.dtype.type(x_min)
    hi = x.dtype.type(x_max)
    inv_width = x.dtype.type(1) / (hi - lo)
    zero = x.dtype.type(0)
    for i in prange(df.size):
        v = xf[i]
        of[i] = df[i] * inv_width if (v > lo and v < hi) else zero
    return out


@parallel_kernel
def gaussian_forward(x, out):
    """Gaussian bump: ``out = exp(-x**2)``."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    for i in prange(xf.size):
        v = xf[i]
        of[i] = math.exp(-(v * v))
    return out


@parallel_kernel
def gaussian_backward(dy, x, y, out):
    """``out = dy * (-2 x exp(-x**2)) = -2 * dy * x * y``."""
    df = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    of = out.reshape(out.size)
    minus_two = x.dtype.type(-2)
    for i in prange(df.size):
        of[i] = minus_two * df[i] * xf[i] * yf[i]
    return out


@parallel_kernel
def step_forward(x, out):
    """Unit (Heaviside) step: ``out = 1`` for ``x >= 0`` else 0."""
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in prange(xf.size):
        of[i] = one if xf[i] >= zero else zero
    return out


@parallel_kernel
def step_backward(dy, x, y, out):
    """The unit step is forward-only: its derivative is 0 almost everywhere (and undefined
    at 0), so no gradient flows through it and ``out = 0``.  Train with sigmoid or
    piecewise-linear units instead and use the step for inference/thresholding."""
    of = out.reshape(out.size)
    zero = out.dtype.type(0)
    for i in prange(of.size):
        of[i] = zero
    return out


# --------------------------------------------------------------------------- softmax (rows)
@parallel_kernel
def softmax_forward(x, out):
    """Row-wise softmax: ``out[i] = exp(x[i] - max x[i]) / sum_j exp(x[i, j] - max x[i])``.

    Subtracting the row maximum makes every exponent <= 0, so rows of logits of any size
    (e.g. ±1000) give finite probabilities that sum to 1.
    """
    n_rows, n_cols = x.shape
    for i in prange(n_rows):
        m = x[i, 0]
        for j in range(1, n_cols):
            m = max(m, x[i, j])
        s = x.dtype.type(0)
        for j in range(n_cols):
            e = math.exp(x[i, j] - m)
            out[i, j] = e
            s += e
        inv = x.dtype.type(1) / s
        for j in range(n_cols):
            out[i, j] *= inv
    return out


@parallel_kernel
def softmax_backward(dy, x, y, out):
    """Jacobian-vector product of the row softmax: ``out = y * (dy - sum_j(dy * y))`` per row."""
    n_rows, n_cols = y.shape
    for i in prange(n_rows):
        dot = y.dtype.type(0)
        for j in range(n_cols):
            dot += dy[i, j] * y[i, j]
        for j in range(n_cols):
            out[i, j] = y[i, j] * (dy[i, j] - dot)
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
