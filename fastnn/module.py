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
from .backends.memory import astype, is_device_array, memory_of, place, zero_fill
from .validation import as_dtype, as_input, check_device_input


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
            zero_fill(self._grad)
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
    _memory = None         # where the parameters were last placed ("host", "cuda")

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
                p.data = astype(p.data, dtype)
                p._grad = astype(p._grad, dtype)
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def _resolve_backend(self):
        """The backend to run on, with the parameters moved into its memory if needed
        (host <-> GPU; a no-op between the host backends)."""
        backend = get_backend(self.backend)
        if self._memory != backend.memory:
            self._place_parameters(backend)
        return backend

    def _place_parameters(self, backend):
        for p in self.parameters():
            if memory_of(p.data) != backend.memory:
                p.data = place(p.data, backend)
                p._grad = place(p._grad, backend)
        self._memory = backend.memory

    def _batch(self, x, name, dtype, backend, n_features=None):
        """A validated batch in ``backend``'s memory: host data is checked (and scanned
        for NaN/Inf) by :func:`as_input` before it is copied to a device; an array already
        on the device gets the shape and dtype checks."""
        if is_device_array(x):
            return place(check_device_input(x, name, dtype, n_features), backend)
        x = as_input(x, name, dtype, n_features)
        return x if backend.memory == "host" else backend.asarray(x, dtype)

    def __call__(self, x):
        """Forward pass on a (batch, features) array; converts ``x`` to the module dtype.

        The result lives where the backend computes: a NumPy array on the host backends,
        a device array on "cuda" (``fastnn.to_numpy`` or ``predict`` give host arrays)."""
        dtype = self.dtype
        if dtype is None:
            dt = np.dtype(x.dtype) if is_device_array(x) else np.asarray(x).dtype
            dtype = dt if dt in (np.float32, np.float64) else np.float32
        backend = self._last_backend = self._resolve_backend()
        x = self._batch(x, "x", dtype, backend, self.n_features)
        y = self._forward(x, backend)
        self._out_shape, self._out_dtype = y.shape, y.dtype
        return y

    def backward(self, grad):
        """Backward pass: accumulate parameter gradients, return d(loss)/d(input)."""
        backend = getattr(self, "_last_backend", None)
        if backend is None:
            raise RuntimeError("backward() called before a forward pass; call the module "
                               "on a batch first")
        return self._backward(self._check_grad(grad, backend), backend, True)

    def _check_grad(self, grad, backend):
        expected = self._out_shape
        grad = self._batch(grad, "grad", self._out_dtype, backend)
        if grad.shape != expected:
            raise ValueError(f"grad must have the shape of the last output {expected}, "
                             f"got {grad.shape}")
        return grad

    def _forward(self, x, backend):
        raise NotImplementedError

    def _backward(self, grad, backend, need_input_grad):
        raise NotImplementedError
