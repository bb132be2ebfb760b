"""The NumPy backend's operations for the layers beyond dense ones: normalisation,
dropout, element-wise sums, attention heads, embeddings, pooling and attention (part of
:mod:`.numpy_ops`, which re-exports them; same conventions: the kernels' names and
signatures, written plainly)."""
import numpy as np

__all__ = ["layer_norm_forward", "layer_norm_backward", "batch_norm_forward_train",
           "batch_norm_forward_eval", "batch_norm_backward", "batch_norm_backward_eval",
           "dropout_forward", "dropout_backward", "add", "split_heads", "merge_heads",
           "embedding_forward", "embedding_backward", "mean_pool_forward",
           "mean_pool_backward", "attention_forward", "attention_backward"]


def _cast(value, like):
    """``value`` as a scalar of ``like``'s dtype (float32 stays float32)."""
    return like.dtype.type(value)


# --------------------------------------------------------------------------- normalisation
# x is (rows, features); gamma/beta/gradient outputs of size 0 mean "absent" (gamma 1,
# beta 0, gradient not written).  Formulas in fastnn.kernels.norm (the kernels: layer_norm,
# batch_norm).
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
