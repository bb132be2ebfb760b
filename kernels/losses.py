"""Fused loss kernels: one pass computes the mean loss and writes its gradient.

Signature of the family::

    loss = name(prediction, target, grad)

``prediction`` and ``grad`` are (batch, outputs) C-contiguous arrays of one dtype; ``grad``
receives d(loss)/d(prediction) and the mean loss is returned as a float.  The loss is a
mean (over the batch for cross-entropy, over all elements for BCE and MSE, as in PyTorch),
and the gradient is that of the mean.  Per-element work stays in the array dtype; only the
scalar loss total is accumulated in float64.
"""
import math

from numba import prange

from ._jit import parallel_kernel


@parallel_kernel
def softmax_xent(logits, labels, grad):
    """Softmax cross-entropy with integer class labels.

    ``loss = mean_i [logsumexp(z_i) - z_i[labels_i]]`` and
    ``grad = (softmax(z) - onehot(labels)) / batch``.

    logits, grad : (batch, classes); labels : (batch,) integers in ``[0, classes)``.
    """
    n_rows, n_cols = logits.shape
    inv_n = logits.dtype.type(1) / logits.dtype.type(n_rows)
    total = 0.0
    for i in prange(n_rows):
        m = logits[i, 0]
        for j in range(1, n_cols):
            m = max(m, logits[i, j])
        s = logits.dtype.type(0)
        for j in range(n_cols):
            e = math.exp(logits[i, j] - m)
            grad[i, j] = e
            s += e
        scale = inv_n / s
        for j in range(n_cols):
            grad[i, j] *= scale
        label = labels[i]
        grad[i, label] -= inv_n
        total += float(math.log(s) + m - logits[i, label])
    return total / n_rows


@parallel_kernel
def softmax_xent_soft(logits, targets, grad):
    """Softmax cross-entropy with one-hot or soft (probability) targets.

    ``loss = mean_i [-sum_j t_ij log softmax(z_i)_j]`` and
    ``grad = (softmax(z) * sum_j t_ij - t) / batch`` (= ``(p - t)/batch`` when rows of
    ``t`` sum to 1).  logits, targets, grad : (batch, classes).
    """
    n_rows, n_cols = logits.shape
    inv_n = logits.dtype.type(1) / logits.dtype.type(n_rows)
    total = 0.0
    for i in prange(n_rows):
        m = logits[i, 0]
        for j in range(1, n_cols):
            m = max(m, logits[i, j])
        s = logits.dtype.type(0)
        t_sum = logits.dtype.type(0)
        for j in range(n_cols):
            e = math.exp(logits[i, j] - m)
            grad[i, j] = e
            s += e
            t_sum += targets[i, j]
        log_s = math.log(s)
        scale = t_sum * inv_n / s
        row = 0.0
        for j in range(n_cols):
            t = targets[i, j]
            grad[i, j] = grad[i, j] * scale - t * inv_n
            if t != 0:  # 0 * log p is 0 even where p underflows to 0
                row += float(t * (log_s + m - logits[i, j]))
        total += row
    return total / n_rows


@parallel_kernel
def bce_logits(logits, targets, grad):
    """Binary cross-entropy on logits (sigmoid fused in), stable for any logit.

    ``loss = mean(max(z, 0) - z t + log1p(exp(-|z|)))`` and
    ``grad = (sigmoid(z) - t) / n`` with ``n = logits.size``.
    logits, targets, grad : (batch, outputs); targets in [0, 1].
    """
    n_rows, n_cols = logits.shape
    zero = logits.dtype.type(0)
    one = logits.dtype.type(1)
    inv_n = one / logits.dtype.type(logits.size)
    total = 0.0
    for i in prange(n_rows):
        row = 0.0
        for j in range(n_cols):
            z = logits[i, j]
            t = targets[i, j]
            e = math.exp(-abs(z))
            p = (one if z >= zero else e) / (one + e)
            grad[i, j] = (p - t) * inv_n
            row += float(max(z, zero) - z * t + math.log1p(e))
        total += row
    return total / logits.size


@parallel_kernel
def mse(pred, targets, grad):
    """Mean squared error over all elements.

    ``loss = mean((p - t)**2)`` and ``grad = 2 (p - t) / n`` with ``n = pred.size``.
    pred, targets, grad : (batch, outputs).
    """
    n_rows, n_cols = pred.shape
    two_over_n = pred.dtype.type(2) / pred.dtype.type(pred.size)
    total = 0.0
    for i in prange(n_rows):
        row = 0.0
        for j in range(n_cols):
            d = pred[i, j] - targets[i, j]
            grad[i, j] = two_over_n * d
            row += float(d * d)
        total += row
    return total / pred.size
