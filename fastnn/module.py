"""The building blocks every layer shares: :class:`Parameter` and :class:`Module`.

Training follows an explicit protocol, with no autograd graph::

    y = module(x)            # forward; the module keeps what its backward needs
    dx = module.backward(dy) # backward; parameter gradients are accumulated into p.grad

A layer implements ``_forward(x, backend)`` and ``_backward(dy, backend, need_input_grad)``
on validated, C-contiguous arrays; the public ``__call__``/``backward`` validate and pick
the backend.
"""
import numpy as np

from .backends import get_backend
from .validation import as_dtype, as_input


class Parameter:
    """A trainable array and its gradient.

    ``grad`` accumulates across backward passes until :meth:`zero_grad`, as in PyTorch.
    Zeroing is lazy: ``zero_grad`` only marks the gradient stale, and the next backward
    overwrites instead of adding, which saves a pass over memory every step.
    """

    __slots__ = ("data", "_grad", "_grad_stale")

    def __init__(self, data):
        self.data = data
        self._grad = np.zeros_like(data)
        self._grad_stale = False

    @property
    def grad(self):
        if self._grad_stale:
            self._grad[...] = 0
            self._grad_stale = False
        return self._grad

    def zero_grad(self):
        self._grad_stale = True

    def _grad_for_backward(self):
        """(gradient array, accumulate?) for a kernel that writes this gradient."""
        accumulate = not self._grad_stale
        self._grad_stale = False
        return self._grad, accumulate

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of layers and models.

    Attributes
    ----------
    backend : str or None
        Backend name for this module; ``None`` follows :func:`fastnn.get_backend`.
    """

    backend = None
    n_features = None      # expected input width, where the module knows it

    def _params(self):
        """{name: Parameter} of this module itself (layers override)."""
        return {}

    def named_parameters(self):
        return list(self._params().items())

    def parameters(self):
        """The trainable :class:`Parameter` objects, in a fixed order."""
        return [p for _, p in self.named_parameters()]

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].dtype if params else None

    def astype(self, dtype):
        """Convert the parameters to float32/float64 in place; returns ``self``."""
        dtype = as_dtype(dtype)
        for p in self.parameters():
            if p.data.dtype != dtype:
                p.data = p.data.astype(dtype)
                p._grad = p._grad.astype(dtype)
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def _resolve_backend(self):
        return get_backend(self.backend)

    def __call__(self, x):
        """Forward pass on a (batch, features) array; converts ``x`` to the module dtype."""
        dtype = self.dtype
        if dtype is None:
            arr = np.asarray(x)
            dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float32
        x = as_input(x, "x", dtype, self.n_features)
        self._last_backend = self._resolve_backend()
        y = self._forward(x, self._last_backend)
        self._out_shape, self._out_dtype = y.shape, y.dtype
        return y

    def backward(self, grad):
        """Backward pass: accumulate parameter gradients, return d(loss)/d(input)."""
        backend = getattr(self, "_last_backend", None)
        if backend is None:
            raise RuntimeError("backward() called before a forward pass; call the module "
                               "on a batch first")
        return self._backward(self._check_grad(grad), backend, True)

    def _check_grad(self, grad):
        expected = self._out_shape
        grad = as_input(grad, "grad", self._out_dtype)
        if grad.shape != expected:
            raise ValueError(f"grad must have the shape of the last output {expected}, "
                             f"got {grad.shape}")
        return grad

    def _forward(self, x, backend):
        raise NotImplementedError

    def _backward(self, grad, backend, need_input_grad):
        raise NotImplementedError
