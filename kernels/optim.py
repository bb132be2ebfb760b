"""Optimiser updates and gradient clipping, in place on flat (1-D) parameter arrays.

Parameters of any shape are passed as flat views (``p.reshape(-1)`` of a C-contiguous
array), so one specialisation per dtype serves weights and biases alike.

Each kernel is a serial loop over a stretch of elements (``_name_span``) that the public
kernel runs directly for small arrays (a bias of 512 elements takes well under a
microsecond, less than waking Numba's thread pool) and in chunks on ``prange`` for large
ones.  All are single passes (NumPy's reference needs 3-6 passes and temporaries).
"""
import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel

# 'contract' lets LLVM fuse a*b + c into one FMA (rounding only; NaN/Inf unaffected).
_FLAGS = {"contract"}
# sum_of_squares also reorders its additions to vectorise them (rounding only).
_REDUCE_FLAGS = {"contract", "reassoc"}

#: Elements per parallel task.
CHUNK = 16384
#: These loops are memory-bound: they run serially while all their array operands
#: together span at most 512 KiB (half the 1 MiB L2; as for the activations, see
#: :data:`.activations.SERIAL_MAX_BYTES`): 64K float32 parameters for SGD, 43K with
#: momentum.  sgd_update at 64K float32 elements: 3.1 µs serial, 3.5 µs on two threads;
#: at 128K, 8.7 vs 5.1 µs (2-core Zen 5).
SERIAL_MAX_BYTES = 1 << 19


@kernel
def _smallest_normal(x):
    """The smallest positive normal number of ``x``'s dtype (float32 or float64), in that
    dtype (``np.finfo`` is not available in compiled code)."""
    if x.itemsize == 4:
        return x.dtype.type(1.1754943508222875e-38)
    return x.dtype.type(2.2250738585072014e-308)


@kernel(fastmath=_FLAGS)
def _sgd_span(param, grad, lr, wd):
    for i in range(param.size):
        param[i] -= lr * (grad[i] + wd * param[i])


@parallel_kernel
def sgd_update(param, grad, lr, weight_decay):
    """Plain SGD step: ``param -= lr * (grad + weight_decay * param)``."""
    lr_ = param.dtype.type(lr)
    wd = param.dtype.type(weight_decay)
    n = param.size
    if n * 2 * param.itemsize <= SERIAL_MAX_BYTES:
        _sgd_span(param, grad, lr_, wd)
    else:
        for c in prange((n + CHUNK - 1) // CHUNK):
            lo = c * CHUNK
            hi = min(lo + CHUNK, n)
            _sgd_span(param[lo:hi], grad[lo:hi], lr_, wd)
    return param


@kernel(fastmath=_FLAGS)
def _sgd_momentum_span(param, grad, velocity, lr, mu, wd, nesterov, tiny):
    # A velocity smaller than the smallest normal float is stored as zero: a unit whose
    # gradient stays zero (a dead ReLU) decays by ``mu`` each step into subnormal numbers,
    # and x86 CPUs compute with those ~100x slower (measured: 5-9% subnormal velocities
    # after 1,500 steps made the update 6x slower).  Its effect on the parameter,
    # ``lr * v``, is below any float's resolution of the parameter anyway.  NaN is kept.
    zero = param.dtype.type(0)
    if nesterov:
        for i in range(param.size):
            g = grad[i] + wd * param[i]
            v = mu * velocity[i] + g
            v = zero if abs(v) < tiny else v
            velocity[i] = v
            param[i] -= lr * (g + mu * v)
    else:
        for i in range(param.size):
            v = mu * velocity[i] + (grad[i] + wd * param[i])
            v = zero if abs(v) < tiny else v
            velocity[i] = v
            param[i] -= lr * v


@parallel_kernel
def sgd_momentum_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """SGD with (Nesterov) momentum, PyTorch's formulation::

        g = grad + weight_decay * param
        velocity = momentum * velocity + g
        param -= lr * (g + momentum * velocity  if nesterov else  velocity)

    except that a velocity below the smallest normal float is stored as zero (subnormal
    arithmetic is ~100x slower on x86; see ``_sgd_momentum_span``).
    """
    lr_ = param.dtype.type(lr)
    mu = param.dtype.type(momentum)
    wd = param.dtype.type(weight_decay)
    n = param.size
    tiny = _smallest_normal(param)
    if n * 3 * param.itemsize <= SERIAL_MAX_BYTES:
        _sgd_momentum_span(param, grad, velocity, lr_, mu, wd, nesterov, tiny)
    else:
        for c in prange((n + CHUNK - 1) // CHUNK):
            lo = c * CHUNK
            hi = min(lo + CHUNK, n)
            _sgd_momentum_span(param[lo:hi], grad[lo:hi], velocity[lo:hi], lr_, mu, wd,
                               nesterov, tiny)
    return param


@kernel(fastmath=_REDUCE_FLAGS)
def _sum_of_squares_span(x):
    total = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        total += v * v
    return total


@parallel_kernel
def sum_of_squares(x):
    """``sum(x**2)`` accumulated in float64 (for the global gradient norm)."""
    n = x.size
    if n * x.itemsize <= SERIAL_MAX_BYTES:
        return _sum_of_squares_span(x)
    # Fixed-size chunks summed in index order: the result (and so clip_norm's scale)
    # does not depend on the thread count, unlike a prange reduction.
    n_chunks = (n + CHUNK - 1) // CHUNK
    partial = np.empty(n_chunks, dtype=np.float64)
    for c in prange(n_chunks):
        lo = c * CHUNK
        hi = min(lo + CHUNK, n)
        partial[c] = _sum_of_squares_span(x[lo:hi])
    total = 0.0
    for c in range(n_chunks):
        total += partial[c]
    return total


@kernel
def _scale_span(x, f):
    for i in range(x.size):
        x[i] *= f


@parallel_kernel
def scale_inplace(x, factor):
    """``x *= factor`` (gradient clipping by norm)."""
    f = x.dtype.type(factor)
    n = x.size
    if n * x.itemsize <= SERIAL_MAX_BYTES:
        _scale_span(x, f)
    else:
        for c in prange((n + CHUNK - 1) // CHUNK):
            lo = c * CHUNK
            hi = min(lo + CHUNK, n)
            _scale_span(x[lo:hi], f)
    return x


@kernel
def _clip_span(x, lo_, hi_):
    for i in range(x.size):
        v = x[i]
        x[i] = hi_ if v > hi_ else (lo_ if v < lo_ else v)   # NaN stays NaN


@parallel_kernel
def clip_inplace(x, limit):
    """``x = clip(x, -limit, limit)`` (gradient clipping by value); NaN stays NaN."""
    hi_ = x.dtype.type(limit)
    lo_ = -hi_
    n = x.size
    if n * x.itemsize <= SERIAL_MAX_BYTES:
        _clip_span(x, lo_, hi_)
    else:
        for c in prange((n + CHUNK - 1) // CHUNK):
            lo = c * CHUNK
            hi = min(lo + CHUNK, n)
            _clip_span(x[lo:hi], lo_, hi_)
    return x
