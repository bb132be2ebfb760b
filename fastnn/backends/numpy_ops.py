"""Every backend operation written plainly in NumPy.

This module is the reference the tests compare the kernels against and the NumPy/BLAS
baseline the benchmarks race.  Each function has exactly the name and signature of its
Numba kernel (see ``fastnn.kernels``): it writes into ``out`` and returns it (losses return
the mean loss and write the gradient).  Clarity beats speed here, but nothing is
gratuitously slow: matrix products go to BLAS and everything else is vectorised.
"""
import numpy as np

from ..kernels.activation_specs import ELEMENTWISE
# The layers' operations (normalisation, dropout, sequences, attention) are written in
# numpy_layer_ops; this module provides every operation of the NumPy backend.
from .numpy_layer_ops import *  # noqa: F401,F403
from .numpy_layer_ops import _cast


# --------------------------------------------------------------------------- matmul
def matmul(a, b, out, accumulate=False):
    """``out (+)= a @ b``."""
    if accumulate:
        out += a @ b
    else:
        np.matmul(a, b, out=out)
    return out


def matmul_nt(a, b, out, accumulate=False):
    """``out (+)= a @ b.T``."""
    if accumulate:
        out += a @ b.T
    else:
        np.matmul(a, b.T, out=out)
    return out


def matmul_tn(a, b, out, accumulate=False):
    """``out (+)= a.T @ b``."""
    if accumulate:
        out += a.T @ b
    else:
        np.matmul(a.T, b, out=out)
    return out


# --------------------------------------------------------------------------- bias
def bias_add(x, bias, out):
    """``out = x + bias`` (bias broadcast over rows)."""
    np.add(x, bias, out=out)
    return out


def bias_grad(dy, out, accumulate=False):
    """``out (+)= dy.sum(axis=0)``."""
    if accumulate:
        out += dy.sum(axis=0)
    else:
        np.sum(dy, axis=0, out=out)
    return out


# --------------------------------------------------------------------------- activations
# The element-wise activations' references are written in their records, next to the
# formulas the kernels compile (fastnn/kernels/activation_specs.py): name_forward(x, out,
# *params) and name_backward(dy, x, y, out, *params).
for _spec in ELEMENTWISE:
    globals()[f"{_spec.name}_forward"] = _spec.reference_forward
    globals()[f"{_spec.name}_backward"] = _spec.reference_backward
del _spec


def softmax_forward(x, out):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.divide(e, e.sum(axis=1, keepdims=True), out=out)
    return out


def softmax_backward(dy, x, y, out):
    out[...] = y * (dy - (dy * y).sum(axis=1, keepdims=True))
    return out


# --------------------------------------------------------------------------- losses
def _log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_xent(logits, labels, grad):
    n = logits.shape[0]
    logp = _log_softmax(logits)
    np.exp(logp, out=grad)
    grad[np.arange(n), labels] -= 1
    grad /= n
    return float(-logp[np.arange(n), labels].astype(np.float64).mean())


def softmax_xent_soft(logits, targets, grad):
    n = logits.shape[0]
    logp = _log_softmax(logits)
    grad[...] = (np.exp(logp) * targets.sum(axis=1, keepdims=True) - targets) / n
    return float(-(targets * logp).astype(np.float64).sum() / n)


def bce_logits(logits, targets, grad):
    e = np.exp(-np.abs(logits))
    p = np.where(logits >= 0, 1, e) / (1 + e)
    grad[...] = (p - targets) / logits.size
    loss = np.maximum(logits, 0) - logits * targets + np.log1p(e)
    return float(loss.astype(np.float64).mean())


# weighted losses: ``row_weight`` (batch,) holds each row's share of the loss, its
# normalisation included (1/batch for a plain mean), so one operation serves class weights,
# sample weights and both at once; the loss returned is ``sum_i row_weight_i * loss_i``.
def softmax_xent_weighted(logits, labels, row_weight, grad):
    """``loss_i = logsumexp(z_i) - z_i[labels_i]``; ``grad_i = r_i (softmax(z_i) - onehot_i)``."""
    n = logits.shape[0]
    logp = _log_softmax(logits)
    np.exp(logp, out=grad)
    grad[np.arange(n), labels] -= 1
    grad *= row_weight[:, None]
    return float(-(logp[np.arange(n), labels].astype(np.float64) * row_weight).sum())


