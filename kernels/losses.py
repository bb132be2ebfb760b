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

Weighted twins.  ``name_weighted(prediction, target, [pos_weight,] row_weight, grad)``
takes each row's share of the loss, its normalisation included (``s_i / batch`` for
Keras's sample weights, ``w[y_i] / sum_k w[y_k]`` for PyTorch's class weights), and returns
``sum_i row_weight_i * loss_i``.  The softmax losses run the same row functions for both:
their ``share`` is a scalar (``1/batch``, the plain mean) or that (batch,) array, and
:mod:`.row_shares` picks row ``i``'s value at compile time.
"""
import math

import numpy as np
from numba import prange

from . import vmath
from ._jit import kernel, parallel_kernel
from .row_shares import pick, share_of_row, shares_of_rows
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
def _row_log_uniform(share, i, s, prod, total):
    # One share for every row: the logs of running products, one libm log per few
    # hundred rows (1 <= s <= classes, so the float64 product is flushed long before it
    # could overflow; a NaN stays NaN); ``total + share * log(prod)`` completes the sum.
    prod *= np.float64(s)
    if prod > 1e280:
        return 1.0, total + np.float64(share) * math.log(prod)
    return prod, total


def _row_log_per_row(share, i, s, prod, total):
    return prod, total + np.float64(share[i]) * math.log(np.float64(s))


#: ``(prod, total)`` after adding row ``i``'s ``share_i * log(s)`` to ``total``
add_row_log = pick(_row_log_uniform, _row_log_per_row)


@kernel(fastmath=_FLAGS)
def _softmax_xent_rows(logits, labels, grad, share):
    """Rows of :func:`softmax_xent` / :func:`softmax_xent_weighted`: writes their
    gradient, returns ``sum_i share_i * loss_i``.

    Three passes over the block of rows, so that the exponentials vectorise even when a
    row is shorter than a vector (10 classes): (1) per row, ``grad = z - max z`` and
    ``loss += max z - z[label]``; (2) ``grad = exp(grad)`` over the whole block at once;
    (3) per row, ``s = sum(grad)``, ``grad *= r/s``, ``grad[label] -= r`` and
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
        total += np.float64(share_of_row(share, i)) * (np.float64(m) - np.float64(z[labels[i]]))
    gf = grad.reshape(grad.size)
    for k in range(gf.size):
        gf[k] = vmath.exp(gf[k])
    prod = 1.0
    for i in range(n_rows):
        g = grad[i]
        r = share_of_row(share, i)
        s = zero
        for j in range(n_cols):
            s += g[j]
        scale = r / s
        for j in range(n_cols):
            g[j] *= scale
        g[labels[i]] -= r
        prod, total = add_row_log(share, i, s, prod, total)
    return total + np.float64(share_of_row(share, 0)) * math.log(prod)   # prod is 1 per row


