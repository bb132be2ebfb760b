"""Activation functions and their derivatives on the GPU: the twins of :mod:`..activations`.

Every activation ``name`` of :data:`ACTIVATIONS` (the CPU registry, imported, not copied)
has the CPU kernels' signatures, ``name_forward(x, out, *params)`` (``out = f(x)``) and
``name_backward(dy, x, y, out, *params)`` (``out = dy * f'(x)``, ``y = f(x)``), on
C-contiguous device arrays of one dtype (1-D or 2-D; softmax 2-D); ``out`` may be ``x``
(forward) or ``dy`` (backward).

* Device functions, built per dtype by :func:`device_functions`: one per activation for
  its value and, for :data:`..dense.FROM_OUTPUT`, for ``dy * f'(z)`` from the output ``y``
  alone (the fused dense backward never stores ``z``), plus dispatchers on the integer
  codes of :data:`..epilogue.EPILOGUE_CODES` (``forward``, ``backward``,
  ``backward_from_output``) that :mod:`.dense` reuses.  They are inlined by Numba
  (``inline="always"``): a non-inlined device function is compiled for the current GPU,
  so ``cuda.compile_ptx`` could not compile the kernels on a machine without one.
* The element-wise launchers share two grid-stride kernels over the flattened arrays that
  switch on the code.  The code is the same for every thread (no divergence).  The
  backward kernel reads ``x`` and ``y`` only for the activations that need them.
* Softmax: one block per row (grid-stride over the rows), the threads striding along the
  row; the row maximum and the sum of exponentials are tree reductions in shared memory
  (the block size is a power of two, 32 to ``THREADS``, so rows of any width work).
* Constants are Numba scalars of the kernel's dtype and the launchers convert the
  parameters to the array dtype, so a float32 kernel has no float64 instruction.

Numerics follow the CPU kernels (overflow-free forms; NaN in gives NaN out except for the
step, which maps NaN to 0; infinities as in the NumPy reference): sigmoid through
``exp(-|z|)``, softplus as ``max(x, 0) + log1p(exp(-|x|))``, GELU as ``x * Phi(x)`` with
``Phi(x) = erfc(-x/sqrt 2)/2`` corrected to first order for the rounding of ``x/sqrt 2``
(accurate in the left tail), and ``exp(-x**2)`` with ``x**2`` split exactly by an FMA.
"""
import functools
import math
from types import SimpleNamespace

import numba
from numba import cuda

from ..activations import ACTIVATIONS, NOT_DIFFERENTIABLE, ROW_WISE
from ..epilogue import EPILOGUE_CODES
from ._common import MAX_BLOCKS, THREADS, grid_1d, signatures

__all__ = ([f"{name}_{way}" for name in ACTIVATIONS for way in ("forward", "backward")]
           + ["ACTIVATIONS", "NOT_DIFFERENTIABLE", "ROW_WISE"])

(_IDENTITY, _RELU, _LEAKY_RELU, _ELU, _SIGMOID, _TANH, _SOFTPLUS, _GELU, _PIECEWISE_LINEAR,
 _GAUSSIAN, _STEP) = (EPILOGUE_CODES[name] for name in (
    "identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu",
    "piecewise_linear", "gaussian", "step"))

_INV_SQRT2 = 0.7071067811865476
_TWO_OVER_SQRT_PI = 1.1283791670955126
_INV_SQRT_2PI = 0.3989422804014327
# 1/sqrt(2) minus its rounding to the dtype (exact to the dtype's precision).
_INV_SQRT2_LO = {"float32": 1.210161710447897e-08, "float64": -4.833646656726457e-17}
# |x| above which exp(-x**2) (resp. exp(-x**2/2)) is exactly 0: clamping |x| there keeps the
# FMA split of x**2 free of inf - inf.
_GAUSS_X_MAX = {"float32": 11.0, "float64": 40.0}
_HALF_GAUSS_X_MAX = {"float32": 15.0, "float64": 40.0}
# |x| below which the tail correction of Phi is computed (it would be inf - inf at inf).
_FINITE_MAX = {"float32": 1e30, "float64": 1e300}


