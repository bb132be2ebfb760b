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
scalar is copied to the host.  Each thread adds ``share_i * loss_i``: ``share`` is
``1/count`` for the plain mean, or each row's share of a class/sample-weighted loss, the
same kernel body built for either (``*_with(share_at)``).

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


# How a kernel reads a row's share of the loss (and, for BCE, an output's positive
# weight): one value for all (a plain mean; no pos_weight) or one per row (class/sample
# weights).  The kernel factories below are called with each, so one body serves the
# mean and its weighted twin.
@cuda.jit(device=True, inline="always")
def _same_for_all(value, i):
    return value


@cuda.jit(device=True, inline="always")
def _one_per_index(values, i):
    return values[i]


@cuda.jit(device=True, inline="always")
def _row_max(z, i):
    """The largest element of row ``i`` of ``z``; a NaN never wins (it still makes the
    row's sum of exponentials NaN)."""
    m = z[i, 0]
    for j in range(1, z.shape[1]):
        v = z[i, j]
        if v > m:
            m = v
    return m


def _make_kernels(dtype):
    """The loss kernels and the final reduction for one Numba float type: its shared
    buffers and constants must be typed at compile time.  Each loss kernel adds
    ``share_i * loss_i`` over its rows/elements, so the host has nothing left to divide."""
    zero = dtype(0)
    one = dtype(1)

    def softmax_xent_with(share_at):
        def kernel(logits, labels, grad, share, partials):
            n_rows, n_cols = logits.shape
            buffer = cuda.shared.array(THREADS, dtype)
            total = zero
            for i in range(cuda.grid(1), n_rows, cuda.gridsize(1)):
                r = share_at(share, i)
                m = _row_max(logits, i)
                s = zero
                for j in range(n_cols):
                    e = math.exp(logits[i, j] - m)
                    grad[i, j] = e
                    s += e
                scale = r / s
                for j in range(n_cols):
                    grad[i, j] *= scale
                label = labels[i]
                grad[i, label] -= r
                total += r * ((m - logits[i, label]) + math.log(s))
            store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)
        return kernel

    def softmax_xent_soft_with(share_at):
        def kernel(logits, targets, grad, share, partials):
            n_rows, n_cols = logits.shape
            buffer = cuda.shared.array(THREADS, dtype)
            total = zero
            for i in range(cuda.grid(1), n_rows, cuda.gridsize(1)):
                r = share_at(share, i)
                m = _row_max(logits, i)
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
                scale = t_sum * r / s
                for j in range(n_cols):
                    grad[i, j] = grad[i, j] * scale - targets[i, j] * r
                total += r * (row + t_sum * math.log(s))
            store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)
        return kernel

    def bce_logits_with(share_at, pos_weight_at):
        # PyTorch's pos_weight: loss = pw t softplus(-z) + (1 - t) softplus(z)
        def kernel(logits, targets, pos_weight, share, grad, partials):
            n_cols = logits.shape[1]
            buffer = cuda.shared.array(THREADS, dtype)
            total = zero
            for k in range(cuda.grid(1), logits.size, cuda.gridsize(1)):
                i = k // n_cols
                j = k - i * n_cols
                z = logits[i, j]
                t = targets[i, j]
                r = share_at(share, i)
                pt = pos_weight_at(pos_weight, j) * t
                e = math.exp(-abs(z))
                p = (one if z >= zero else e) / (one + e)
                softplus = (z if z > zero else zero) + math.log1p(e)
                grad[i, j] = ((pt + one - t) * p - pt) * r
                total += r * (pt * (softplus - z) + (one - t) * softplus)
            store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)
        return kernel

    def mse_with(share_at):
        def kernel(pred, targets, share, grad, partials):
            n_cols = pred.shape[1]
            buffer = cuda.shared.array(THREADS, dtype)
            total = zero
            for k in range(cuda.grid(1), pred.size, cuda.gridsize(1)):
                i = k // n_cols
                j = k - i * n_cols
                r = share_at(share, i)
                d = pred[i, j] - targets[i, j]
                grad[i, j] = (r + r) * d
                total += r * d * d
            store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)
        return kernel

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

    kernels = {"softmax_xent": softmax_xent_with(_same_for_all),
               "softmax_xent_weighted": softmax_xent_with(_one_per_index),
               "softmax_xent_soft": softmax_xent_soft_with(_same_for_all),
               "softmax_xent_soft_weighted": softmax_xent_soft_with(_one_per_index),
               "bce_logits": bce_logits_with(_same_for_all, _same_for_all),
               "bce_logits_weighted": bce_logits_with(_one_per_index, _one_per_index),
               "mse": mse_with(_same_for_all),
               "mse_weighted": mse_with(_one_per_index),
               "sum_partials": sum_partials_kernel}
    for name, fn in kernels.items():
        fn.__name__ = f"{name}_kernel"
    return jit_family(kernels.values(), dtype)


#: numpy dtype name -> {name: kernel}.
_KERNELS = {str(dt): _make_kernels(dt) for dt in (numba.float32, numba.float64)}

