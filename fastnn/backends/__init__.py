"""Backends: objects with the same operations, selected by name.

* ``"numba"`` (the default): the hand-written Numba kernels in ``fastnn.kernels``.
* ``"numpy"``: every operation written plainly in NumPy; the reference for the tests and
  the NumPy/BLAS baseline for the benchmarks.
* ``"cuda"``: the optional GPU backend (``pip install "fastnn[cuda]"``): the kernels of
  ``fastnn.kernels.cuda`` on ``numba.cuda`` device arrays.  ``numba.cuda`` is imported only
  when this backend is asked for.

Select one globally with :func:`set_backend`, for a block of code with :func:`use_backend`
(a context manager; the selection holds for the current thread / asyncio task), or per model with
``Sequential(..., backend="numpy")``.
"""
import contextlib
import contextvars
import importlib

import numpy as np

from ..kernels.activations import ACTIVATIONS
from .memory import to_host

#: Every operation a backend provides, by name.  Signatures are those of the kernels.
OPERATIONS = (
    ("matmul", "matmul_nt", "matmul_tn", "bias_add", "bias_grad")
    + tuple(f"{name}_{way}" for name in ACTIVATIONS for way in ("forward", "backward"))
    + ("softmax_xent", "softmax_xent_soft", "bce_logits", "mse")
    + ("sgd_update", "sgd_momentum_update", "sum_of_squares", "scale_inplace", "clip_inplace")
    + ("dense_forward", "dense_backward")
    + ("argmax_matches", "argmax_matches_soft", "sign_matches", "abs_error_sum")
)

# name -> module that provides OPERATIONS; imported lazily so that e.g. CUDA is only
# imported when it is asked for.
_OPS_MODULES = {
    "numba": "fastnn.backends.numba_ops",
    "numpy": "fastnn.backends.numpy_ops",
    "cuda": "fastnn.backends.cuda_ops",
}


class BackendUnavailableError(RuntimeError):
    """A backend that this machine cannot run (e.g. "cuda" without a GPU or driver)."""


class Backend:
    """A named set of operations plus the few memory functions the layers need.

    The NumPy and Numba backends both keep arrays in host memory as NumPy arrays
    (``memory == "host"``), so models switch between them freely; an operations module
    with its own memory (the CUDA backend) provides ``MEMORY``, ``empty``, ``zeros``,
    ``asarray`` and ``to_numpy`` itself.
    """

    memory = "host"

    def __init__(self, name, ops):
        self.name = name
        missing = [op for op in OPERATIONS if not hasattr(ops, op)]
        if missing:
            raise NotImplementedError(f"backend {name!r} lacks operations: {', '.join(missing)}")
        for op in OPERATIONS:
            setattr(self, op, getattr(ops, op))
        if hasattr(ops, "MEMORY"):
            self.memory = ops.MEMORY
            for fn in ("empty", "zeros", "asarray", "to_numpy"):
                setattr(self, fn, getattr(ops, fn))

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def asarray(self, array, dtype):
        """A C-contiguous array of ``dtype`` in this backend's memory (no copy if possible)."""
        return np.ascontiguousarray(to_host(array), dtype=dtype)

    def to_numpy(self, array):
        """``array`` as a NumPy array (a copy if it lives on a device)."""
        return to_host(array)

    def __repr__(self):
        return f"<fastnn backend {self.name!r}>"


_instances = {}
_default = "numba"                                    # set_backend: every thread
_override = contextvars.ContextVar("fastnn_backend", default=None)   # use_backend: this context


def available_backends():
    """Names that :func:`get_backend` accepts."""
    return tuple(_OPS_MODULES)


def get_backend(backend=None):
    """The backend named ``backend`` (a name or a :class:`Backend`), or the current one."""
    if isinstance(backend, Backend):
        return backend
    name = backend if backend is not None else (_override.get() or _default)
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name or a Backend, got {type(name).__name__}")
    name = name.lower()
    if name not in _instances:
        if name not in _OPS_MODULES:
            raise ValueError(f"unknown backend {backend!r}; valid names: "
                             f"{', '.join(available_backends())}")
        _instances[name] = Backend(name, importlib.import_module(_OPS_MODULES[name]))
    return _instances[name]


def set_backend(backend):
    """Make ``backend`` ("numba", "numpy", ...) the process-wide default for models
    without their own backend (a :func:`use_backend` block still takes precedence)."""
    global _default
    _default = get_backend(backend).name


@contextlib.contextmanager
def use_backend(backend):
    """``with use_backend("numpy"): ...`` runs the block on that backend."""
    token = _override.set(get_backend(backend).name)
    try:
        yield get_backend()
    finally:
        _override.reset(token)


__all__ = ["Backend", "BackendUnavailableError", "OPERATIONS", "available_backends", "get_backend", "set_backend",
           "use_backend"]
