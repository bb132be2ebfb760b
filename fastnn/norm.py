"""Normalisation layers: :class:`BatchNorm1d` and :class:`LayerNorm`, on the last axis of
inputs of any rank ``(batch, ..., features)``.

Both normalise ``x`` to ``xhat = (x - mean) / sqrt(var + eps)`` (biased variance) and scale
and shift it with learned ``weight`` (gamma, ones at start) and ``bias`` (beta, zeros):
``y = xhat * weight + bias``, as PyTorch does.  LayerNorm takes the statistics of each row
over its features; BatchNorm1d takes them per feature over every other axis (the batch
and any sequence axes) in training mode, and uses running estimates in evaluation mode.
The forward and backward passes are fused kernels (``fastnn/kernels/layer_norm.py`` and
``batch_norm.py``; the NumPy reference in ``fastnn/backends/numpy_ops.py``).
"""
import numpy as np

from .module import Module, Parameter, rows, unrows
from .validation import check_number


def _affine(module, n, affine, bias=True):
    """``weight`` (ones) and ``bias`` (zeros) parameters of width ``n``, or None."""
    module.weight = Parameter(np.ones(n, np.float32)) if affine else None
    module.bias = Parameter(np.zeros(n, np.float32)) if affine and bias else None


def _empty(dtype):
    return np.empty(0, dtype)


def _arrays(module, dtype):
    """``(gamma, beta)`` for the kernels: the parameters' arrays, or size-0 arrays."""
    gamma = module.weight.data if module.weight is not None else _empty(dtype)
    beta = module.bias.data if module.bias is not None else _empty(dtype)
    return gamma, beta


def _grads(module, dtype):
    """``(dgamma, dbeta, accumulate)`` for a backward kernel: the gradient arrays (size-0
    arrays where there is no parameter) and whether to add to them."""
    dgamma, accumulate = ((_empty(dtype), False) if module.weight is None
                          else module.weight._grad_for_backward())
    if module.bias is None:
        return dgamma, _empty(dtype), accumulate
    dbeta, accumulate_b = module.bias._grad_for_backward()
    return dgamma, dbeta, accumulate if module.weight is not None else accumulate_b


def _width(value, name):
    """``normalized_shape`` / ``num_features``: an int, or a 1-tuple (the last axis)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{name} must be the width of the last axis (an int or a "
                             f"1-tuple), got {value!r}")
        value = value[0]
    return check_number(value, name, low=1, integer=True)


class LayerNorm(Module):
    """Layer normalisation over the last axis: each row ``x[..., :]`` is normalised by its
    own mean and (biased) variance, then ``y = xhat * weight + bias``.

    Parameters
    ----------
    normalized_shape : int
        Width of the last axis (a 1-tuple is accepted, as PyTorch's argument).
    eps : float, default 1e-5
        Added to the variance inside the square root.
    elementwise_affine : bool, default True
        Learn ``weight`` and ``bias`` of shape ``(normalized_shape,)``.
    bias : bool, default True
        Learn the ``bias`` (with ``elementwise_affine``).
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.normalized_shape = _width(normalized_shape, "normalized_shape")
        self.n_features = self.normalized_shape
        self.eps = float(check_number(eps, "eps", low=0.0, low_open=True))
        self.elementwise_affine, self.use_bias = bool(elementwise_affine), bool(bias)
        _affine(self, self.normalized_shape, self.elementwise_affine, self.use_bias)

    def reset_parameters(self, rng=None):
        """Weight ones, bias zeros."""
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def _forward(self, x, backend):
        x2 = rows(x)
        n = x2.shape[0]
        y = backend.empty(x2.shape, x.dtype)
        self._mean = backend.empty((n,), x.dtype)
        self._rstd = backend.empty((n,), x.dtype)
        gamma, beta = _arrays(self, x.dtype)
        backend.layer_norm_forward(x2, gamma, beta, self.eps, y, self._mean, self._rstd)
        self._x = x2
        return unrows(y, x)

    def _backward(self, grad, backend, need_input_grad):
        g2 = rows(grad)
        dx = backend.empty(g2.shape, grad.dtype)
        gamma, _ = _arrays(self, grad.dtype)
        dgamma, dbeta, accumulate = _grads(self, grad.dtype)
        backend.layer_norm_backward(g2, self._x, gamma, self._mean, self._rstd, dx, dgamma,
                                    dbeta, accumulate)
        return unrows(dx, grad)

    def get_config(self):
        return {"normalized_shape": self.normalized_shape, "eps": self.eps,
                "elementwise_affine": self.elementwise_affine, "bias": self.use_bias}

    def __repr__(self):
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps:g}, "
                f"elementwise_affine={self.elementwise_affine})")


