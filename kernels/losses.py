"""Fused loss kernels: one pass computes the mean loss and writes its gradient.

Signature of the family::

    loss = name(prediction, target, grad)

``prediction`` and ``grad`` are (batch, outputs) C-contiguous arrays of one dtype; ``grad``
receives d(loss)/d(prediction) and the mean loss is returned as a float.  The loss is a
mean (over the batch for cross-entropy, over all elements for BCE and MSE, as in PyTorch),
and the gradient is that of the mean.  Per-element work stays in the array dtype; only the
loss sums are accumulated in float64.  A NaN prediction makes the loss NaN (and its row of
the gradient, for the softmax losses), so diverging training is seen.

Like the activations (see :mod:`.activations`), each kernel is a serial function over a
block of rows (or a flat stretch of elements) that the public kernel calls directly for
small problems and from ``prange`` for large ones; exp/log come from :mod:`.vmath` so the
loops over classes vectorise.  The partial sums of the blocks are added by Numba's
parallel reduction: the loss is reproducible run to run for a fixed thread count, and
differs from the serial sum only in rounding.
"""
import math

import numpy as np
from numba import prange

from . import vmath
from ._jit import kernel, parallel_kernel
from .simd_intrinsics import maxnum

# 'contract' (FMA) and 'reassoc' (vectorised sums): rounding only, never NaN/Inf behaviour.
_FLAGS = {"contract", "reassoc"}

#: Problems of at most this many elements (batch x outputs) run serially, larger ones in
#: tasks of CHUNK elements (whole rows for the softmax losses): exp/log make these kernels
#: compute-bound, as the transcendental activations (see
#: :data:`.activations.SERIAL_MAX_TRANSCENDENTAL`).
SERIAL_MAX = 8192
CHUNK = 4096
#: MSE is memory-bound: serial while its three arrays span at most 512 KiB.
SERIAL_MAX_BYTES_MSE = 1 << 19
CHUNK_MSE = 16384


