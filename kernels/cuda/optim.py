"""Optimiser updates and gradient clipping on the GPU, in place on flat (1-D) arrays.

The updates are element-wise grid-stride loops, single passes like their CPU twins in
:mod:`fastnn.kernels.optim`.  Their scalars (learning rate, momentum, ...) are converted
to the array dtype on the host, so float32 kernels compute in float32 only.

``sum_of_squares`` (for the global gradient norm) is a two-stage reduction: each block
sums the squares of its grid-stride elements and adds its threads' sums pairwise in
shared memory; the per-block partials are then added on the device by
:func:`.losses.finish_sum` and one scalar comes back to the host.  The sum is kept in the
array dtype (the CPU kernel accumulates in float64; the mostly pairwise order keeps
the error small, see :mod:`.losses`) and its order depends only on the size:
reproducible run to run.
"""
import numba
from numba import cuda

from ._common import THREADS, grid_1d, signatures
from .losses import block_sum, finish_sum


@cuda.jit
def _sgd_kernel(param, grad, lr, weight_decay):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[i] -= lr * (grad[i] + weight_decay * param[i])


@cuda.jit
def _sgd_momentum_kernel(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        v = momentum * velocity[i] + g
        velocity[i] = v
        if nesterov:
            param[i] -= lr * (g + momentum * v)
        else:
            param[i] -= lr * v


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
       for sig in signatures("void({t}[::1], {t}[::1], {t}[::1], {t}, {t}, {t}, boolean)")]
    + [("scale_inplace", _scale_kernel.py_func, sig)
       for sig in signatures("void({t}[::1], {t})")]
    + [("clip_inplace", _clip_kernel.py_func, sig)
       for sig in signatures("void({t}[::1], {t}, {t})")]
    + [(f"sum_of_squares_{dt}", _SUM_OF_SQUARES[dt].py_func, sig)
       for dt, sig in zip(("float32", "float64"),
                          signatures("void({t}[::1], {t}[::1])"))]
)


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
    """
    assert grad.shape == param.shape == velocity.shape
    if param.size:
        as_type = param.dtype.type
        _sgd_momentum_kernel[grid_1d(param.size), THREADS](
            param, grad, velocity, as_type(lr), as_type(momentum), as_type(weight_decay),
            bool(nesterov))
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
