"""Optimiser updates and gradient clipping on the GPU, in place on flat (1-D) arrays.

The updates are element-wise grid-stride loops, single passes like their CPU twins in
:mod:`fastnn.kernels.optim`.  Their scalars (learning rate, momentum, ...) are converted
to the array dtype on the host, so float32 kernels compute in float32 only.  SGD with
momentum, Adam and RMSprop store state below the smallest normal float as zero, as the CPU
kernels do (the state of a unit whose gradient stays zero decays into subnormal numbers,
~100x slower on x86; flushing them here too keeps GPU and CPU state equal).

``sum_of_squares`` (for the global gradient norm) is a two-stage reduction: each block
sums the squares of its grid-stride elements and adds its threads' sums pairwise in
shared memory; the per-block partials are then added on the device by
:func:`.losses.finish_sum` and one scalar comes back to the host.  The sum is kept in the
array dtype (the CPU kernel accumulates in float64; the mostly pairwise order keeps
the error small, see :mod:`.losses`) and its order depends only on the size:
reproducible run to run.
"""
import math

import numba
import numpy as np
from numba import cuda

from ._common import THREADS, grid_1d, signatures
from .losses import block_sum, finish_sum


@cuda.jit
def _sgd_kernel(param, grad, lr, weight_decay):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[i] -= lr * (grad[i] + weight_decay * param[i])


@cuda.jit
def _sgd_momentum_kernel(param, grad, velocity, lr, momentum, weight_decay, nesterov, tiny):
    zero = tiny - tiny              # 0 of the array dtype (a literal would be float64)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        v = momentum * velocity[i] + g
        # below the smallest normal float: stored as zero, as on the CPU (NaN is kept)
        v = zero if abs(v) < tiny else v
        velocity[i] = v
        if nesterov:
            param[i] -= lr * (g + momentum * v)
        else:
            param[i] -= lr * v


@cuda.jit
def _adam_kernel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, beta1, beta2,
                 one_minus_beta1, one_minus_beta2, eps, weight_decay, param_decay, step_size,
                 bias_correction2_sqrt, tiny):
    zero = tiny - tiny              # 0 of the array dtype (a literal would be float64)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        p = param[i]
        g = grad[i] + weight_decay * p
        m = beta1 * exp_avg[i] + one_minus_beta1 * g
        v = beta2 * exp_avg_sq[i] + one_minus_beta2 * (g * g)
        # moments below the smallest normal float are stored as zero, as on the CPU
        m = zero if abs(m) < tiny else m
        v = zero if v < tiny else v
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            v_max = max_exp_avg_sq[i]
            v = v if not v <= v_max else v_max
            max_exp_avg_sq[i] = v
        denom = math.sqrt(v) / bias_correction2_sqrt + eps
        param[i] = param_decay * p - step_size * (m / denom)


@cuda.jit
def _rmsprop_kernel(param, grad, square_avg, grad_avg, momentum_buffer, centered,
                    use_momentum, lr, alpha, one_minus_alpha, eps, weight_decay, momentum,
                    tiny):
    zero = tiny - tiny
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        sq = alpha * square_avg[i] + one_minus_alpha * (g * g)
        sq = zero if sq < tiny else sq
        square_avg[i] = sq
        if centered:
            ga = alpha * grad_avg[i] + one_minus_alpha * g
            ga = zero if abs(ga) < tiny else ga
            grad_avg[i] = ga
            var = sq - ga * ga
            avg = math.sqrt(zero if var < zero else var) + eps
        else:
            avg = math.sqrt(sq) + eps
        if use_momentum:
            b = momentum * momentum_buffer[i] + g / avg
            b = zero if abs(b) < tiny else b
            momentum_buffer[i] = b
            param[i] -= lr * b
        else:
            param[i] -= lr * (g / avg)


@cuda.jit
def _scale_kernel(x, factor):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[i] *= factor


@cuda.jit
def _clip_kernel(x, low, high):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        x[i] = high if v > high else (low if v < low else v)    # NaN stays NaN


def _make_sum_of_squares_kernel(dtype):
    """Per-block sums of squares for one Numba float type (its shared buffer and zero)."""
    zero = dtype(0)

    def sum_of_squares_kernel(x, partials):
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = x[i]
            total += v * v
        total = block_sum(buffer, cuda.threadIdx.x, total)
        if cuda.threadIdx.x == 0:
            partials[cuda.blockIdx.x] = total

    sum_of_squares_kernel.__name__ = f"sum_of_squares_{dtype}"
    sum_of_squares_kernel.__qualname__ = sum_of_squares_kernel.__name__
    return cuda.jit(sum_of_squares_kernel)


#: numpy dtype name -> sum of squares kernel.
_SUM_OF_SQUARES = {str(dt): _make_sum_of_squares_kernel(dt)
                   for dt in (numba.float32, numba.float64)}