def softmax_xent_soft_weighted(logits, targets, row_weight, grad):
    """``loss_i = -sum_j t_ij log softmax(z_i)_j``;
    ``grad_i = r_i (softmax(z_i) sum_j t_ij - t_i)``."""
    logp = _log_softmax(logits)
    grad[...] = (np.exp(logp) * targets.sum(axis=1, keepdims=True) - targets) * row_weight[:, None]
    return float(-((targets * logp).astype(np.float64).sum(axis=1) * row_weight).sum())


def bce_logits_weighted(logits, targets, pos_weight, row_weight, grad):
    """``loss_ij = pw_j t_ij softplus(-z_ij) + (1 - t_ij) softplus(z_ij)`` (PyTorch's
    ``pos_weight``), summed with weights ``r_i``; ``grad_ij = r_i ((pw_j t_ij + 1 - t_ij)
    sigmoid(z_ij) - pw_j t_ij)``.  pos_weight : (outputs,)."""
    e = np.exp(-np.abs(logits))
    p = np.where(logits >= 0, 1, e) / (1 + e)
    softplus = np.maximum(logits, 0) + np.log1p(e)          # softplus(-z) = softplus(z) - z
    pt = pos_weight * targets
    r = row_weight[:, None]
    grad[...] = ((pt + 1 - targets) * p - pt) * r
    loss = pt * (softplus - logits) + (1 - targets) * softplus
    return float((loss.astype(np.float64) * r).sum())


def mse_weighted(pred, targets, row_weight, grad):
    """``loss_i = sum_j (p_ij - t_ij)**2``, summed with weights ``r_i``;
    ``grad_i = 2 r_i (p_i - t_i)``."""
    diff = pred - targets
    grad[...] = diff * (2 * row_weight[:, None])
    return float(((diff.astype(np.float64) ** 2).sum(axis=1) * row_weight).sum())


def mse(pred, targets, grad):
    diff = pred - targets
    grad[...] = diff * (2 / pred.size)
    return float((diff.astype(np.float64) ** 2).mean())


# --------------------------------------------------------------------------- metric sums
def argmax_matches(outputs, labels):
    """Rows whose largest output is at the integer label."""
    return int(np.count_nonzero(np.argmax(outputs, axis=1) == labels))


def argmax_matches_soft(outputs, targets):
    """Rows whose largest output is where the target row is largest."""
    return int(np.count_nonzero(np.argmax(outputs, axis=1) == np.argmax(targets, axis=1)))


def sign_matches(outputs, targets):
    """Elements with ``(outputs >= 0) == (targets >= 0.5)``."""
    return int(np.count_nonzero((outputs >= 0) == (targets >= 0.5)))


def abs_error_sum(outputs, targets):
    """``sum |outputs - targets|``."""
    return float(np.abs(outputs - targets).astype(np.float64).sum())


def squared_error_sum(outputs, targets):
    """``sum (outputs - targets)**2``, summed in float64."""
    return float(np.square((outputs - targets).astype(np.float64)).sum())


def top_k_matches(outputs, labels, k):
    """Rows whose label's output is among the ``k`` largest of the row: fewer than ``k``
    outputs are larger than it (a tie with the k-th counts as in, as TensorFlow's
    ``in_top_k``; a NaN output at the label never counts)."""
    at_label = np.take_along_axis(outputs, labels.reshape(-1, 1), axis=1)
    larger = np.count_nonzero(outputs > at_label, axis=1)
    return int(np.count_nonzero((larger < k) & (at_label[:, 0] == at_label[:, 0])))


def top_k_matches_soft(outputs, targets, k):
    """:func:`top_k_matches` with the class of each row the argmax of its target row."""
    return top_k_matches(outputs, np.argmax(targets, axis=1), k)


# --------------------------------------------------------------------------- optimisers
def sgd_update(param, grad, lr, weight_decay):
    param -= _cast(lr, param) * (grad + _cast(weight_decay, param) * param)
    return param