class BatchNorm1d(Module):
    """Batch normalisation of each feature (the last axis) over every other axis.

    Training mode: statistics of the batch (biased variance), and the running estimates
    updated as PyTorch does: ``running = (1 - momentum) * running + momentum * batch``,
    the running variance unbiased (``var * n / (n - 1)``, ``n`` the values per feature);
    ``momentum=None`` averages all batches so far (``momentum = 1 / batches``).
    Evaluation mode (and ``track_running_stats=False`` never): the running estimates.

    Parameters
    ----------
    num_features : int
        Width of the last axis.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
    affine : bool, default True
        Learn ``weight`` (gamma) and ``bias`` (beta).
    track_running_stats : bool, default True
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked`` buffers and
        use them in evaluation mode; without them batch statistics are used in both modes.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        self.num_features = _width(num_features, "num_features")
        self.n_features = self.num_features
        self.eps = float(check_number(eps, "eps", low=0.0, low_open=True))
        self.momentum = None if momentum is None else float(
            check_number(momentum, "momentum", low=0.0, high=1.0))
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        _affine(self, self.num_features, self.affine)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, np.float32))
            self.register_buffer("running_var", np.ones(self.num_features, np.float32))
            self.register_buffer("num_batches_tracked", np.zeros(1, np.int64))

    def reset_parameters(self, rng=None):
        """Weight ones, bias zeros, running statistics reset."""
        if self.weight is not None:
            self.weight.data[...] = 1
            self.bias.data[...] = 0
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def _forward(self, x, backend):
        x2 = rows(x)
        n = x2.shape[0]
        y = backend.empty(x2.shape, x.dtype)
        gamma, beta = _arrays(self, x.dtype)
        self._batch_stats = self.training or not self.track_running_stats
        if not self._batch_stats:
            backend.batch_norm_forward_eval(x2, gamma, beta, self.eps, self.running_mean,
                                            self.running_var, y)
            self._x = x2
            return unrows(y, x)
        if n < 2 and self.training:
            raise ValueError(f"BatchNorm1d in training mode needs more than one value per "
                             f"feature, got input of shape {x.shape}; use a larger batch, "
                             "or evaluation mode (model.eval()) for single samples")
        self._mean = backend.empty((self.num_features,), x.dtype)
        self._rstd = backend.empty((self.num_features,), x.dtype)
        update = self.training and self.track_running_stats
        if update:
            self.num_batches_tracked[0] += 1
            momentum = (1.0 / float(self.num_batches_tracked[0]) if self.momentum is None
                        else self.momentum)
            running_mean, running_var = self.running_mean, self.running_var
        else:
            momentum, running_mean, running_var = 0.0, _empty(x.dtype), _empty(x.dtype)
        backend.batch_norm_forward_train(x2, gamma, beta, self.eps, momentum, running_mean,
                                         running_var, y, self._mean, self._rstd)
        self._x = x2
        return unrows(y, x)

    def _backward(self, grad, backend, need_input_grad):
        g2 = rows(grad)
        dx = backend.empty(g2.shape, grad.dtype)
        gamma, _ = _arrays(self, grad.dtype)
        dgamma, dbeta, accumulate = _grads(self, grad.dtype)
        if self._batch_stats:
            backend.batch_norm_backward(g2, self._x, gamma, self._mean, self._rstd, dx,
                                        dgamma, dbeta, accumulate)
        else:
            # evaluation mode: the statistics are constants, y = x * scale + shift
            backend.batch_norm_backward_eval(g2, self._x, gamma, self.eps, self.running_mean,
                                             self.running_var, dx, dgamma, dbeta, accumulate)
        return unrows(dx, grad)

    def get_config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "track_running_stats": self.track_running_stats}

    def __repr__(self):
        return (f"BatchNorm1d({self.num_features}, eps={self.eps:g}, momentum="
                f"{self.momentum}, affine={self.affine})")
