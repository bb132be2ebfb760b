"""Fused loss kernels on the GPU: one launch writes the gradient and partial loss sums.

Signature of the family (as the CPU kernels in :mod:`fastnn.kernels.losses`)::

    loss = name(prediction, target, grad)

Each loss is one kernel over a grid-stride loop (rows for the softmax losses, one thread
per row; flat elements for BCE and MSE) that writes ``grad`` and adds the loss terms of
its rows/elements in a per-thread register.  (A thread per row suits the class counts of
classification, tens to hundreds; thousands of classes would want a warp per row.)  The
block then adds its ``THREADS`` registers pairwise in shared memory (:func:`block_sum`)
and writes one partial sum per block; a second launch of a single block adds the partials
the same way (:func:`finish_sum`, skipped when the grid is one block), and only that
scalar is copied to the host, where it is divided by the count in float64.

Numerics.  Per-element work is in the array dtype with the CPU kernels' overflow-free
forms (log-sum-exp shifted by the row maximum, ``exp(-|z|)`` for the sigmoid); a NaN input
makes the loss NaN.  Unlike the CPU kernels, which accumulate the loss in float64, the sums
here stay in the array dtype (float32 kernels contain no double-precision instruction):
up to 512K terms each thread adds one term, at most 32 serial additions follow in the
final launch and the rest is pairwise, so the rounding error stays at tens of ulps where
a serial float32 sum's would grow with ``n``.
The order of the additions depends only on the shape: the loss is the same run to run.
"""
import math

import numba
from numba import cuda

from ._common import THREADS, grid_1d, jit_family, ptx_entries

assert THREADS & (THREADS - 1) == 0, "block_sum needs a power-of-two block"


# inline="always" inlines the Numba IR into each kernel before typing: the device
# function is then never compiled on its own, which (numba-cuda 0.30) would query the
# current GPU's compute capability and so break cuda.compile_ptx on machines without one.
@cuda.jit(device=True, inline="always")
def block_sum(buffer, tid, value):
    """Sum of ``value`` over the threads of a one-dimensional block of ``THREADS``
    threads, through the shared ``buffer`` of ``THREADS`` elements; every thread of the
    block must call it.  The result is valid in thread 0."""
    buffer[tid] = value
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if tid < step:
            buffer[tid] += buffer[tid + step]
        cuda.syncthreads()
        step //= 2
    return buffer[0]


@cuda.jit(device=True, inline="always")
def store_block_sum(buffer, partials, tid, block, value):
    """:func:`block_sum` of ``value``, written by thread 0 to ``partials[block]``.
    (``tid``/``block`` are arguments: the simulator gives device functions no ``cuda``.)"""
    total = block_sum(buffer, tid, value)
    if tid == 0:
        partials[block] = total


def _make_kernels(dtype):
    """The loss kernels and the final reduction for one Numba float type: its shared
    buffers and constants must be typed at compile time."""
    zero = dtype(0)
    one = dtype(1)

    def softmax_xent_kernel(logits, labels, grad, inv_n, partials):
        n_rows, n_cols = logits.shape
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for i in range(cuda.grid(1), n_rows, cuda.gridsize(1)):
            m = logits[i, 0]
            for j in range(1, n_cols):
                v = logits[i, j]
                if v > m:                   # a NaN never wins; it still makes s NaN
                    m = v
            s = zero
            for j in range(n_cols):
                e = math.exp(logits[i, j] - m)
                grad[i, j] = e
                s += e
            scale = inv_n / s
            for j in range(n_cols):
                grad[i, j] *= scale
            label = labels[i]
            grad[i, label] -= inv_n
            total += (m - logits[i, label]) + math.log(s)
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    def softmax_xent_soft_kernel(logits, targets, grad, inv_n, partials):
        n_rows, n_cols = logits.shape
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for i in range(cuda.grid(1), n_rows, cuda.gridsize(1)):
            m = logits[i, 0]
            for j in range(1, n_cols):
                v = logits[i, j]
                if v > m:
                    m = v
            # row loss = sum_j t_j (m - z_j) + (sum_j t_j) log s: no log p_j is formed
            s = zero
            t_sum = zero
            row = zero
            for j in range(n_cols):
                d = logits[i, j] - m
                e = math.exp(d)
                grad[i, j] = e
                s += e
                t = targets[i, j]
                t_sum += t
                if t != zero:               # 0 * -inf would be NaN
                    row -= t * d
            scale = t_sum * inv_n / s
            for j in range(n_cols):
                grad[i, j] = grad[i, j] * scale - targets[i, j] * inv_n
            total += row + t_sum * math.log(s)
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    def bce_logits_kernel(logits, targets, grad, inv_n, partials):
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for k in range(cuda.grid(1), logits.size, cuda.gridsize(1)):
            z = logits[k]
            t = targets[k]
            e = math.exp(-abs(z))
            p = (one if z >= zero else e) / (one + e)
            grad[k] = (p - t) * inv_n
            total += (z if z > zero else zero) - z * t + math.log1p(e)
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    def mse_kernel(pred, targets, grad, two_over_n, partials):
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for k in range(cuda.grid(1), pred.size, cuda.gridsize(1)):
            d = pred[k] - targets[k]
            grad[k] = two_over_n * d
            total += d * d
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    def sum_partials_kernel(partials):
        # One block: each thread adds a strided slice, then the block tree; every read
        # happens before block_sum's first barrier, so partials[0] can take the result.
        buffer = cuda.shared.array(THREADS, dtype)
        tid = cuda.threadIdx.x
        total = zero
        for k in range(tid, partials.size, THREADS):
            total += partials[k]
        total = block_sum(buffer, tid, total)
        if tid == 0:
            partials[0] = total

    return jit_family((softmax_xent_kernel, softmax_xent_soft_kernel, bce_logits_kernel,
                       mse_kernel, sum_partials_kernel), dtype)