@functools.lru_cache(maxsize=None)
def device_functions(dtype):
    """The device functions for the Numba float type ``dtype``, in a namespace (one per
    dtype: the kernels of this module and of :mod:`.dense` share them)."""
    key = str(dtype)
    zero, one, half = dtype(0), dtype(1), dtype(0.5)
    minus_two = dtype(-2)
    inv_sqrt2, inv_sqrt2_lo = dtype(_INV_SQRT2), dtype(_INV_SQRT2_LO[key])
    two_over_sqrt_pi, inv_sqrt_2pi = dtype(_TWO_OVER_SQRT_PI), dtype(_INV_SQRT_2PI)
    gauss_max, half_gauss_max = dtype(_GAUSS_X_MAX[key]), dtype(_HALF_GAUSS_X_MAX[key])
    finite_max = dtype(_FINITE_MAX[key])
    device = cuda.jit(device=True, inline="always")

    # ------------------------------------------------------------------ values
    @device
    def sigmoid(v, beta):
        z = beta * v
        e = math.exp(-abs(z))                   # <= 1: never overflows
        return (one if z >= zero else e) / (one + e)

    @device
    def relu(v):
        return zero if v < zero else v          # NaN is not < 0: it passes through

    @device
    def leaky_relu(v, alpha):
        return v if v > zero else alpha * v

    @device
    def elu(v, alpha):
        return v if v > zero else alpha * math.expm1(v)   # expm1 of v <= 0 (or NaN)

    @device
    def softplus(v):
        return (v if v > zero else zero) + math.log1p(math.exp(-abs(v)))

    @device
    def normal_cdf(v):
        # z = -v/sqrt 2 = zh + zl; erfc(zh + zl) = erfc(zh) - zl * 2/sqrt(pi) * exp(-zh**2)
        zh = -v * inv_sqrt2
        zl = cuda.fma(-v, inv_sqrt2, -zh) - v * inv_sqrt2_lo if abs(v) < finite_max else zero
        return half * (math.erfc(zh) - zl * two_over_sqrt_pi * math.exp(-zh * zh))

    @device
    def exp_neg_square(v, scale, clamp):
        """``exp(-scale * v*v)`` (``scale`` 1 or 1/2) with ``v*v = hi + lo`` split exactly
        by an FMA: ``exp(-scale*hi) * (1 - scale*lo)``; rounding ``v*v`` first would cost
        ``scale * v*v`` ulps."""
        a = abs(v)
        a = clamp if a > clamp else a           # NaN passes
        hi = a * a
        lo = cuda.fma(a, a, -hi)
        return math.exp(-(scale * hi)) * (one - scale * lo)

    @device
    def normal_pdf(v):
        return exp_neg_square(v, half, half_gauss_max) * inv_sqrt_2pi

    @device
    def gelu(v):
        return v * normal_cdf(v)

    @device
    def piecewise_linear(v, lo, hi):
        return zero if v <= lo else (one if v >= hi else (v - lo) * (one / (hi - lo)))

    @device
    def gaussian(v):
        return exp_neg_square(v, one, gauss_max)

    @device
    def step(v):
        return one if v >= zero else zero       # NaN -> 0, as in the reference

    # ------------------------------------------------------------------ dy * f'(z) from y
    # (the fused dense backward never stores z; see kernels/dense.py FROM_OUTPUT)
    @device
    def relu_grad_from_output(d, y):
        return d if y > zero else zero          # y > 0 exactly where z > 0

    @device
    def leaky_relu_grad_from_output(d, y, alpha):
        return d if y > zero else alpha * d     # (alpha >= 0)

    @device
    def elu_grad_from_output(d, y, alpha):
        return d if y > zero else d * (y + alpha)

    @device
    def sigmoid_grad_from_output(d, y, beta):
        return d * beta * y * (one - y)

    @device
    def tanh_grad_from_output(d, y):
        return d * (one - y * y)

    @device
    def softplus_grad_from_output(d, y):
        return -d * math.expm1(-y)

    @device
    def piecewise_linear_grad_from_output(d, y, lo, hi):
        return d * (one / (hi - lo)) if (y > zero and y < one) else zero

    # ------------------------------------------------------------------ dispatch on codes
    @device
    def forward(code, v, p0, p1):
        """``f(v)`` for the activation ``code`` (any other code: identity)."""
        if code == _RELU:
            return relu(v)
        if code == _LEAKY_RELU:
            return leaky_relu(v, p0)
        if code == _ELU:
            return elu(v, p0)
        if code == _SIGMOID:
            return sigmoid(v, p0)
        if code == _TANH:
            return math.tanh(v)
        if code == _SOFTPLUS:
            return softplus(v)
        if code == _GELU:
            return gelu(v)
        if code == _PIECEWISE_LINEAR:
            return piecewise_linear(v, p0, p1)
        if code == _GAUSSIAN:
            return gaussian(v)
        if code == _STEP:
            return step(v)
        return v

    @device
    def backward(code, d, v, y, p0, p1):
        """``d * f'(v)`` given the input ``v`` and the output ``y = f(v)``; the kinks are
        tested on ``v``, as in the CPU kernels (relu/leaky_relu: the formula from ``y``
        applied to ``v``, since ``y > 0`` exactly where ``v > 0``)."""
        if code == _RELU:
            return relu_grad_from_output(d, v)
        if code == _LEAKY_RELU:
            return leaky_relu_grad_from_output(d, v, p0)
        if code == _ELU:
            return d if v > zero else d * (y + p0)
        if code == _SIGMOID:
            return sigmoid_grad_from_output(d, y, p0)
        if code == _TANH:
            return tanh_grad_from_output(d, y)
        if code == _SOFTPLUS:
            return d * sigmoid(v, one)
        if code == _GELU:
            return d * (normal_cdf(v) + v * normal_pdf(v))
        if code == _PIECEWISE_LINEAR:
            return d * (one / (p1 - p0)) if (v > p0 and v < p1) else zero
        if code == _GAUSSIAN:
            return minus_two * d * v * y
        if code == _STEP:
            return zero
        return d

    @device
    def backward_from_output(code, d, y, p0, p1):
        """``d * f'(z)`` from ``y = f(z)`` alone, for the codes of ``dense.FROM_OUTPUT``
        (the others, step included, give 0, as in the CPU ``act_bias_grad``)."""
        if code == _IDENTITY:
            return d
        if code == _RELU:
            return relu_grad_from_output(d, y)
        if code == _LEAKY_RELU:
            return leaky_relu_grad_from_output(d, y, p0)
        if code == _ELU:
            return elu_grad_from_output(d, y, p0)
        if code == _SIGMOID:
            return sigmoid_grad_from_output(d, y, p0)
        if code == _TANH:
            return tanh_grad_from_output(d, y)
        if code == _SOFTPLUS:
            return softplus_grad_from_output(d, y)
        if code == _PIECEWISE_LINEAR:
            return piecewise_linear_grad_from_output(d, y, p0, p1)
        return zero

    return SimpleNamespace(**{name: fn for name, fn in locals().items()
                              if isinstance(fn, type(forward))})


