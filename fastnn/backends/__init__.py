"""Backends: objects with the same operations, selected by name.

* ``"numpy"``: every operation written plainly in NumPy: the reference the tests compare
  against, the NumPy/BLAS baseline of the benchmarks, and the base the others extend.
* ``"numba"`` (the default): the NumPy backend with its hot paths replaced by the
  hand-written Numba kernels of ``fastnn.kernels`` (same memory, same results).
* ``"cuda"``: the optional GPU backend (``pip install "fastnn[cuda]"``): the kernels of
  ``fastnn.kernels.cuda`` on ``numba.cuda`` device arrays.  ``numba.cuda`` is imported only
  when this backend is asked for.

Select one globally with :func:`set_backend`, for a block of code with :func:`use_backend`
(a context manager; the selection holds for the current thread / asyncio task), or per model with
``Sequential(..., backend="numpy")``.

A backend is a chain of operations modules, searched in order (:data:`_OPS_MODULES`):
``numba`` is ``numba_ops`` over ``numpy_ops``, so a new operation written once in NumPy
works on the CPU at once and gets a kernel when it is worth one.  A backend whose memory
is its own (``cuda``) has no host fallback: an operation it lacks raises
:class:`NotImplementedError` naming the operation and the backend when it is *used*,
never when the backend is built, so one missing kernel does not take the backend away.
"""
import contextlib
import contextvars
import importlib

import numpy as np

from ..interrupts import plain_interrupts
from ..kernels.activations import ACTIVATIONS
from .memory import to_host

#: Every operation a backend provides, by name.  Signatures are those of the kernels.
OPERATIONS = (
    ("matmul", "matmul_nt", "matmul_tn", "bias_add", "bias_grad")
    + tuple(f"{name}_{way}" for name in ACTIVATIONS for way in ("forward", "backward"))
    + ("softmax_xent", "softmax_xent_soft", "bce_logits", "mse")
    + ("softmax_xent_weighted", "softmax_xent_soft_weighted", "bce_logits_weighted",
       "mse_weighted")
    + ("sgd_update", "sgd_momentum_update", "sum_of_squares", "scale_inplace", "clip_inplace")
    + ("adam_update", "rmsprop_update")
    + ("dense_forward", "dense_backward")
    + ("layer_norm_forward", "layer_norm_backward", "batch_norm_forward_train",
       "batch_norm_forward_eval", "batch_norm_backward", "batch_norm_backward_eval",
       "dropout_forward", "dropout_backward")
    + ("split_heads", "merge_heads", "add")
    + ("attention_forward", "attention_backward")
    + ("embedding_forward", "embedding_backward", "mean_pool_forward", "mean_pool_backward")
    + ("argmax_matches", "argmax_matches_soft", "sign_matches", "abs_error_sum",
       "squared_error_sum", "top_k_matches", "top_k_matches_soft")
)

# name -> the modules that provide its operations, most specific first; imported lazily
# so that e.g. CUDA is only imported when it is asked for.
_OPS_MODULES = {
    "numba": ("fastnn.backends.numba_ops", "fastnn.backends.numpy_ops"),
    "numpy": ("fastnn.backends.numpy_ops",),
    "cuda": ("fastnn.backends.cuda_ops",),
}


class BackendUnavailableError(RuntimeError):
    """A backend that this machine cannot run (e.g. "cuda" without a GPU or driver)."""


class Backend:
    """A named set of operations plus the few memory functions the layers need.

    ``modules``: the operations modules, most specific first; an operation is taken from
    the first that defines it (see the module docstring).  The host backends keep arrays
    in host memory as NumPy arrays (``memory == "host"``), so models switch between them
    freely; an operations module with its own memory (the CUDA backend) provides
    ``MEMORY``, ``empty``, ``zeros``, ``asarray`` and ``to_numpy`` itself.  The
    operations of a module that sets ``NUMBA_CPU_KERNELS`` raise Ctrl-C as a plain
    ``KeyboardInterrupt`` (:func:`fastnn.interrupts.plain_interrupts`).
    """

    memory = "host"

    def __init__(self, name, modules):
        self.name = name
        self.provided_by = {}       # operation -> name of the module that provides it
        for op in OPERATIONS:
            for module in modules:
                if hasattr(module, op):
                    operation = getattr(module, op)
                    if getattr(module, "NUMBA_CPU_KERNELS", False):
                        operation = plain_interrupts(operation)
                    setattr(self, op, operation)
                    self.provided_by[op] = module.__name__
                    break
        own = modules[0]
        if hasattr(own, "MEMORY"):
            self.memory = own.MEMORY
            for fn in ("empty", "zeros", "asarray", "to_numpy"):
                setattr(self, fn, getattr(own, fn))

    def __getattr__(self, op):
        # only reached for names not set in __init__: an operation this backend lacks
        if op in OPERATIONS:
            raise NotImplementedError(
                f"the {self.name!r} backend has no {op!r} operation; run this model on "
                f"another backend (model.to(\"numba\") or \"numpy\")")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {op!r}")

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
        _instances[name] = Backend(name, [importlib.import_module(m)
                                          for m in _OPS_MODULES[name]])
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