#: numpy dtype name -> {name: kernel}.
_KERNELS = {str(dt): _make_kernels(dt) for dt in (numba.float32, numba.float64)}

_SIGNATURES = {
    "softmax_xent": "void({t}[:, ::1], int64[::1], {t}[:, ::1], {t}, {t}[::1])",
    "softmax_xent_soft": "void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}, {t}[::1])",
    "bce_logits": "void({t}[::1], {t}[::1], {t}[::1], {t}, {t}[::1])",
    "mse": "void({t}[::1], {t}[::1], {t}[::1], {t}, {t}[::1])",
    "sum_partials": "void({t}[::1])",
}
PTX_SIGNATURES = ptx_entries(_KERNELS, _SIGNATURES)


def finish_sum(partials):
    """Add the per-block ``partials`` (a 1-D device array, modified) on the device and
    return the sum as a Python float (one scalar copied to the host)."""
    if partials.size > 1:
        _KERNELS[str(partials.dtype)]["sum_partials"][1, THREADS](partials)
    return float(partials[:1].copy_to_host()[0])


def _mean_loss(name, count, scalar, *arrays):
    """Launch loss kernel ``name`` (one thread per row or element, ``count`` of them)
    on ``arrays`` and ``scalar`` and return the summed loss."""
    blocks = grid_1d(count)
    partials = cuda.device_array(blocks, dtype=arrays[0].dtype)
    _KERNELS[str(arrays[0].dtype)][name][blocks, THREADS](*arrays, scalar, partials)
    return finish_sum(partials)


def softmax_xent(logits, labels, grad):
    """Softmax cross-entropy with integer class labels.

    ``loss = mean_i [logsumexp(z_i) - z_i[labels_i]]`` and
    ``grad = (softmax(z) - onehot(labels)) / batch``.

    logits, grad : (batch, classes); labels : (batch,) int64 in ``[0, classes)``.
    """
    n_rows = logits.shape[0]
    assert grad.shape == logits.shape and labels.shape == (n_rows,)
    if n_rows == 0 or logits.shape[1] == 0:
        return math.nan
    inv_n = logits.dtype.type(1) / logits.dtype.type(n_rows)
    return _mean_loss("softmax_xent", n_rows, inv_n, logits, labels, grad) / n_rows


def softmax_xent_soft(logits, targets, grad):
    """Softmax cross-entropy with one-hot or soft (probability) targets.

    ``loss = mean_i [-sum_j t_ij log softmax(z_i)_j]`` and
    ``grad = (softmax(z) * sum_j t_ij - t) / batch``.
    logits, targets, grad : (batch, classes).
    """
    n_rows = logits.shape[0]
    assert grad.shape == logits.shape == targets.shape
    if n_rows == 0 or logits.shape[1] == 0:
        return math.nan
    inv_n = logits.dtype.type(1) / logits.dtype.type(n_rows)
    return _mean_loss("softmax_xent_soft", n_rows, inv_n, logits, targets, grad) / n_rows


def _flat(array):
    return array.reshape(array.size)


def bce_logits(logits, targets, grad):
    """Binary cross-entropy on logits (sigmoid fused in), stable for any logit.

    ``loss = mean(max(z, 0) - z t + log1p(exp(-|z|)))`` and
    ``grad = (sigmoid(z) - t) / n`` with ``n = logits.size``.
    logits, targets, grad : (batch, outputs); targets in [0, 1].
    """
    n = logits.size
    assert grad.shape == logits.shape == targets.shape
    if n == 0:
        return math.nan
    inv_n = logits.dtype.type(1) / logits.dtype.type(n)
    return _mean_loss("bce_logits", n, inv_n, _flat(logits), _flat(targets),
                      _flat(grad)) / n


def mse(pred, targets, grad):
    """Mean squared error over all elements.

    ``loss = mean((p - t)**2)`` and ``grad = 2 (p - t) / n`` with ``n = pred.size``.
    pred, targets, grad : (batch, outputs).
    """
    n = pred.size
    assert grad.shape == pred.shape == targets.shape
    if n == 0:
        return math.nan
    two_over_n = pred.dtype.type(2) / pred.dtype.type(n)
    return _mean_loss("mse", n, two_over_n, _flat(pred), _flat(targets), _flat(grad)) / n
