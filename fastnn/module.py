"""The building blocks every layer shares: :class:`Parameter` and :class:`Module`.

Training follows an explicit protocol, with no autograd graph::

    y = module(x)            # forward; the module keeps what its backward needs
    dx = module.backward(dy) # backward; parameter gradients are accumulated into p.grad

A module holds three kinds of state, registered as in PyTorch by assigning attributes:

* **parameters** (:class:`Parameter`: trained, with a gradient): ``self.weight = Parameter(...)``;
* **buffers** (arrays that are state but not trained, such as running statistics):
  ``self.register_buffer("running_mean", array)``; float buffers move with the
  parameters, integer buffers (counters) stay on the host;
* **children** (modules inside this one): ``self.block = Linear(...)``, or
  :meth:`add_module` for names that are not identifiers (``Sequential``'s ``"0"``, ``"1"``).

Everything that walks a model — :meth:`~Module.named_parameters`,
:meth:`~Module.named_buffers`, :meth:`~Module.state_dict`, :meth:`~Module.to`,
:meth:`~Module.astype`, :meth:`~Module.train` / :meth:`~Module.eval`, saving — goes through
these registries, so a new layer needs no code anywhere else.  Names are dotted paths
(``"0.weight"``, ``"encoder.norm.running_var"``).

Inputs have any rank ``(batch, ..., features)``; a layer that acts on the last axis
(``Linear``, the activations, the normalisations) treats the leading axes as rows
(:func:`rows`).  A layer implements ``_forward(x, backend)`` and
``_backward(dy, backend, need_input_grad)`` on validated, C-contiguous arrays, and
``output_shape(input_shape)`` when it changes the shape; the public ``__call__`` /
``backward`` validate and pick the backend.

Each module describes itself for saving: :meth:`~Module.get_config` returns its
constructor arguments (JSON), :meth:`~Module.from_config` rebuilds it, and every subclass
is registered by name in :data:`MODULE_TYPES` when it is defined, so the file format
(:mod:`fastnn.serialization`) lists no layer types.
"""
import numpy as np

from .backends import get_backend
from .backends.memory import astype, is_device_array, memory_of, place, to_host, zero_fill
from .validation import (as_array, as_dtype, as_indices, as_input, check_device_indices,
                         check_device_input)

#: Every Module subclass by name (``"Linear"``; classes defined outside fastnn also under
#: ``"package.module.Class"``), filled as the classes are defined; used to load files.
MODULE_TYPES = {}


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

    @property
    def size(self):
        return int(np.prod(self.data.shape))

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def rows(x):
    """``x`` of shape ``(..., features)`` as a 2-D ``(rows, features)`` view (no copy for
    the C-contiguous arrays layers receive): the shape the kernels work on."""
    return x if x.ndim == 2 else x.reshape(-1, tuple(x.shape)[-1])


def unrows(y, like):
    """The 2-D result ``y`` of a layer given the input ``like`` back in ``like``'s leading
    axes: ``(..., y.shape[1])`` (a view).  (``tuple(shape)``: device arrays of Numba's CUDA
    simulator have a shape type without negative indices.)"""
    return y if like.ndim == 2 else y.reshape(tuple(like.shape)[:-1] + (tuple(y.shape)[1],))