_SIGNATURES = {
    "softmax_xent": "void({t}[:, ::1], int64[::1], {t}[:, ::1], {t}, {t}[::1])",
    "softmax_xent_weighted": "void({t}[:, ::1], int64[::1], {t}[:, ::1], {t}[::1], {t}[::1])",
    "softmax_xent_soft": "void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}, {t}[::1])",
    "softmax_xent_soft_weighted":
        "void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}[::1], {t}[::1])",
    "bce_logits": "void({t}[:, ::1], {t}[:, ::1], {t}, {t}, {t}[:, ::1], {t}[::1])",
    "bce_logits_weighted":
        "void({t}[:, ::1], {t}[:, ::1], {t}[::1], {t}[::1], {t}[:, ::1], {t}[::1])",
    "mse": "void({t}[:, ::1], {t}[:, ::1], {t}, {t}[:, ::1], {t}[::1])",
    "mse_weighted": "void({t}[:, ::1], {t}[:, ::1], {t}[::1], {t}[:, ::1], {t}[::1])",
    "sum_partials": "void({t}[::1])",
}
PTX_SIGNATURES = ptx_entries(_KERNELS, _SIGNATURES)


def finish_sum(partials):
    """Add the per-block ``partials`` (a 1-D device array, modified) on the device and
    return the sum as a Python float (one scalar copied to the host)."""
    if partials.size > 1:
        _KERNELS[str(partials.dtype)]["sum_partials"][1, THREADS](partials)
    return float(partials[:1].copy_to_host()[0])


def _loss(name, count, *arrays):
    """Launch loss kernel ``name`` (one thread per row or element, ``count`` of them)
    on ``arrays`` (its arguments before the partial sums) and return the loss."""
    blocks = grid_1d(count)
    partials = cuda.device_array(blocks, dtype=arrays[0].dtype)
    _KERNELS[str(arrays[0].dtype)][name][blocks, THREADS](*arrays, partials)
    return finish_sum(partials)


def _inverse(array, count):
    """``1 / count`` in ``array``'s dtype."""
    return array.dtype.type(1) / array.dtype.type(count)


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
    return _loss("softmax_xent", n_rows, logits, labels, grad, _inverse(logits, n_rows))


def softmax_xent_weighted(logits, labels, row_weight, grad):
    """:func:`softmax_xent` with each row's share of the loss given (class/sample
    weights, normalisation included): ``loss = sum_i r_i loss_i``, ``grad_i = r_i
    (softmax(z_i) - onehot(labels_i))``.  row_weight : (batch,) device array."""
    assert grad.shape == logits.shape and row_weight.shape == labels.shape == logits.shape[:1]
    return _loss("softmax_xent_weighted", logits.shape[0], logits, labels, grad, row_weight)


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
    return _loss("softmax_xent_soft", n_rows, logits, targets, grad, _inverse(logits, n_rows))


def softmax_xent_soft_weighted(logits, targets, row_weight, grad):
    """:func:`softmax_xent_soft` with each row's share of the loss given:
    ``loss = sum_i r_i loss_i``, ``grad_i = r_i (softmax(z_i) sum_j t_ij - t_i)``."""
    assert grad.shape == logits.shape == targets.shape
    assert row_weight.shape == logits.shape[:1]
    return _loss("softmax_xent_soft_weighted", logits.shape[0], logits, targets, grad,
                 row_weight)


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
    one = logits.dtype.type(1)
    return _loss("bce_logits", n, logits, targets, one, _inverse(logits, n), grad)


def bce_logits_weighted(logits, targets, pos_weight, row_weight, grad):
    """Binary cross-entropy on logits with PyTorch's ``pos_weight`` (outputs,) and each
    row's share of the loss (batch,): ``loss = sum_i r_i sum_j [pw_j t_ij softplus(-z_ij)
    + (1 - t_ij) softplus(z_ij)]``."""
    assert grad.shape == logits.shape == targets.shape
    assert pos_weight.shape == logits.shape[1:] and row_weight.shape == logits.shape[:1]
    return _loss("bce_logits_weighted", logits.size, logits, targets, pos_weight, row_weight,
                 grad)


def mse(pred, targets, grad):
    """Mean squared error over all elements.

    ``loss = mean((p - t)**2)`` and ``grad = 2 (p - t) / n`` with ``n = pred.size``.
    pred, targets, grad : (batch, outputs).
    """
    n = pred.size
    assert grad.shape == pred.shape == targets.shape
    if n == 0:
        return math.nan
    return _loss("mse", n, pred, targets, _inverse(pred, n), grad)


def mse_weighted(pred, targets, row_weight, grad):
    """Squared error with each row's share of the loss: ``loss = sum_i r_i sum_j
    (p_ij - t_ij)**2``, ``grad_i = 2 r_i (p_i - t_i)``."""
    assert grad.shape == pred.shape == targets.shape and row_weight.shape == pred.shape[:1]
    return _loss("mse_weighted", pred.size, pred, targets, row_weight, grad)
