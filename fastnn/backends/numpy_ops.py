"""Every backend operation written plainly in NumPy.

This module is the reference the tests compare the kernels against and the NumPy/BLAS
baseline the benchmarks race.  Each function has exactly the name and signature of its
Numba kernel (see ``fastnn.kernels``): it writes into ``out`` and returns it (losses return
the mean loss and write the gradient).  Clarity beats speed here, but nothing is
gratuitously slow: matrix products go to BLAS and everything else is vectorised.
"""
import numpy as np

from ..kernels.activation_specs import ELEMENTWISE


def _cast(value, like):
    return like.dtype.type(value)


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


# --------------------------------------------------------------------------- normalisation
# x is (rows, features); gamma/beta/gradient outputs of size 0 mean "absent" (gamma 1,
# beta 0, gradient not written).  Formulas in fastnn.kernels.norm.
def _affine_of(xhat, gamma, beta):
    out = xhat * gamma if gamma.size else xhat
    return out + beta if beta.size else out


def _store_grad(out, value, accumulate):
    if out.size:
        if accumulate:
            out += value
        else:
            out[...] = value


def layer_norm_forward(x, gamma, beta, eps, y, mean, rstd):
    """``y = (x - mean) / sqrt(var + eps) * gamma + beta`` over each row (biased var);
    writes the rows' ``mean`` and ``rstd = 1 / sqrt(var + eps)``."""
    mu = x.mean(axis=1)
    var = ((x - mu[:, None]) ** 2).mean(axis=1)
    r = 1 / np.sqrt(var + _cast(eps, x))
    y[...] = _affine_of((x - mu[:, None]) * r[:, None], gamma, beta)
    mean[...] = mu
    rstd[...] = r
    return y


def layer_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, accumulate):
    """``dx = rstd (g - mean(g) - xhat mean(g xhat))`` per row with ``g = dy * gamma``;
    ``dgamma (+)= sum_rows(dy xhat)``, ``dbeta (+)= sum_rows(dy)``."""
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = dy * gamma if gamma.size else dy
    dx[...] = rstd[:, None] * (g - g.mean(axis=1, keepdims=True)
                               - xhat * (g * xhat).mean(axis=1, keepdims=True))
    _store_grad(dgamma, (dy * xhat).sum(axis=0), accumulate)
    _store_grad(dbeta, dy.sum(axis=0), accumulate)
    return dx


def batch_norm_forward_train(x, gamma, beta, eps, momentum, running_mean, running_var, y,
                             mean, rstd):
    """``y = (x - mean) / sqrt(var + eps) * gamma + beta`` per column, batch statistics
    (biased var); running statistics (if not size 0) updated as PyTorch does, the running
    variance unbiased (``var * n / (n - 1)``; ``var`` itself for ``n = 1``)."""
    n = x.shape[0]
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    r = 1 / np.sqrt(var + _cast(eps, x))
    y[...] = _affine_of((x - mu) * r, gamma, beta)
    if running_mean.size:
        m = _cast(momentum, x)
        running_mean[...] = (1 - m) * running_mean + m * mu
        running_var[...] = (1 - m) * running_var + m * var * _cast(n / (n - 1) if n > 1 else 1, x)
    mean[...] = mu
    rstd[...] = r
    return y


def batch_norm_forward_eval(x, gamma, beta, eps, running_mean, running_var, y):
    """``y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta``."""
    y[...] = _affine_of((x - running_mean) / np.sqrt(running_var + _cast(eps, x)), gamma, beta)
    return y


def batch_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, accumulate):
    """``dx = gamma rstd (dy - sum(dy)/n - xhat sum(dy xhat)/n)`` per column;
    ``dgamma (+)= sum(dy xhat)``, ``dbeta (+)= sum(dy)`` (sums over the rows)."""
    n = x.shape[0]
    xhat = (x - mean) * rstd
    sum_dy = dy.sum(axis=0)
    sum_dy_xhat = (dy * xhat).sum(axis=0)
    scale = gamma * rstd if gamma.size else rstd
    dx[...] = scale * (dy - sum_dy / n - xhat * sum_dy_xhat / n)
    _store_grad(dgamma, sum_dy_xhat, accumulate)
    _store_grad(dbeta, sum_dy, accumulate)
    return dx


