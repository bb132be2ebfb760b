"""``Sequential``: a stack of layers with the explicit training protocol and the
Keras-style convenience methods of :class:`fastnn.training.TrainingMixin`."""
import numpy as np

from .init import make_rng
from .layers import Linear
from .module import Module
from .training import TrainingMixin
from .validation import as_dtype


class Sequential(TrainingMixin, Module):
    """Layers applied in order.

    Parameters
    ----------
    *layers : Module
    dtype : "float32" or "float64", optional
        Precision of every parameter; default: that of the first layer with parameters.
        Inputs are converted to it (see the README's input rules).
    backend : str, optional
        "numba" or "numpy"; default: follow :func:`fastnn.get_backend` at call time.
    seed : int, optional
        Re-draw every layer's initial weights from this seed, in order, so the same seed
        always gives the same network.

    Examples
    --------
    >>> model = Sequential(Linear(784, 256, init="he_normal"), ReLU(), Linear(256, 10), seed=0)
    >>> logits = model(x)                     # forward keeps what backward needs
    >>> loss, grad = CrossEntropyLoss()(logits, y)
    >>> opt.zero_grad(); model.backward(grad); opt.step()
    """

    def __init__(self, *layers, dtype=None, backend=None, seed=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, not a fastnn layer")
        self.layers = list(layers)
        widths = [(i, l) for i, l in enumerate(self.layers) if isinstance(l, Linear)]
        for (i, a), (j, b) in zip(widths, widths[1:]):
            if a.out_features != b.in_features:
                raise ValueError(f"layer {i} outputs {a.out_features} features but layer {j} "
                                 f"expects {b.in_features}")
        self.n_features = widths[0][1].in_features if widths else None
        self.n_outputs = widths[-1][1].out_features if widths else None
        if dtype is None:
            dtype = next((p.dtype for p in self.parameters()), np.dtype(np.float32))
        self._dtype = as_dtype(dtype)
        self.astype(self._dtype)
        if backend is not None:
            self.to(backend)
        if seed is not None:
            rng = make_rng(seed)
            for layer in self.layers:
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters(rng)
            self.astype(self._dtype)

    # ------------------------------------------------------------------ structure
    @property
    def dtype(self):
        return self._dtype

    def astype(self, dtype):
        self._dtype = as_dtype(dtype)
        for layer in self.layers:
            layer.astype(self._dtype)
        return self

    def to(self, backend):
        """Run this model on ``backend`` ("numba", "numpy"); returns ``self``."""
        from .backends import get_backend
        self.backend = get_backend(backend).name
        return self

    def named_parameters(self):
        return [(f"{i}.{name}", p) for i, layer in enumerate(self.layers)
                for name, p in layer.named_parameters()]

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __repr__(self):
        body = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({body}\n)"

    # ------------------------------------------------------------------ protocol
    def _forward(self, x, backend):
        for layer in self.layers:
            x = layer._forward(x, backend)
        return x

    def _backward(self, grad, backend, need_input_grad):
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            # The first layer's input gradient is only computed when someone asks for it.
            grad = self.layers[i]._backward(grad, backend, need_input_grad or i > 0)
        return grad

    def backward(self, grad, input_grad=False):
        """Backpropagate ``grad`` = d(loss)/d(output of the last forward).

        Parameter gradients are accumulated into each ``p.grad``.  Returns
        d(loss)/d(input) when ``input_grad`` is true, else None (saves a matrix product).
        """
        backend = getattr(self, "_last_backend", None)
        if backend is None:
            raise RuntimeError("backward() called before a forward pass; call the model "
                               "on a batch first")
        return self._backward(self._check_grad(grad), backend, input_grad)

    # ------------------------------------------------------------------ state
    def save(self, path, include_optimizer=True):
        """Write the architecture, weights and (if compiled) loss, metrics and optimiser
        state to ``path`` atomically; read it back with :func:`fastnn.load`.  The format
        is a versioned, pickle-free ``.npz`` (see :mod:`fastnn.serialization`)."""
        from .serialization import save_model
        save_model(self, path, include_optimizer)

    def state_dict(self):
        """{"<layer index>.<name>": copy of the array} for every parameter."""
        return {name: np.array(p.data, copy=True) for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict):
        """Copy arrays from ``state_dict`` into the parameters (shapes must match).

        Everything is checked before anything is written, so a mismatch leaves the
        model untouched.
        """
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(params))
        if missing or unexpected:
            raise ValueError(f"state_dict does not match the model: missing {missing}, "
                             f"unexpected {unexpected}")
        arrays = {}
        for name, p in params.items():
            value = np.asarray(state_dict[name])
            if value.shape != p.shape:
                raise ValueError(f"state_dict[{name!r}] has shape {value.shape}, the model's "
                                 f"parameter has shape {p.shape}")
            if value.dtype.kind not in "fiu" or not np.isfinite(value).all():
                raise ValueError(f"state_dict[{name!r}] must hold finite real numbers")
            arrays[name] = value
        for name, p in params.items():
            p.data[...] = arrays[name]
        return self