# --------------------------------------------------------------------------- kernels
# Codes whose derivative reads the input x, resp. the output y (see ``backward``).
_USES_X = (_RELU, _LEAKY_RELU, _ELU, _SOFTPLUS, _GELU, _PIECEWISE_LINEAR, _GAUSSIAN)
_USES_Y = (_ELU, _SIGMOID, _TANH, _GAUSSIAN)


def _make_kernels(dtype):
    dev = device_functions(dtype)
    act_forward, act_backward = dev.forward, dev.backward
    zero, minus_inf = dtype(0), dtype(-math.inf)

    @cuda.jit(device=True, inline="always")
    def block_reduce(shared, v, take_max):
        """Sum (or maximum) of ``v`` over the block (2**k threads), for every thread."""
        tid = cuda.threadIdx.x
        shared[tid] = v
        cuda.syncthreads()
        s = cuda.blockDim.x // 2
        while s > 0:
            if tid < s:
                other = shared[tid + s]
                if take_max:
                    shared[tid] = other if other > shared[tid] else shared[tid]
                else:
                    shared[tid] += other
            cuda.syncthreads()
            s //= 2
        total = shared[0]
        cuda.syncthreads()                      # the next reduction overwrites shared
        return total

    def elementwise_forward(x, out, code, p0, p1):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            out[i] = act_forward(code, x[i], p0, p1)

    def elementwise_backward(dy, x, y, out, code, p0, p1):
        uses_x = code in _USES_X
        uses_y = code in _USES_Y
        uses_dy = code != _STEP
        for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
            d = dy[i] if uses_dy else zero
            v = x[i] if uses_x else zero
            w = y[i] if uses_y else zero
            out[i] = act_backward(code, d, v, w, p0, p1)

    def softmax_forward_rows(x, out):
        n_rows, n_cols = x.shape
        shared = cuda.shared.array(THREADS, dtype)
        tid = cuda.threadIdx.x
        step = cuda.blockDim.x
        for r in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
            m = minus_inf
            for j in range(tid, n_cols, step):
                v = x[r, j]
                m = v if v > m else m           # ignores NaN; the sum below is NaN then
            m = block_reduce(shared, m, True)
            s = zero
            for j in range(tid, n_cols, step):
                e = math.exp(x[r, j] - m)
                out[r, j] = e
                s += e
            s = block_reduce(shared, s, False)
            for j in range(tid, n_cols, step):
                out[r, j] = out[r, j] / s

    def softmax_backward_rows(dy, y, out):
        n_rows, n_cols = y.shape
        shared = cuda.shared.array(THREADS, dtype)
        tid = cuda.threadIdx.x
        step = cuda.blockDim.x
        for r in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
            dot = zero
            for j in range(tid, n_cols, step):
                dot += dy[r, j] * y[r, j]
            dot = block_reduce(shared, dot, False)
            for j in range(tid, n_cols, step):
                out[r, j] = y[r, j] * (dy[r, j] - dot)

    kernels = {}
    for fn in (elementwise_forward, elementwise_backward, softmax_forward_rows,
               softmax_backward_rows):
        base = fn.__name__
        fn.__name__ = fn.__qualname__ = f"{base}_{dtype}"
        kernels[base] = cuda.jit(fn)
    return SimpleNamespace(**kernels)