def sgd_momentum_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    g = grad + _cast(weight_decay, param) * param
    velocity *= _cast(momentum, param)
    velocity += g
    # stored as zero below the smallest normal float, as the Numba kernel does
    velocity[np.abs(velocity) < np.finfo(velocity.dtype).tiny] = 0
    step = g + _cast(momentum, param) * velocity if nesterov else velocity
    param -= _cast(lr, param) * step
    return param


def _flush_subnormal(state):
    """Store values below the smallest normal float as zero, as the kernels do (decaying
    optimiser state; see ``fastnn.kernels.optim``).  NaN is kept."""
    state[np.abs(state) < np.finfo(state.dtype).tiny] = 0


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step_size, beta1, beta2,
                eps, weight_decay, param_decay, bias_correction2_sqrt):
    """Adam / AdamW (``max_exp_avg_sq`` empty without AMSGrad); formulas in
    ``fastnn.kernels.optim.adam_update``."""
    g = grad + _cast(weight_decay, param) * param
    exp_avg *= _cast(beta1, param)
    exp_avg += _cast(1 - beta1, param) * g
    exp_avg_sq *= _cast(beta2, param)
    exp_avg_sq += _cast(1 - beta2, param) * (g * g)
    _flush_subnormal(exp_avg)
    _flush_subnormal(exp_avg_sq)
    v = exp_avg_sq
    if max_exp_avg_sq.size:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    denom = np.sqrt(v) / _cast(bias_correction2_sqrt, param) + _cast(eps, param)
    param *= _cast(param_decay, param)
    param -= _cast(step_size, param) * (exp_avg / denom)
    return param


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                   weight_decay, momentum):
    """RMSprop (``grad_avg`` empty unless centred, ``momentum_buffer`` empty without
    momentum); formulas in ``fastnn.kernels.optim.rmsprop_update``."""
    g = grad + _cast(weight_decay, param) * param
    square_avg *= _cast(alpha, param)
    square_avg += _cast(1 - alpha, param) * (g * g)
    _flush_subnormal(square_avg)
    if grad_avg.size:
        grad_avg *= _cast(alpha, param)
        grad_avg += _cast(1 - alpha, param) * g
        _flush_subnormal(grad_avg)
        avg = np.sqrt(np.maximum(square_avg - grad_avg * grad_avg, 0)) + _cast(eps, param)
    else:
        avg = np.sqrt(square_avg) + _cast(eps, param)
    if momentum_buffer.size:
        momentum_buffer *= _cast(momentum, param)
        momentum_buffer += g / avg
        _flush_subnormal(momentum_buffer)
        param -= _cast(lr, param) * momentum_buffer
    else:
        param -= _cast(lr, param) * (g / avg)
    return param


def sum_of_squares(x):
    x64 = x.astype(np.float64)
    return float(np.dot(x64, x64))


def scale_inplace(x, factor):
    x *= _cast(factor, x)
    return x


def clip_inplace(x, limit):
    np.clip(x, -_cast(limit, x), _cast(limit, x), out=x)
    return x


# --------------------------------------------------------------------------- fused dense
# f'(z) written through the output y = f(z), from the records (see fastnn.kernels.dense).
_DERIVATIVE_FROM_OUTPUT = {spec.name: spec.reference_grad_from_output for spec in ELEMENTWISE
                           if spec.reference_grad_from_output is not None}


def dense_forward(x, w, bias, out, activation, *params):
    """``out = f(x @ w + bias)`` (``bias`` may be None)."""
    z = x @ w
    if bias is not None:
        z += bias
    return globals()[f"{activation}_forward"](z, out, *params)


def dense_backward(dy, x, w, y, dz, dw, db, dx, accumulate_w, accumulate_b, activation,
                   *params):
    """Backward of ``y = f(x @ w + b)``: ``dz = dy * f'(z)`` (from ``y``), ``db (+)=
    sum(dz)``, ``dw (+)= x.T @ dz`` and, unless ``dx`` is None, ``dx = dz @ w.T``."""
    np.multiply(dy, _DERIVATIVE_FROM_OUTPUT[activation](y, params), out=dz)
    if db is not None:
        bias_grad(dz, db, accumulate_b)
    matmul_tn(x, dz, dw, accumulate_w)
    if dx is not None:
        matmul_nt(dz, w, dx)
    return dx
