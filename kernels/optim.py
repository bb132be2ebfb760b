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


# --------------------------------------------------------------------------- Adam, AdamW
# Subnormal state: the moments of a parameter whose gradient stays zero decay by beta1
# and beta2 every step (by alpha / momentum in RMSprop) and would end up as subnormal
# numbers, which x86 CPUs compute with ~100x more slowly (see _sgd_momentum_span).  A
# moment below the smallest normal float is stored as zero instead.  The update changes by
# less than any float resolves: a flushed first moment m moves the parameter by
# lr * m / eps < 1e-3 * 1.2e-38 / 1e-8 for the defaults; a flushed second moment v
# changes the denominator by sqrt(v) < 1.1e-19 (float32), far below eps.  NaN is kept.

@kernel(fastmath=_FLAGS)
def _adam_span(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, beta1, beta2,
               one_minus_beta1, one_minus_beta2, eps, wd, param_decay, step_size,
               bias_correction2_sqrt, tiny):
    zero = param.dtype.type(0)
    if amsgrad:
        for i in range(param.size):
            p = param[i]
            g = grad[i] + wd * p
            m = beta1 * exp_avg[i] + one_minus_beta1 * g
            v = beta2 * exp_avg_sq[i] + one_minus_beta2 * (g * g)
            m = zero if abs(m) < tiny else m
            v = zero if v < tiny else v
            exp_avg[i] = m
            exp_avg_sq[i] = v
            v_max = max_exp_avg_sq[i]
            v_max = v if not v <= v_max else v_max     # np.maximum: a NaN v is taken
            max_exp_avg_sq[i] = v_max
            denom = np.sqrt(v_max) / bias_correction2_sqrt + eps
            param[i] = param_decay * p - step_size * (m / denom)
    else:
        for i in range(param.size):
            p = param[i]
            g = grad[i] + wd * p
            m = beta1 * exp_avg[i] + one_minus_beta1 * g
            v = beta2 * exp_avg_sq[i] + one_minus_beta2 * (g * g)
            m = zero if abs(m) < tiny else m
            v = zero if v < tiny else v
            exp_avg[i] = m
            exp_avg_sq[i] = v
            denom = np.sqrt(v) / bias_correction2_sqrt + eps
            param[i] = param_decay * p - step_size * (m / denom)


@parallel_kernel
def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step_size, beta1, beta2,
                eps, weight_decay, param_decay, bias_correction2_sqrt):
    """One Adam / AdamW step in place, PyTorch's formulation (all arrays flat, one dtype)::

        g = grad + weight_decay * param                  (Adam's L2 term; 0 for AdamW)
        exp_avg    = beta1 * exp_avg    + (1 - beta1) * g
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g**2
        v = max(max_exp_avg_sq, exp_avg_sq) -> max_exp_avg_sq   (AMSGrad)  else exp_avg_sq
        param = param_decay * param - step_size * exp_avg / (sqrt(v) / bias_correction2_sqrt + eps)

    with, at step t (computed by the caller in float64, once per step)::

        step_size = lr / (1 - beta1**t),  bias_correction2_sqrt = sqrt(1 - beta2**t),
        param_decay = 1 - lr * weight_decay (AdamW's decoupled decay; 1 for Adam)

    ``max_exp_avg_sq`` is an empty array without AMSGrad.  Moments below the smallest
    normal float are stored as zero (see the comment above ``_adam_span``).  A NaN
    gradient makes the moments (and the running maximum) and the parameter NaN, as in
    PyTorch.
    """
    dt = param.dtype.type
    n = param.size
    amsgrad = max_exp_avg_sq.size != 0
    tiny = _smallest_normal(param)
    args = (dt(beta1), dt(beta2), dt(1.0 - beta1), dt(1.0 - beta2), dt(eps), dt(weight_decay),
            dt(param_decay), dt(step_size), dt(bias_correction2_sqrt), tiny)
    if n * (5 if amsgrad else 4) * param.itemsize <= SERIAL_MAX_BYTES:
        _adam_span(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, *args)
    else:
        for c in prange((n + CHUNK - 1) // CHUNK):
            lo = c * CHUNK
            hi = min(lo + CHUNK, n)
            _adam_span(param[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi],
                       max_exp_avg_sq[lo:hi] if amsgrad else max_exp_avg_sq, amsgrad, *args)
    return param


# --------------------------------------------------------------------------- RMSprop
@kernel(fastmath=_FLAGS)
def _rmsprop_span(param, grad, square_avg, grad_avg, momentum_buffer, centered, use_momentum,
                  lr, alpha, one_minus_alpha, eps, wd, mu, tiny):
    zero = param.dtype.type(0)
    for i in range(param.size):
        g = grad[i] + wd * param[i]
        sq = alpha * square_avg[i] + one_minus_alpha * (g * g)
        sq = zero if sq < tiny else sq
        square_avg[i] = sq
        if centered:
            ga = alpha * grad_avg[i] + one_minus_alpha * g
            ga = zero if abs(ga) < tiny else ga
            grad_avg[i] = ga
            var = sq - ga * ga
            # >= 0 in exact arithmetic; rounding can make it -1 ulp (then sqrt is NaN)
            var = zero if var < zero else var
            avg = np.sqrt(var) + eps
        else:
            avg = np.sqrt(sq) + eps
        if use_momentum:
            b = mu * momentum_buffer[i] + g / avg
            b = zero if abs(b) < tiny else b
            momentum_buffer[i] = b
            param[i] -= lr * b
        else:
            param[i] -= lr * (g / avg)


@parallel_kernel
def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                   weight_decay, momentum):
    """One RMSprop step in place, PyTorch's formulation (all arrays flat, one dtype)::

        g = grad + weight_decay * param
        square_avg = alpha * square_avg + (1 - alpha) * g**2
        centered:  grad_avg = alpha * grad_avg + (1 - alpha) * g
                   avg = sqrt(max(square_avg - grad_avg**2, 0)) + eps
        else:      avg = sqrt(square_avg) + eps
        momentum:  momentum_buffer = momentum * momentum_buffer + g / avg
                   param -= lr * momentum_buffer
        else:      param -= lr * g / avg

    ``grad_avg`` is an empty array unless centred, ``momentum_buffer`` an empty array
    unless ``momentum > 0``.  ``eps`` is added outside the square root, as in PyTorch.
    The ``max(., 0)`` only differs from PyTorch where rounding made the variance
    negative (PyTorch then gives NaN).  State below the smallest normal float is stored
    as zero (see the comment above ``_adam_span``).
    """
    dt = param.dtype.type
    n = param.size
    centered = grad_avg.size != 0
    use_momentum = momentum_buffer.size != 0
    tiny = _smallest_normal(param)
    args = (dt(lr), dt(alpha), dt(1.0 - alpha), dt(eps), dt(weight_decay), dt(momentum), tiny)
    n_arrays = 3 + (1 if centered else 0) + (1 if use_momentum else 0)
    if n * n_arrays * param.itemsize <= SERIAL_MAX_BYTES:
        _rmsprop_span(param, grad, square_avg, grad_avg, momentum_buffer, centered,
                      use_momentum, *args)
    else:
        for c in prange((n + CHUNK - 1) // CHUNK):
            lo = c * CHUNK
            hi = min(lo + CHUNK, n)
            _rmsprop_span(param[lo:hi], grad[lo:hi], square_avg[lo:hi],
                          grad_avg[lo:hi] if centered else grad_avg,
                          momentum_buffer[lo:hi] if use_momentum else momentum_buffer,
                          centered, use_momentum, *args)
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
