"""Baselines of the normalisation and dropout benchmarks: each one a forward and a backward
pass, as a careful NumPy user writes them and as a PyTorch user runs them.

NumPy: every buffer preallocated, every ufunc and reduction writing in place (``out=``);
no framework.  PyTorch: ``torch.nn.functional`` on tensors that share the NumPy arrays'
memory, the backward through autograd (``y.backward(dy)``), gradients reset to ``None``
each call as ``zero_grad()`` does.  ``tests/test_bench.py`` checks that each computes
what fastnn computes.

Shapes: ``x`` is ``(rows, features)``; LayerNorm normalises rows, BatchNorm columns
(training mode: batch statistics, running statistics updated).
"""
import numpy as np

EPS = 1e-5
MOMENTUM = 0.1


class NumpyLayerNorm:
    """LayerNorm forward + backward in preallocated NumPy buffers.

    Forward: ``xhat = (x - mean) * rstd`` per row, ``y = xhat * gamma + beta``.  Backward:
    ``g = dy * gamma``, ``dx = rstd (g - mean(g) - xhat mean(g xhat))`` per row,
    ``dgamma = sum_rows(dy xhat)``, ``dbeta = sum_rows(dy)``.
    """

    def __init__(self, x, gamma, beta, dy, eps=EPS):
        self.x, self.gamma, self.beta, self.dy = x, gamma, beta, dy
        rows, n = x.shape
        t = x.dtype.type
        self.eps = t(eps)
        self.xhat, self.y, self.dx, self.tmp = (np.empty_like(x) for _ in range(4))
        self.mean, self.rstd, self.a, self.b = (np.empty((rows, 1), x.dtype) for _ in range(4))
        self.dgamma, self.dbeta = np.empty_like(gamma), np.empty_like(beta)

    def __call__(self):
        x, xhat, tmp, rstd = self.x, self.xhat, self.tmp, self.rstd
        np.mean(x, axis=1, keepdims=True, out=self.mean)
        np.subtract(x, self.mean, out=xhat)
        np.multiply(xhat, xhat, out=tmp)
        np.mean(tmp, axis=1, keepdims=True, out=rstd)
        rstd += self.eps
        np.sqrt(rstd, out=rstd)
        np.reciprocal(rstd, out=rstd)
        xhat *= rstd
        np.multiply(xhat, self.gamma, out=self.y)
        self.y += self.beta
        # backward
        dy, g = self.dy, self.dx
        np.multiply(dy, xhat, out=tmp)
        np.sum(tmp, axis=0, out=self.dgamma)
        np.sum(dy, axis=0, out=self.dbeta)
        np.multiply(dy, self.gamma, out=g)
        np.mean(g, axis=1, keepdims=True, out=self.a)
        np.multiply(g, xhat, out=tmp)
        np.mean(tmp, axis=1, keepdims=True, out=self.b)
        g -= self.a
        np.multiply(xhat, self.b, out=tmp)
        g -= tmp
        g *= rstd
        return self.y, self.dx, self.dgamma, self.dbeta


class NumpyBatchNorm:
    """BatchNorm (training) forward + backward in preallocated NumPy buffers.

    Forward: ``xhat = (x - mean) * rstd`` per column, ``y = xhat * gamma + beta``, running
    statistics ``r = (1 - m) r + m batch`` (variance unbiased).  Backward: ``dbeta =
    sum(dy)``, ``dgamma = sum(dy xhat)``, ``dx = gamma rstd (dy - dbeta/N - xhat
    dgamma/N)``.
    """

    def __init__(self, x, gamma, beta, dy, eps=EPS, momentum=MOMENTUM):
        self.x, self.gamma, self.beta, self.dy = x, gamma, beta, dy
        n = x.shape[1]
        t = x.dtype.type
        self.eps, self.momentum = t(eps), t(momentum)
        self.unbias = t(x.shape[0] / (x.shape[0] - 1))
        self.inv_rows = t(1 / x.shape[0])
        self.xhat, self.y, self.dx, self.tmp = (np.empty_like(x) for _ in range(4))
        self.mean, self.var, self.rstd, self.scale, self.col = (np.empty(n, x.dtype)
                                                               for _ in range(5))
        self.running_mean, self.running_var = np.zeros(n, x.dtype), np.ones(n, x.dtype)
        self.dgamma, self.dbeta = np.empty_like(gamma), np.empty_like(beta)

    def __call__(self):
        x, xhat, tmp, m = self.x, self.xhat, self.tmp, self.momentum
        np.mean(x, axis=0, out=self.mean)
        np.subtract(x, self.mean, out=xhat)
        np.multiply(xhat, xhat, out=tmp)
        np.mean(tmp, axis=0, out=self.var)
        np.add(self.var, self.eps, out=self.rstd)
        np.sqrt(self.rstd, out=self.rstd)
        np.reciprocal(self.rstd, out=self.rstd)
        xhat *= self.rstd
        np.multiply(xhat, self.gamma, out=self.y)
        self.y += self.beta
        self.running_mean *= 1 - m
        np.multiply(self.mean, m, out=self.col)
        self.running_mean += self.col
        self.running_var *= 1 - m
        np.multiply(self.var, m * self.unbias, out=self.col)
        self.running_var += self.col
        # backward
        dy, dx = self.dy, self.dx
        np.sum(dy, axis=0, out=self.dbeta)
        np.multiply(dy, xhat, out=tmp)
        np.sum(tmp, axis=0, out=self.dgamma)
        np.multiply(self.dgamma, self.inv_rows, out=self.col)
        np.multiply(xhat, self.col, out=tmp)
        np.multiply(self.dbeta, self.inv_rows, out=self.col)
        np.subtract(dy, self.col, out=dx)
        dx -= tmp
        np.multiply(self.gamma, self.rstd, out=self.scale)
        dx *= self.scale
        return self.y, self.dx, self.dgamma, self.dbeta


