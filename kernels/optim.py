"""Optimiser updates and gradient clipping, in place on flat (1-D) parameter arrays.

Parameters of any shape are passed as flat views (``p.reshape(-1)`` of a C-contiguous
array), so one specialisation per dtype serves weights and biases alike.
"""
from numba import prange

from ._jit import parallel_kernel


@parallel_kernel
def sgd_update(param, grad, lr, weight_decay):
    """Plain SGD step: ``param -= lr * (grad + weight_decay * param)``."""
    lr_ = param.dtype.type(lr)
    wd = param.dtype.type(weight_decay)
    for i in prange(param.size):
        param[i] -= lr_ * (grad[i] + wd * param[i])
    return param


@parallel_kernel
def sgd_momentum_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """SGD with (Nesterov) momentum, PyTorch's formulation::

        g = grad + weight_decay * param
        velocity = momentum * velocity + g
        param -= lr * (g + momentum * velocity  if nesterov else  velocity)
    """
    lr_ = param.dtype.type(lr)
    mu = param.dtype.type(momentum)
    wd = param.dtype.type(weight_decay)
    for i in prange(param.size):
        g = grad[i] + wd * param[i]
        v = mu * velocity[i] + g
        velocity[i] = v
        param[i] -= lr_ * (g + mu * v if nesterov else v)
    return param


@parallel_kernel
def sum_of_squares(x):
    """``sum(x**2)`` accumulated in float64 (for the global gradient norm)."""
    total = 0.0
    for i in prange(x.size):
        total += float(x[i]) * float(x[i])
    return total


@parallel_kernel
def scale_inplace(x, factor):
    """``x *= factor`` (gradient clipping by norm)."""
    f = x.dtype.type(factor)
    for i in prange(x.size):
        x[i] *= f
    return x


@parallel_kernel
def clip_inplace(x, limit):
    """``x = clip(x, -limit, limit)`` (gradient clipping by value); NaN stays NaN."""
    hi = x.dtype.type(limit)
    lo = -hi
    for i in prange(x.size):
        v = x[i]
        if v > hi:
            x[i] = hi
        elif v < lo:
            x[i] = lo
    return x
