"""The Adam update the benchmark races fastnn's against: NumPy written by a careful user,
and PyTorch's ``torch.optim.Adam(foreach=True)``.

Both perform PyTorch's Adam step (see :class:`fastnn.Adam`) on one parameter::

    m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g**2
    p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

``tests/test_bench.py`` checks that each computes what :class:`fastnn.Adam` computes.
"""
import math

import numpy as np


class NumpyAdam:
    """Adam on one parameter in plain NumPy, as a careful user writes it: every operation
    an in-place ufunc with ``out=`` into two preallocated temporaries (no allocation per
    step), scalars in the parameter's dtype (float32 stays float32), the bias corrections
    folded into two scalars per step, and a multiplication by ``1/sqrt(1 - beta2**t)``
    instead of a division.  Eleven passes over memory per step, on one thread (NumPy's
    element-wise ufuncs do not use threads).

    Parameters
    ----------
    param : array
        Updated in place by :meth:`step`.
    lr, betas, eps : as :class:`fastnn.Adam`
    """

    def __init__(self, param, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.param = param
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.exp_avg = np.zeros_like(param)
        self.exp_avg_sq = np.zeros_like(param)
        self._tmp = np.empty_like(param)
        self.t = 0

    def step(self, grad):
        self.t += 1
        c = self.param.dtype.type
        step_size = c(self.lr / (1 - self.beta1 ** self.t))
        inv_bias_correction2_sqrt = c(1 / math.sqrt(1 - self.beta2 ** self.t))
        m, v, tmp = self.exp_avg, self.exp_avg_sq, self._tmp
        np.multiply(m, c(self.beta1), out=m)                 # m = b1 m + (1 - b1) g
        np.multiply(grad, c(1 - self.beta1), out=tmp)
        np.add(m, tmp, out=m)
        np.multiply(grad, grad, out=tmp)                     # v = b2 v + (1 - b2) g^2
        np.multiply(tmp, c(1 - self.beta2), out=tmp)
        np.multiply(v, c(self.beta2), out=v)
        np.add(v, tmp, out=v)
        np.sqrt(v, out=tmp)                                  # sqrt(v_hat) + eps
        np.multiply(tmp, inv_bias_correction2_sqrt, out=tmp)
        np.add(tmp, c(self.eps), out=tmp)
        np.divide(m, tmp, out=tmp)                           # p -= step_size m / denom
        np.multiply(tmp, step_size, out=tmp)
        np.subtract(self.param, tmp, out=self.param)
        return self.param


class TorchAdam:
    """``torch.optim.Adam([p], foreach=True)`` on a tensor sharing the NumPy parameter's
    memory (``torch.from_numpy``), with as many threads as fastnn's kernels get.
    ImportError without PyTorch."""

    def __init__(self, param, grad, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, threads=None):
        import numba
        import torch
        torch.set_num_threads(threads or numba.get_num_threads())
        self.param = param
        self.tensor = torch.from_numpy(param)
        self.tensor.grad = torch.from_numpy(grad)
        self.optimizer = torch.optim.Adam([self.tensor], lr=lr, betas=betas, eps=eps,
                                          foreach=True)

    def step(self):
        self.optimizer.step()
        return self.param