class NumpyDropout:
    """Inverted dropout forward + backward with NumPy's generator: ``keep = u < 1 - p``
    for ``u`` uniform in [0, 1) (``rng.random(out=...)``), ``y = x * keep / (1 - p)``,
    ``dx = dy * keep / (1 - p)``; a fresh mask every call."""

    def __init__(self, x, dy, p, seed=0):
        self.x, self.dy = x, dy
        t = x.dtype.type
        self.keep_prob, self.scale = t(1 - p), t(1 / (1 - p))
        self.rng = np.random.default_rng(seed)
        self.u = np.empty_like(x)
        self.mask = np.empty(x.shape, bool)
        self.y, self.dx = np.empty_like(x), np.empty_like(x)

    def __call__(self):
        self.rng.random(out=self.u, dtype=self.u.dtype)
        np.less(self.u, self.keep_prob, out=self.mask)
        np.multiply(self.x, self.mask, out=self.y)
        self.y *= self.scale
        np.multiply(self.dy, self.mask, out=self.dx)
        self.dx *= self.scale
        return self.y, self.dx, self.mask


class TorchNorm:
    """``torch.nn.functional.layer_norm`` or ``batch_norm`` (training) forward, and the
    backward by autograd; ``ImportError`` without PyTorch."""

    def __init__(self, kind, x, gamma, beta, dy, eps=EPS, momentum=MOMENTUM, threads=None):
        import numba
        import torch
        torch.set_num_threads(threads or numba.get_num_threads())
        self.torch, self.kind, self.eps, self.momentum = torch, kind, eps, momentum
        self.x = torch.from_numpy(x).requires_grad_()
        self.gamma = torch.from_numpy(gamma.copy()).requires_grad_()
        self.beta = torch.from_numpy(beta.copy()).requires_grad_()
        self.dy = torch.from_numpy(dy)
        n = x.shape[1]
        self.running_mean = torch.zeros(n, dtype=self.x.dtype)
        self.running_var = torch.ones(n, dtype=self.x.dtype)

    def __call__(self):
        functional = self.torch.nn.functional
        for tensor in (self.x, self.gamma, self.beta):
            tensor.grad = None
        if self.kind == "layer_norm":
            y = functional.layer_norm(self.x, self.x.shape[1:], self.gamma, self.beta, self.eps)
        else:
            y = functional.batch_norm(self.x, self.running_mean, self.running_var, self.gamma,
                                      self.beta, training=True, momentum=self.momentum,
                                      eps=self.eps)
        y.backward(self.dy)
        return y, self.x.grad, self.gamma.grad, self.beta.grad


class TorchDropout:
    """``torch.nn.functional.dropout`` (training) forward and its autograd backward."""

    def __init__(self, x, dy, p, threads=None):
        import numba
        import torch
        torch.set_num_threads(threads or numba.get_num_threads())
        torch.manual_seed(0)
        self.torch, self.p = torch, p
        self.x = torch.from_numpy(x).requires_grad_()
        self.dy = torch.from_numpy(dy)

    def __call__(self):
        self.x.grad = None
        y = self.torch.nn.functional.dropout(self.x, self.p, training=True)
        y.backward(self.dy)
        return y, self.x.grad