@parallel_kernel
def _softmax_xent_blocks(logits, labels, grad, share):
    """:func:`_softmax_xent_rows` over the whole batch: serial for small problems, in
    tasks of whole rows for large ones."""
    n_rows, n_cols = logits.shape
    total = 0.0
    if logits.size <= SERIAL_MAX:
        total += _softmax_xent_rows(logits, labels, grad, share)
    else:
        step = max(1, CHUNK // n_cols)          # rows per task
        for t in prange((n_rows + step - 1) // step):
            lo = t * step
            hi = min(lo + step, n_rows)
            total += _softmax_xent_rows(logits[lo:hi], labels[lo:hi], grad[lo:hi],
                                        shares_of_rows(share, lo, hi))
    return total


@kernel
def softmax_xent(logits, labels, grad):
    """Softmax cross-entropy with integer class labels.

    ``loss = mean_i [logsumexp(z_i) - z_i[labels_i]]`` and
    ``grad = (softmax(z) - onehot(labels)) / batch``.

    logits, grad : (batch, classes); labels : (batch,) integers in ``[0, classes)``.
    """
    inv_n = logits.dtype.type(1) / logits.dtype.type(logits.shape[0])
    return _softmax_xent_blocks(logits, labels, grad, inv_n)


@kernel
def softmax_xent_weighted(logits, labels, row_weight, grad):
    """:func:`softmax_xent` with each row's share of the loss given:
    ``loss = sum_i r_i [logsumexp(z_i) - z_i[labels_i]]``,
    ``grad_i = r_i (softmax(z_i) - onehot(labels_i))``.  row_weight : (batch,)."""
    return _softmax_xent_blocks(logits, labels, grad, row_weight)


@kernel(fastmath=_FLAGS)
def _softmax_xent_soft_rows(logits, targets, grad, share):
    """Rows of :func:`softmax_xent_soft` / :func:`softmax_xent_soft_weighted`: writes
    their gradient, returns ``sum_i share_i * loss_i``.

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
        total += np.float64(share_of_row(share, i)) * row
    gf = grad.reshape(grad.size)
    for k in range(gf.size):
        gf[k] = vmath.exp(gf[k])
    for i in range(n_rows):
        t = targets[i]
        g = grad[i]
        r = share_of_row(share, i)
        s = zero
        t_sum = zero
        for j in range(n_cols):
            s += g[j]
            t_sum += t[j]
        scale = t_sum * r / s
        for j in range(n_cols):
            g[j] = g[j] * scale - t[j] * r
        total += np.float64(r) * np.float64(t_sum) * np.float64(vmath.log(s))
    return total


@parallel_kernel
def _softmax_xent_soft_blocks(logits, targets, grad, share):
    """:func:`_softmax_xent_soft_rows` over the whole batch."""
    n_rows, n_cols = logits.shape
    total = 0.0
    if logits.size <= SERIAL_MAX:
        total += _softmax_xent_soft_rows(logits, targets, grad, share)
    else:
        step = max(1, CHUNK // n_cols)          # rows per task
        for t in prange((n_rows + step - 1) // step):
            lo = t * step
            hi = min(lo + step, n_rows)
            total += _softmax_xent_soft_rows(logits[lo:hi], targets[lo:hi], grad[lo:hi],
                                             shares_of_rows(share, lo, hi))
    return total


@kernel
def softmax_xent_soft(logits, targets, grad):
    """Softmax cross-entropy with one-hot or soft (probability) targets.

    ``loss = mean_i [-sum_j t_ij log softmax(z_i)_j]`` and
    ``grad = (softmax(z) * sum_j t_ij - t) / batch`` (= ``(p - t)/batch`` when rows of
    ``t`` sum to 1).  logits, targets, grad : (batch, classes).
    """
    inv_n = logits.dtype.type(1) / logits.dtype.type(logits.shape[0])
    return _softmax_xent_soft_blocks(logits, targets, grad, inv_n)


@kernel
def softmax_xent_soft_weighted(logits, targets, row_weight, grad):
    """:func:`softmax_xent_soft` with each row's share of the loss given:
    ``loss = sum_i r_i [-sum_j t_ij log softmax(z_i)_j]``,
    ``grad_i = r_i (softmax(z_i) sum_j t_ij - t_i)``.  row_weight : (batch,)."""
    return _softmax_xent_soft_blocks(logits, targets, grad, row_weight)


# --------------------------------------------------------------------------- BCE, MSE
# Three passes, as the softmax losses: (1) ``e = exp(-|z|)`` into ``grad`` over the whole
# block, (2) the loss terms, (3) the gradient.  Apart, each loop vectorises; fused into
# one (the exp, the log1p, a division and a float64 sum in one body) none did (Xeon
# AVX-512: 14.7 ns per element fused, 2.5 ns in three passes).
@kernel(fastmath=_FLAGS)
def _bce_loss_term(v, t, e, pw, r, one):
    """``r (pw t softplus(-v) + (1 - t) softplus(v))`` in float64, from
    ``e = exp(-|v|)``; ``softplus(v) = max(v, 0) + log1p(e)``, ``softplus(-v) =
    softplus(v) - v``."""
    softplus = (v if v > one - one else one - one) + vmath.log1p(e)
    pt = pw * t
    return np.float64(r) * np.float64(pt * (softplus - v) + (one - t) * softplus)


@kernel(fastmath=_FLAGS)
def _bce_grad_term(v, t, e, pw, r, one):
    """``r ((pw t + 1 - t) sigmoid(v) - pw t)`` from ``e = exp(-|v|)``."""
    p = (one if v >= one - one else e) / (one + e)
    pt = pw * t
    return ((pt + one - t) * p - pt) * r


@kernel(fastmath=_FLAGS)
def _exp_minus_abs(z, out):
    for k in range(z.size):
        out[k] = vmath.exp(-abs(z[k]))


@kernel(fastmath=_FLAGS)
def _bce_logits_span(z, t, g, inv_n):
    one = z.dtype.type(1)
    _exp_minus_abs(z, g)
    total = 0.0
    for i in range(z.size):
        total += _bce_loss_term(z[i], t[i], g[i], one, one, one)
    for i in range(z.size):
        g[i] = _bce_grad_term(z[i], t[i], g[i], one, inv_n, one)
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


#: below this many outputs the weighted BCE walks each column down the rows (one
#: output, binary classification, is then one contiguous loop that vectorises)
BCE_COLUMNS_OUTER = 8


@kernel(fastmath=_FLAGS)
def _bce_logits_weighted_rows(z, t, pos_weight, share, g):
    """Rows of :func:`bce_logits_weighted`: writes their gradient, returns
    ``sum_i share_i sum_j loss_ij``.  The three passes of :func:`_bce_logits_span`."""
    n_rows, n_cols = z.shape
    one = z.dtype.type(1)
    _exp_minus_abs(z.reshape(z.size), g.reshape(g.size))
    total = 0.0
    if n_cols < BCE_COLUMNS_OUTER:
        for j in range(n_cols):
            pw = pos_weight[j]
            for i in range(n_rows):
                total += _bce_loss_term(z[i, j], t[i, j], g[i, j], pw, share[i], one)
            for i in range(n_rows):
                g[i, j] = _bce_grad_term(z[i, j], t[i, j], g[i, j], pw, share[i], one)
    else:
        for i in range(n_rows):
            r = share[i]
            for j in range(n_cols):
                total += _bce_loss_term(z[i, j], t[i, j], g[i, j], pos_weight[j], r, one)
            for j in range(n_cols):
                g[i, j] = _bce_grad_term(z[i, j], t[i, j], g[i, j], pos_weight[j], r, one)
    return total


@parallel_kernel
def bce_logits_weighted(logits, targets, pos_weight, row_weight, grad):
    """Binary cross-entropy on logits with PyTorch's ``pos_weight`` and each row's share
    of the loss: ``loss = sum_i r_i sum_j [pw_j t_ij softplus(-z_ij) + (1 - t_ij)
    softplus(z_ij)]``, ``grad_ij = r_i ((pw_j t_ij + 1 - t_ij) sigmoid(z_ij) - pw_j t_ij)``.
    logits, targets, grad : (batch, outputs); pos_weight : (outputs,); row_weight :
    (batch,)."""
    n_rows, n_cols = logits.shape
    total = 0.0
    if logits.size <= SERIAL_MAX:
        total += _bce_logits_weighted_rows(logits, targets, pos_weight, row_weight, grad)
    else:
        step = max(1, CHUNK // n_cols)          # rows per task
        for c in prange((n_rows + step - 1) // step):
            lo = c * step
            hi = min(lo + step, n_rows)
            total += _bce_logits_weighted_rows(logits[lo:hi], targets[lo:hi], pos_weight,
                                               row_weight[lo:hi], grad[lo:hi])
    return total


@kernel(fastmath=_FLAGS)
def _mse_weighted_rows(p, t, share, g):
    n_rows, n_cols = p.shape
    two = p.dtype.type(2)
    total = 0.0
    for i in range(n_rows):
        r2 = two * share[i]
        row = 0.0
        for j in range(n_cols):
            d = p[i, j] - t[i, j]
            g[i, j] = r2 * d
            row += np.float64(d * d)
        total += np.float64(share[i]) * row
    return total


@parallel_kernel
def mse_weighted(pred, targets, row_weight, grad):
    """Squared error with each row's share of the loss:
    ``loss = sum_i r_i sum_j (p_ij - t_ij)**2``, ``grad_i = 2 r_i (p_i - t_i)``.
    pred, targets, grad : (batch, outputs); row_weight : (batch,)."""
    n_rows, n_cols = pred.shape
    total = 0.0
    if pred.size * 3 * pred.itemsize <= SERIAL_MAX_BYTES_MSE:
        total += _mse_weighted_rows(pred, targets, row_weight, grad)
    else:
        step = max(1, CHUNK_MSE // n_cols)
        for c in prange((n_rows + step - 1) // step):
            lo = c * step
            hi = min(lo + step, n_rows)
            total += _mse_weighted_rows(pred[lo:hi], targets[lo:hi], row_weight[lo:hi],
                                        grad[lo:hi])
    return total


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