def batch_norm_backward_eval(dy, x, gamma, eps, running_mean, running_var, dx, dgamma, dbeta,
                             accumulate):
    """Backward of evaluation mode, where the statistics are constants:
    ``dx = dy * gamma * rstd`` with ``rstd = 1 / sqrt(running_var + eps)``;
    ``dgamma (+)= sum(dy xhat)``, ``dbeta (+)= sum(dy)`` (fine-tuning with frozen
    statistics)."""
    rstd = 1 / np.sqrt(running_var + _cast(eps, x))
    xhat = (x - running_mean) * rstd
    dx[...] = dy * (gamma * rstd if gamma.size else rstd)
    _store_grad(dgamma, (dy * xhat).sum(axis=0), accumulate)
    _store_grad(dbeta, dy.sum(axis=0), accumulate)
    return dx


# --------------------------------------------------------------------------- dropout
# The counter-based stream of fastnn.kernels.dropout, vectorised: uint64 array arithmetic
# wraps modulo 2**64 as the kernels' does.
_MASK64 = (1 << 64) - 1
_SPLITMIX_GAMMA = 0x9E3779B97F4A7C15


def _mix64(z):
    """SplitMix64's output function on a uint64 array (or a Python int, kept to 64 bits)."""
    if isinstance(z, int):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _dropout_keep(seed, offset, size, p):
    """Boolean keep-mask of ``size`` elements: element ``i`` kept iff the top 32 bits of
    ``mix(key + (offset + i + 1) * gamma)``, ``key = mix(seed + gamma)``, are below
    ``floor((1 - p) * 2**32)``."""
    key = _mix64((int(seed) + _SPLITMIX_GAMMA) & _MASK64)
    counters = np.arange(1, size + 1, dtype=np.uint64) + np.uint64(offset)
    bits = _mix64(np.uint64(key) + counters * np.uint64(_SPLITMIX_GAMMA))
    return (bits >> np.uint64(32)) < int((1.0 - p) * 2.0 ** 32)


def _dropout_scale(p, like):
    return _cast(1 / (1 - p) if p < 1 else 0, like)


def dropout_forward(x, p, seed, offset, y, mask):
    """``y = x / (1 - p)`` where kept, 0 where dropped (0 everywhere for ``p = 1``);
    ``mask`` (uint8, size 0 to skip) records the kept elements."""
    keep = _dropout_keep(seed, offset, x.size, p).reshape(x.shape)
    y[...] = np.where(keep, x, 0) * _dropout_scale(p, x)     # select first: inf * 0 is NaN
    if mask.size:
        mask.reshape(x.shape)[...] = keep
    return y


def dropout_backward(dy, mask, p, dx):
    """``dx = dy / (1 - p)`` where ``mask`` is 1, else 0."""
    dx[...] = np.where(mask.reshape(dy.shape) != 0, dy, 0) * _dropout_scale(p, dy)
    return dx


# --------------------------------------------------------------------------- element-wise
def add(x, y, out):
    """``out = x + y`` (same shapes; a residual connection)."""
    return np.add(x, y, out=out)


# --------------------------------------------------------------------------- attention heads
def split_heads(x, out):
    """``(B, S, G*H*D)`` -> ``(G, B, H, S, D)``: ``out[g, b, h, s, :] =
    x[b, s, (g*H + h)*D : (g*H + h + 1)*D]`` (a projection's output into the attention
    layout; G = 3 for packed query/key/value)."""
    g, b, h, s, d = out.shape
    out[...] = x.reshape(b, s, g, h, d).transpose(2, 0, 3, 1, 4)
    return out


def merge_heads(x, out):
    """The inverse of :func:`split_heads`: ``(G, B, H, S, D)`` -> ``(B, S, G*H*D)``."""
    g, b, h, s, d = x.shape
    out.reshape(b, s, g, h, d)[...] = x.transpose(1, 3, 0, 2, 4)
    return out