PTX_SIGNATURES = (
    [("sgd_update", _sgd_kernel.py_func, sig)
     for sig in signatures("void({t}[::1], {t}[::1], {t}, {t})")]
    + [("sgd_momentum_update", _sgd_momentum_kernel.py_func, sig)
       for sig in signatures("void({t}[::1], {t}[::1], {t}[::1], {t}, {t}, {t}, boolean, {t})")]
    + [("adam_update", _adam_kernel.py_func, sig)
       for sig in signatures("void({t}[::1], {t}[::1], {t}[::1], {t}[::1], {t}[::1], boolean, "
                             + ", ".join(["{t}"] * 10) + ")")]
    + [("rmsprop_update", _rmsprop_kernel.py_func, sig)
       for sig in signatures("void({t}[::1], {t}[::1], {t}[::1], {t}[::1], {t}[::1], boolean, "
                             "boolean, " + ", ".join(["{t}"] * 7) + ")")]
    + [("scale_inplace", _scale_kernel.py_func, sig)
       for sig in signatures("void({t}[::1], {t})")]
    + [("clip_inplace", _clip_kernel.py_func, sig)
       for sig in signatures("void({t}[::1], {t}, {t})")]
    + [(f"sum_of_squares_{dt}", _SUM_OF_SQUARES[dt].py_func, sig)
       for dt, sig in zip(("float32", "float64"),
                          signatures("void({t}[::1], {t}[::1])"))]
)


def _smallest_normal(dtype):
    return dtype.type(np.finfo(dtype).tiny)


def sgd_update(param, grad, lr, weight_decay):
    """Plain SGD step: ``param -= lr * (grad + weight_decay * param)``."""
    assert grad.shape == param.shape
    if param.size:
        as_type = param.dtype.type
        _sgd_kernel[grid_1d(param.size), THREADS](param, grad, as_type(lr),
                                                  as_type(weight_decay))
    return param


def sgd_momentum_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """SGD with (Nesterov) momentum, PyTorch's formulation::

        g = grad + weight_decay * param
        velocity = momentum * velocity + g
        param -= lr * (g + momentum * velocity  if nesterov else  velocity)

    except that a velocity below the smallest normal float (``|v| < finfo.tiny``) is
    stored as zero, as :func:`fastnn.kernels.optim.sgd_momentum_update` does; NaN is kept.
    """
    assert grad.shape == param.shape == velocity.shape
    if param.size:
        as_type = param.dtype.type
        _sgd_momentum_kernel[grid_1d(param.size), THREADS](
            param, grad, velocity, as_type(lr), as_type(momentum), as_type(weight_decay),
            bool(nesterov), _smallest_normal(param.dtype))
    return param


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step_size, beta1, beta2,
                eps, weight_decay, param_decay, bias_correction2_sqrt):
    """One Adam / AdamW step in place (``max_exp_avg_sq`` empty without AMSGrad); the
    formulas are those of the CPU kernel, :func:`fastnn.kernels.optim.adam_update`."""
    assert grad.shape == param.shape == exp_avg.shape == exp_avg_sq.shape
    amsgrad = max_exp_avg_sq.size != 0
    assert not amsgrad or max_exp_avg_sq.shape == param.shape
    if param.size:
        t = param.dtype.type
        _adam_kernel[grid_1d(param.size), THREADS](
            param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, t(beta1), t(beta2),
            t(1.0 - beta1), t(1.0 - beta2), t(eps), t(weight_decay), t(param_decay),
            t(step_size), t(bias_correction2_sqrt), _smallest_normal(param.dtype))
    return param


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                   weight_decay, momentum):
    """One RMSprop step in place (``grad_avg`` empty unless centred, ``momentum_buffer``
    empty without momentum); the formulas are those of the CPU kernel,
    :func:`fastnn.kernels.optim.rmsprop_update`."""
    assert grad.shape == param.shape == square_avg.shape
    centered, use_momentum = grad_avg.size != 0, momentum_buffer.size != 0
    if param.size:
        t = param.dtype.type
        _rmsprop_kernel[grid_1d(param.size), THREADS](
            param, grad, square_avg, grad_avg, momentum_buffer, centered, use_momentum,
            t(lr), t(alpha), t(1.0 - alpha), t(eps), t(weight_decay), t(momentum),
            _smallest_normal(param.dtype))
    return param


def sum_of_squares(x):
    """``sum(x**2)`` as a Python float (for the global gradient norm)."""
    if x.size == 0:
        return 0.0
    blocks = grid_1d(x.size)
    partials = cuda.device_array(blocks, dtype=x.dtype)
    _SUM_OF_SQUARES[str(x.dtype)][blocks, THREADS](x, partials)
    return finish_sum(partials)


def scale_inplace(x, factor):
    """``x *= factor`` (gradient clipping by norm)."""
    if x.size:
        _scale_kernel[grid_1d(x.size), THREADS](x, x.dtype.type(factor))
    return x


def clip_inplace(x, limit):
    """``x = clip(x, -limit, limit)`` (gradient clipping by value); NaN stays NaN."""
    if x.size:
        high = x.dtype.type(limit)
        _clip_kernel[grid_1d(x.size), THREADS](x, -high, high)
    return x