class Module:
    """Base class of layers and models.

    Attributes
    ----------
    training : bool
        Training mode (the default) or evaluation mode; :meth:`train` / :meth:`eval` set
        it for the module and all its children.  Layers such as Dropout and BatchNorm
        behave differently in the two.
    backend : str or None
        Backend name for this module; ``None`` follows :func:`fastnn.get_backend`.
    """

    training = True
    backend = None
    n_features = None      # expected width of the input's last axis, where known
    #: What the input holds: ``"features"`` (numbers, converted to the module's float
    #: dtype) or ``"indices"`` (integer ids, e.g. an Embedding's: kept as int64 and checked
    #: to lie in ``[0, index_bound)``); a Sequential takes both from its first layer.
    input_kind = "features"
    index_bound = None
    _memory = None         # where the arrays were last placed ("host", "cuda")

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        MODULE_TYPES.setdefault(cls.__name__, cls)
        if not cls.__module__.startswith("fastnn."):
            MODULE_TYPES[type_name(cls)] = cls

    # ------------------------------------------------------------------ registration
    def _registry(self, kind):
        registry = self.__dict__.get(kind)
        if registry is None:            # a subclass that did not call Module.__init__
            Module.__init__(self)
            registry = self.__dict__[kind]
        return registry

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._registry("_parameters")[name] = value
        elif isinstance(value, Module):
            self._registry("_modules")[name] = value
        else:
            for kind in ("_parameters", "_modules", "_buffers"):
                registry = self.__dict__.get(kind)
                if registry is not None and name in registry:
                    if value is None or kind == "_buffers":
                        registry[name] = value          # an absent bias, a new array
                    else:
                        raise TypeError(f"cannot assign a {type(value).__name__} to "
                                        f"{name!r}, registered as a {kind[1:-1]}")
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """Register ``array`` as state of this module (saved, moved and converted with
        the parameters, never trained), reachable as ``self.<name>``."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"buffer name must be a non-empty string without '.', got {name!r}")
        self._registry("_buffers")[name] = array
        object.__setattr__(self, name, array)

    def add_module(self, name, module):
        """Register ``module`` as a child called ``name`` (any string without '.')."""
        if not isinstance(module, Module):
            raise TypeError(f"{name!r} must be a fastnn Module, got {type(module).__name__}")
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"module name must be a non-empty string without '.', got {name!r}")
        self._registry("_modules")[name] = module
        if name.isidentifier():
            object.__setattr__(self, name, module)

    # ------------------------------------------------------------------ walking the tree
    def named_children(self):
        return [(n, m) for n, m in self._registry("_modules").items() if m is not None]

    def children(self):
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix=""):
        """``(dotted name, module)`` for this module (name ``prefix``) and all below it."""
        out = [(prefix, self)]
        for name, child in self.named_children():
            out += child.named_modules(f"{prefix}.{name}" if prefix else name)
        return out

    def modules(self):
        return [m for _, m in self.named_modules()]

    def _named(self, kind):
        out = []
        for path, module in self.named_modules():
            for name, value in module._registry(kind).items():
                if value is not None:
                    out.append((f"{path}.{name}" if path else name, value))
        return out

    def named_parameters(self):
        """``(dotted name, Parameter)`` of every parameter, this module's first, then its
        children's in registration order."""
        return self._named("_parameters")

    def parameters(self):
        """The trainable :class:`Parameter` objects, in a fixed order."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        """``(dotted name, array)`` of every buffer, in the order of named_parameters."""
        return self._named("_buffers")

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    def count_parameters(self):
        """Number of trainable scalars."""
        return sum(p.size for p in self.parameters())

    # ------------------------------------------------------------------ modes
    def train(self, mode=True):
        """Training mode (``mode=True``) or evaluation mode for this module and every
        child; returns ``self``.  ``fit`` trains in training mode and leaves the model in
        evaluation mode; in an explicit loop switch yourself, as in PyTorch."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode (``train(False)``): Dropout passes inputs through, BatchNorm
        uses its running statistics."""
        return self.train(False)

    # ------------------------------------------------------------------ dtype and memory
    @property
    def dtype(self):
        params = self.parameters()
        return params[0].dtype if params else None

    def astype(self, dtype):
        """Convert the parameters and the float buffers to float32/float64 in place;
        returns ``self``."""
        dtype = as_dtype(dtype)
        for p in self.parameters():
            if p.data.dtype != dtype:
                p.data = astype(p.data, dtype)
                p._grad = astype(p._grad, dtype)
        for module in self.modules():
            for name, array in list(module._registry("_buffers").items()):
                if array is not None and np.dtype(array.dtype).kind == "f" and array.dtype != dtype:
                    setattr(module, name, astype(array, dtype))
        return self

    def to(self, backend):
        """Run this module on ``backend`` ("numba", "numpy", "cuda"); returns ``self``.

        Parameters and buffers move into the backend's memory now (to the GPU for
        "cuda", back to the host for the others); an optimiser's state follows on its
        next step."""
        backend = get_backend(backend)
        for module in self.modules():
            object.__setattr__(module, "backend", backend.name)
        self._place_parameters(backend)
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def _resolve_backend(self):
        """The backend to run on, with the arrays moved into its memory if needed
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
        for module in self.modules():
            for name, array in list(module._registry("_buffers").items()):
                # float buffers follow the parameters; integer ones are counters that
                # Python reads every step (Dropout's stream offset): they stay on the host
                if (array is not None and np.dtype(array.dtype).kind == "f"
                        and memory_of(array) != backend.memory):
                    setattr(module, name, place(array, backend))
            object.__setattr__(module, "_memory", backend.memory)

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """{dotted name: NumPy copy} of every parameter and buffer (host arrays whatever
        the backend)."""
        return {name: np.array(to_host(a), copy=True)
                for name, a in [(n, p.data) for n, p in self.named_parameters()]
                + self.named_buffers()}

    def load_state_dict(self, state_dict):
        """Copy arrays from ``state_dict`` into the parameters and buffers (names and
        shapes must match).  Everything is checked before anything is written, so a
        mismatch leaves the module untouched; returns ``self``."""
        targets = {name: p.data for name, p in self.named_parameters()}
        targets.update(self.named_buffers())
        missing = sorted(set(targets) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(targets))
        if missing or unexpected:
            raise ValueError(f"state_dict does not match the model: missing {missing}, "
                             f"unexpected {unexpected}")
        arrays = {}
        for name, target in targets.items():
            value = np.asarray(state_dict[name])
            if value.shape != target.shape:
                raise ValueError(f"state_dict[{name!r}] has shape {value.shape}, the model's "
                                 f"array has shape {target.shape}")
            if value.dtype.kind not in "fiub" or (value.dtype.kind == "f"
                                                   and not np.isfinite(value).all()):
                raise ValueError(f"state_dict[{name!r}] must hold finite real numbers")
            arrays[name] = value
        from .backends.memory import assign
        for name, target in targets.items():
            assign(target, arrays[name])
        return self

    def get_config(self):
        """The constructor arguments that rebuild this module, JSON-serialisable (layers
        with arguments override this; a container includes its children's specs, see
        :func:`module_spec`)."""
        return {}

    @classmethod
    def from_config(cls, config):
        """The module :meth:`get_config` describes (weights freshly initialised)."""
        return cls(**config)

    # ------------------------------------------------------------------ shapes
    def output_shape(self, input_shape):
        """Shape of the output for an input of ``input_shape`` (``None`` for an unknown
        batch size); the default keeps the shape (element-wise layers)."""
        return tuple(input_shape)

    # ------------------------------------------------------------------ the protocol
    def _batch(self, x, name, dtype, backend, n_features=None):
        """A validated batch in ``backend``'s memory: host data is checked (and scanned
        for NaN/Inf) by :func:`as_input` before it is copied to a device; an array already
        on the device gets the shape and dtype checks."""
        if is_device_array(x):
            return place(check_device_input(x, name, dtype, n_features), backend)
        x = as_input(x, name, dtype, n_features)
        return x if backend.memory == "host" else backend.asarray(x, dtype)

    def _host_input(self, x, name):
        """``x`` validated on the host as this module's input: int64 ids in ``[0,
        index_bound)`` for ``input_kind == "indices"``, else a float batch of the module's
        dtype (``fit``/``predict`` validate whole data sets with it)."""
        if self.input_kind == "indices":
            return as_indices(x, name, self.index_bound)
        return as_input(x, name, self.dtype, self.n_features)

    def _indices(self, x, name, backend):
        """Validated ids in ``backend``'s memory: host data is range-checked before it is
        copied to a device; ids already on the device get the shape and dtype checks."""
        if is_device_array(x) and backend.memory != "host":
            return place(check_device_indices(x, name), backend)
        x = self._host_input(to_host(x), name)
        return x if backend.memory == "host" else backend.asarray(x, x.dtype)

    def __call__(self, x):
        """Forward pass on a ``(batch, ..., features)`` array; converts ``x`` to the
        module's dtype (a module whose ``input_kind`` is ``"indices"`` takes integer ids
        ``(batch, ...)`` instead).  Follows the module's mode (:meth:`train` / :meth:`eval`).

        The result lives where the backend computes: a NumPy array on the host backends,
        a device array on "cuda" (``fastnn.to_numpy`` or ``predict`` give host arrays)."""
        dtype = self.dtype
        if dtype is None:       # the input's precision (a pandas frame's by its columns)
            x = x if is_device_array(x) else as_array(x, "x")
            dt = np.dtype(x.dtype) if is_device_array(x) else np.asarray(x).dtype
            dtype = dt if dt in (np.float32, np.float64) else np.float32
        backend = self._last_backend = self._resolve_backend()
        if self.input_kind == "indices":
            x = self._indices(x, "x", backend)
        else:
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
        raise NotImplementedError(f"{type(self).__name__} does not implement _forward")

    def _backward(self, grad, backend, need_input_grad):
        raise NotImplementedError(f"{type(self).__name__} does not implement _backward")


def type_name(cls):
    """The name a module class is saved under: ``"Linear"`` for fastnn's own layers,
    ``"package.module.Class"`` for a class defined elsewhere (import it before loading)."""
    if cls.__module__.startswith("fastnn."):
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def module_spec(module):
    """``{"type": ..., "config": ...}``: what rebuilds ``module`` (see
    :func:`module_from_spec`)."""
    return {"type": type_name(type(module)), "config": module.get_config()}


def module_from_spec(spec):
    """The module a :func:`module_spec` describes; ``KeyError`` for an unknown type."""
    cls = MODULE_TYPES.get(spec.get("type"))
    if cls is None:
        raise KeyError(f"unknown module type {spec.get('type')!r} (a layer defined in your "
                       "own code must be imported before the file is loaded)")
    return cls.from_config(dict(spec.get("config") or {}))