_KERNELS = {str(dt): _make_kernels(dt) for dt in (numba.float32, numba.float64)}

_SIGNATURES = {
    "elementwise_forward": "void({t}[::1], {t}[::1], int64, {t}, {t})",
    "elementwise_backward": "void({t}[::1], {t}[::1], {t}[::1], {t}[::1], int64, {t}, {t})",
    "softmax_forward_rows": "void({t}[:, ::1], {t}[:, ::1])",
    "softmax_backward_rows": "void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1])",
}
PTX_SIGNATURES = [
    (f"{kernel}_{dt}", getattr(_KERNELS[dt], kernel).py_func, sig)
    for kernel, template in _SIGNATURES.items()
    for dt, sig in zip(("float32", "float64"), signatures(template))
]


# --------------------------------------------------------------------------- launchers
def _forward(code, x, out, p0=0.0, p1=0.0):
    n = x.size
    if n:
        t = x.dtype.type
        _KERNELS[str(x.dtype)].elementwise_forward[grid_1d(n), THREADS](
            x.reshape(n), out.reshape(n), code, t(p0), t(p1))
    return out


def _backward(code, dy, x, y, out, p0=0.0, p1=0.0):
    n = dy.size
    if n:
        t = dy.dtype.type
        _KERNELS[str(dy.dtype)].elementwise_backward[grid_1d(n), THREADS](
            dy.reshape(n), x.reshape(n), y.reshape(n), out.reshape(n), code, t(p0), t(p1))
    return out


def _row_launch(n_rows, n_cols):
    """(blocks, threads) of the row kernels: a power of two, 32 to THREADS, threads."""
    return min(n_rows, MAX_BLOCKS), min(THREADS, max(32, 1 << (n_cols - 1).bit_length()))


def identity_forward(x, out):
    """``out = x``."""
    return _forward(_IDENTITY, x, out)


def identity_backward(dy, x, y, out):
    """``out = dy``."""
    return _backward(_IDENTITY, dy, x, y, out)


def sigmoid_forward(x, out, beta):
    """``out = 1 / (1 + exp(-beta * x))`` (via ``exp(-|beta x|)``: never overflows)."""
    return _forward(_SIGMOID, x, out, beta)