# --------------------------------------------------------------------------- softmax + xent
@kernel(fastmath=_FLAGS)
def _softmax_xent_rows(logits, labels, grad, inv_n):
    """Rows of :func:`softmax_xent`: writes their gradient, returns their summed loss.

    Three passes over the block of rows, so that the exponentials vectorise even when a
    row is shorter than a vector (10 classes): (1) per row, ``grad = z - max z`` and
    ``loss += max z - z[label]``; (2) ``grad = exp(grad)`` over the whole block at once;
    (3) per row, ``s = sum(grad)``, ``grad *= 1/(n s)``, ``grad[label] -= 1/n`` and
    ``loss += log s``.
    """
    n_rows, n_cols = logits.shape
    zero = logits.dtype.type(0)
    total = 0.0
    for i in range(n_rows):
        z = logits[i]
        g = grad[i]
        m = z[0]
        for j in range(1, n_cols):
            m = maxnum(m, z[j])      # ignores NaN; a NaN logit still makes s NaN
        for j in range(n_cols):
            g[j] = z[j] - m
        total += np.float64(m) - np.float64(z[labels[i]])
    gf = grad.reshape(grad.size)
    for k in range(gf.size):
        gf[k] = vmath.exp(gf[k])
    # sum_i log s_i = log prod_i s_i: one libm log per few hundred rows instead of one
    # per row (1 <= s_i <= n_cols, so the float64 product is flushed long before it could
    # overflow; a NaN stays NaN).
    prod = 1.0
    for i in range(n_rows):
        g = grad[i]
        s = zero
        for j in range(n_cols):
            s += g[j]
        scale = inv_n / s
        for j in range(n_cols):
            g[j] *= scale
        g[labels[i]] -= inv_n
        prod *= np.float64(s)
        if prod > 1e280:
            total += math.log(prod)
            prod = 1.0
    return total + math.log(prod)


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
    if logits.size <= SERIAL_MAX:
        total += _softmax_xent_rows(logits, labels, grad, inv_n)
    else:
        step = max(1, CHUNK // n_cols)          # rows per task
        for t in prange((n_rows + step - 1) // step):
            lo = t * step
            hi = min(lo + step, n_rows)
            total += _softmax_xent_rows(logits[lo:hi], labels[lo:hi], grad[lo:hi], inv_n)
    return total / n_rows


@kernel(fastmath=_FLAGS)
def _softmax_xent_soft_rows(logits, targets, grad, inv_n):
    """Rows of :func:`softmax_xent_soft`: writes their gradient, returns their summed loss.

    The three passes of :func:`_softmax_xent_rows`, with the row loss split as
    ``sum_j t_j (max z - z_j)`` (pass 1) ``+ (sum_j t_j) log s`` (pass 3): no ``log p_j``
    is formed, so a ``p_j`` that underflows to 0 costs nothing.
    """
    n_rows, n_cols = logits.shape
    zero = logits.dtype.type(0)
    total = 0.0
    for i in range(n_rows):
        z = logits[i]
        t = targets[i]
        g = grad[i]
        m = z[0]
        for j in range(1, n_cols):
            m = maxnum(m, z[j])
        row = 0.0
        for j in range(n_cols):
            d = z[j] - m
            g[j] = d
            # a zero target adds nothing, even against a -inf logit (0 * -inf is NaN)
            row -= np.float64(t[j] * d) if t[j] != zero else 0.0
        total += row
    gf = grad.reshape(grad.size)
    for k in range(gf.size):
        gf[k] = vmath.exp(gf[k])
    for i in range(n_rows):
        t = targets[i]
        g = grad[i]
        s = zero
        t_sum = zero
        for j in range(n_cols):
            s += g[j]
            t_sum += t[j]
        scale = t_sum * inv_n / s
        for j in range(n_cols):
            g[j] = g[j] * scale - t[j] * inv_n
        total += np.float64(t_sum) * np.float64(vmath.log(s))
    return total


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
    if logits.size <= SERIAL_MAX:
        total += _softmax_xent_soft_rows(logits, targets, grad, inv_n)
    else:
        step = max(1, CHUNK // n_cols)          # rows per task
        for t in prange((n_rows + step - 1) // step):
            lo = t * step
            hi = min(lo + step, n_rows)
            total += _softmax_xent_soft_rows(logits[lo:hi], targets[lo:hi], grad[lo:hi],
                                             inv_n)
    return total / n_rows


# --------------------------------------------------------------------------- BCE, MSE
@kernel(fastmath=_FLAGS)
def _bce_logits_span(z, t, g, inv_n):
    zero = z.dtype.type(0)
    one = z.dtype.type(1)
    total = 0.0
    for i in range(z.size):
        v = z[i]
        e = vmath.exp(-abs(v))
        p = (one if v >= zero else e) / (one + e)
        g[i] = (p - t[i]) * inv_n
        total += np.float64((v if v > zero else zero) - v * t[i] + vmath.log1p(e))
    return total


@parallel_kernel
def bce_logits(logits, targets, grad):
    """Binary cross-entropy on logits (sigmoid fused in), stable for any logit.

    ``loss = mean(max(z, 0) - z t + log1p(exp(-|z|)))`` and
    ``grad = (sigmoid(z) - t) / n`` with ``n = logits.size``.
    logits, targets, grad : (batch, outputs); targets in [0, 1].
    """
    zf = logits.reshape(logits.size)
    tf = targets.reshape(targets.size)
    gf = grad.reshape(grad.size)
    n = zf.size
    inv_n = logits.dtype.type(1) / logits.dtype.type(n)
    total = 0.0
    if n <= SERIAL_MAX:
        total += _bce_logits_span(zf, tf, gf, inv_n)
    else:
        for c in prange((n + CHUNK - 1) // CHUNK):
            lo = c * CHUNK
            hi = min(lo + CHUNK, n)
            total += _bce_logits_span(zf[lo:hi], tf[lo:hi], gf[lo:hi], inv_n)
    return total / n


@kernel(fastmath=_FLAGS)
def _mse_span(p, t, g, two_over_n):
    total = 0.0
    for i in range(p.size):
        d = p[i] - t[i]
        g[i] = two_over_n * d
        total += np.float64(d * d)
    return total


@parallel_kernel
def mse(pred, targets, grad):
    """Mean squared error over all elements.

    ``loss = mean((p - t)**2)`` and ``grad = 2 (p - t) / n`` with ``n = pred.size``.
    pred, targets, grad : (batch, outputs).
    """
    pf = pred.reshape(pred.size)
    tf = targets.reshape(targets.size)
    gf = grad.reshape(grad.size)
    n = pf.size
    two_over_n = pred.dtype.type(2) / pred.dtype.type(n)
    total = 0.0
    if n * 3 * pf.itemsize <= SERIAL_MAX_BYTES_MSE:
        total += _mse_span(pf, tf, gf, two_over_n)
    else:
        for c in prange((n + CHUNK_MSE - 1) // CHUNK_MSE):
            lo = c * CHUNK_MSE
            hi = min(lo + CHUNK_MSE, n)
            total += _mse_span(pf[lo:hi], tf[lo:hi], gf[lo:hi], two_over_n)
    return total / n