# --------------------------------------------------------------------------- embeddings, pooling
# Formulas and conventions in fastnn.kernels.embedding and fastnn.kernels.pooling.
def embedding_forward(weight, indices, out):
    """``out[n, :] = weight[indices[n], :]`` (a row gather)."""
    np.take(weight, indices, axis=0, out=out)
    return out


def embedding_backward(dout, indices, dweight, accumulate=False, padding_idx=-1):
    """``dweight[v] (+)= sum_{n: indices[n] = v} dout[n]`` (``np.add.at``: duplicates
    added in index order); without ``accumulate`` unused rows are zero, with it they are
    untouched; the ``padding_idx`` row (-1: none) gets no gradient."""
    if not accumulate:
        dweight[...] = 0
    if padding_idx >= 0:
        keep = indices != padding_idx
        indices, dout = indices[keep], dout[keep]
    np.add.at(dweight, indices, dout)
    return dweight


def mean_pool_forward(x, out):
    """``out[p, q] = sum_s x[p, s, q] / S`` for x (P, S, Q)."""
    np.sum(x, axis=1, out=out)
    out /= _cast(x.shape[1], out)
    return out


def mean_pool_backward(dy, dx):
    """``dx[p, s, q] = dy[p, q] / S``."""
    dx[...] = (dy / _cast(dx.shape[1], dy))[:, None, :]
    return dx


# --------------------------------------------------------------------------- attention
def _attention_softmax(q, k, mask, causal, scale):
    """``(P, shift, total)`` for ``x = scale * q @ k^T + mask`` (B, H, S_q, S_k): the
    materialised softmax ``P = exp(x - shift) / total`` with ``shift`` the row maximum and
    ``total`` the row sum of the exponentials.  A row whose every key is masked has
    ``shift = 0``, ``total = 0`` and ``P = 0``.  The conventions of
    :mod:`fastnn.kernels.attention`: boolean mask True = attend, float mask added (both
    broadcast), causal masks key ``j > i``."""
    x = np.matmul(q, np.swapaxes(k, -1, -2)) * _cast(scale, q)
    neg_inf = _cast(-np.inf, q)
    if mask is not None and mask.size:
        x = np.where(mask, x, neg_inf) if mask.dtype == bool else x + mask
    if causal:
        x = np.where(np.tri(*x.shape[-2:], dtype=bool), x, neg_inf)
    m = x.max(axis=-1, keepdims=True)
    shift = np.where(m == neg_inf, _cast(0, q), m)
    e = np.exp(x - shift)
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total == 0, _cast(1, q), total), shift, total


def attention_forward(q, k, v, mask, causal, scale, out, lse):
    """``out = softmax(scale * q @ k^T + mask) @ v`` per batch and head; ``lse`` (B, H,
    S_q) the rows' log-sum-exp, ``-inf`` for a row whose every key is masked (its output
    is 0)."""
    p, shift, total = _attention_softmax(q, k, mask, causal, scale)
    np.matmul(p, v, out=out)
    with np.errstate(divide="ignore"):
        lse[...] = (shift + np.log(total))[..., 0]
    return out


def attention_backward(dout, q, k, v, out, lse, mask, causal, scale, dq, dk, dv):
    """Gradients of :func:`attention_forward` from the materialised softmax ``P`` (``out``
    and ``lse`` are not used): ``dv = P^T dout``, ``dP = dout v^T``, ``dS = scale * P (dP -
    rowsum(P dP))``, ``dq = dS k``, ``dk = dS^T q``."""
    p, _, _ = _attention_softmax(q, k, mask, causal, scale)
    np.matmul(np.swapaxes(p, -1, -2), dout, out=dv)
    dp = np.matmul(dout, np.swapaxes(v, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True)) * _cast(scale, q)
    np.matmul(ds, k, out=dq)
    np.matmul(np.swapaxes(ds, -1, -2), q, out=dk)
    return dq, dk, dv
