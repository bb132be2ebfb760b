"""``Sequential``: a stack of layers with the explicit training protocol and the
Keras-style convenience methods of :class:`fastnn.training.TrainingMixin`."""
import numpy as np

from .backends.memory import assign, to_host
from .init import make_rng
from .kernels.dense import FROM_OUTPUT
from .layers import Activation, Linear
from .module import Module
from .training import TrainingMixin
from .validation import as_dtype


def _fusable(layer, following):
    """A Linear layer followed by an activation whose derivative is a function of its
    output runs as one fused stage."""
    if not (isinstance(layer, Linear) and isinstance(following, Activation)):
        return False
    if following.name not in FROM_OUTPUT:
        return False
    return following.params.get("alpha", 0.0) >= 0   # y > 0 <=> z > 0 needs alpha >= 0


class _DenseStage:
    """``y = f(x @ W + b)`` as one stage: the bias and activation run in the GEMM
    epilogue, and the backward computes the activation derivative and the bias gradient
    in one pass before the two gradient GEMMs (see ``fastnn.kernels.dense``)."""

    def __init__(self, linear, activation):
        self.linear, self.activation = linear, activation

    def _forward(self, x, backend):
        lin = self.linear
        out = backend.empty((x.shape[0], lin.out_features), x.dtype)
        backend.dense_forward(x, lin.weight.data, None if lin.bias is None else lin.bias.data,
                              out, self.activation.name, *self.activation._args)
        self._x, self._y = x, out
        return out

    def _backward(self, grad, backend, need_input_grad):
        lin = self.linear
        dw, accumulate_w = lin.weight._grad_for_backward()
        db, accumulate_b = (None, False) if lin.bias is None else lin.bias._grad_for_backward()
        dz = backend.empty(grad.shape, grad.dtype)
        dx = backend.empty(self._x.shape, grad.dtype) if need_input_grad else None
        backend.dense_backward(grad, self._x, lin.weight.data, self._y, dz, dw, db, dx,
                               accumulate_w, accumulate_b, self.activation.name,
                               *self.activation._args)
        return dx


def _stages(layers):
    stages, i = [], 0
    while i < len(layers):
        if i + 1 < len(layers) and _fusable(layers[i], layers[i + 1]):
            stages.append(_DenseStage(layers[i], layers[i + 1]))
            i += 2
        else:
            stages.append(layers[i])
            i += 1
    return stages


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

    Notes
    -----
    A ``Linear`` layer directly followed by an element-wise activation whose derivative
    is a function of its output (all but GELU and Gaussian) runs as one fused stage; the
    results are those of the separate layers.

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
        self.layers = tuple(layers)
        self._stages = _stages(self.layers)
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
        """Run this model on ``backend`` ("numba", "numpy", "cuda"); returns ``self``.

        Parameters move into the backend's memory now (to the GPU for "cuda", back to
        the host for the others); an optimiser's state follows on its next step."""
        from .backends import get_backend
        backend = get_backend(backend)
        self.backend = backend.name
        self._place_parameters(backend)
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
        for stage in self._stages:
            x = stage._forward(x, backend)
        return x

    def _backward(self, grad, backend, need_input_grad):
        stages = self._stages
        for i in range(len(stages) - 1, -1, -1):
            # The first stage's input gradient is only computed when someone asks for it.
            grad = stages[i]._backward(grad, backend, need_input_grad or i > 0)
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
        return self._backward(self._check_grad(grad, backend), backend, input_grad)

    # ------------------------------------------------------------------ state
    def save(self, path, include_optimizer=True):
        """Write the architecture, weights and (if compiled) loss, metrics and optimiser
        state to ``path`` atomically; read it back with :func:`fastnn.load`.  The format
        is a versioned, pickle-free ``.npz`` (see :mod:`fastnn.serialization`)."""
        from .serialization import save_model
        save_model(self, path, include_optimizer)

    def state_dict(self):
        """{"<layer index>.<name>": NumPy copy of the array} for every parameter (host
        arrays whatever the backend)."""
        return {name: np.array(to_host(p.data), copy=True) for name, p in self.named_parameters()}

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
            assign(p.data, arrays[name])
        return self