def sigmoid_backward(dy, x, y, out, beta):
    """``out = dy * beta * y * (1 - y)``."""
    return _backward(_SIGMOID, dy, x, y, out, beta)


def tanh_forward(x, out):
    """``out = tanh(x)``."""
    return _forward(_TANH, x, out)


def tanh_backward(dy, x, y, out):
    """``out = dy * (1 - y**2)``."""
    return _backward(_TANH, dy, x, y, out)


def relu_forward(x, out):
    """``out = max(x, 0)`` (NaN stays NaN)."""
    return _forward(_RELU, x, out)


def relu_backward(dy, x, y, out):
    """``out = dy * (x > 0)``."""
    return _backward(_RELU, dy, x, y, out)


def leaky_relu_forward(x, out, alpha):
    """``out = x`` for ``x > 0`` else ``alpha * x``."""
    return _forward(_LEAKY_RELU, x, out, alpha)


def leaky_relu_backward(dy, x, y, out, alpha):
    """``out = dy`` for ``x > 0`` else ``alpha * dy``."""
    return _backward(_LEAKY_RELU, dy, x, y, out, alpha)


def elu_forward(x, out, alpha):
    """``out = x`` for ``x > 0`` else ``alpha * expm1(x)``."""
    return _forward(_ELU, x, out, alpha)


def elu_backward(dy, x, y, out, alpha):
    """``out = dy`` for ``x > 0`` else ``dy * (y + alpha)``."""
    return _backward(_ELU, dy, x, y, out, alpha)


def softplus_forward(x, out):
    """``out = max(x, 0) + log1p(exp(-|x|))``."""
    return _forward(_SOFTPLUS, x, out)


def softplus_backward(dy, x, y, out):
    """``out = dy * sigmoid(x)``."""
    return _backward(_SOFTPLUS, dy, x, y, out)


def gelu_forward(x, out):
    """``out = x * Phi(x)``, ``Phi`` the standard normal cdf (exact GELU)."""
    return _forward(_GELU, x, out)


def gelu_backward(dy, x, y, out):
    """``out = dy * (Phi(x) + x * phi(x))``, ``phi`` the standard normal density."""
    return _backward(_GELU, dy, x, y, out)


def piecewise_linear_forward(x, out, x_min, x_max):
    """``out = clip((x - x_min) / (x_max - x_min), 0, 1)``."""
    return _forward(_PIECEWISE_LINEAR, x, out, x_min, x_max)


def piecewise_linear_backward(dy, x, y, out, x_min, x_max):
    """``out = dy / (x_max - x_min)`` strictly inside ``(x_min, x_max)``, else 0."""
    return _backward(_PIECEWISE_LINEAR, dy, x, y, out, x_min, x_max)


def gaussian_forward(x, out):
    """``out = exp(-x**2)``."""
    return _forward(_GAUSSIAN, x, out)


def gaussian_backward(dy, x, y, out):
    """``out = -2 * dy * x * y``."""
    return _backward(_GAUSSIAN, dy, x, y, out)


def step_forward(x, out):
    """``out = 1`` for ``x >= 0`` else 0 (NaN maps to 0)."""
    return _forward(_STEP, x, out)


def step_backward(dy, x, y, out):
    """``out = 0``: the step is forward-only (see the CPU kernel)."""
    return _backward(_STEP, dy, x, y, out)


def softmax_forward(x, out):
    """Row-wise ``out[i] = exp(x[i] - max x[i]) / sum_j exp(x[i, j] - max x[i])``;
    x, out : (rows, cols).  A NaN makes its row NaN."""
    n_rows, n_cols = x.shape
    if n_rows and n_cols:
        blocks, threads = _row_launch(n_rows, n_cols)
        _KERNELS[str(x.dtype)].softmax_forward_rows[blocks, threads](x, out)
    return out


def softmax_backward(dy, x, y, out):
    """Row-wise ``out = y * (dy - sum_j(dy * y))``."""
    n_rows, n_cols = y.shape
    if n_rows and n_cols:
        blocks, threads = _row_launch(n_rows, n_cols)
        _KERNELS[str(y.dtype)].softmax_backward_rows[blocks, threads](dy, y, out)
    return out
