"""``Sequential``: a stack of layers with the explicit training protocol and the
Keras-style convenience methods of :class:`fastnn.training.TrainingMixin`."""
import numpy as np

from .init import make_rng
from .layers import Activation, Linear
from .module import Module, module_from_spec, module_spec
from .training import TrainingMixin
from .validation import as_dtype


def _stages(layers):
    """``[(layer, fused activation or None)]``: a Linear layer followed by a fusable
    activation (:attr:`Activation.fusable`) runs as one stage, the activation applied in
    the Linear layer's product epilogue."""
    stages, i = [], 0
    while i < len(layers):
        layer, following = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if (isinstance(layer, Linear) and isinstance(following, Activation)
                and following.fusable):
            stages.append((layer, following))
            i += 2
        else:
            stages.append((layer, None))
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
    results are those of the separate layers.  Inputs may have any rank
    ``(batch, ..., features)``; each layer acts on the last axis.

    Examples
    --------
    >>> model = Sequential(Linear(784, 256, init="he_normal"), ReLU(), Linear(256, 10), seed=0)
    >>> logits = model(x)                     # forward keeps what backward needs
    >>> loss, grad = CrossEntropyLoss()(logits, y)
    >>> opt.zero_grad(); model.backward(grad); opt.step()
    """

    def __init__(self, *layers, dtype=None, backend=None, seed=None):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, not a fastnn layer")
            self.add_module(str(i), layer)
        self.layers = tuple(layers)
        self._stages = _stages(self.layers)
        widths = [(i, l) for i, l in enumerate(self.layers) if isinstance(l, Linear)]
        for (i, a), (j, b) in zip(widths, widths[1:]):
            if a.out_features != b.in_features:
                raise ValueError(f"layer {i} outputs {a.out_features} features but layer {j} "
                                 f"expects {b.in_features}")
        self.input_kind, self.index_bound = layers[0].input_kind, layers[0].index_bound
        if self.input_kind == "indices":        # ids (batch, ...) in: no width to check
            self.n_features = None
            self.n_outputs = self.output_shape((1, 1))[-1]
        else:
            self.n_features = next((l.n_features for l in self.layers if l.n_features), None)
            self.n_outputs = (self.output_shape((1, self.n_features))[-1]
                              if self.n_features else None)
        if dtype is None:
            dtype = next((p.dtype for p in self.parameters()), np.dtype(np.float32))
        self._dtype = as_dtype(dtype)
        self.astype(self._dtype)
        if backend is not None:
            self.to(backend)
        if seed is not None:
            rng = make_rng(seed)
            for layer in self.modules():
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters(rng)
            self.astype(self._dtype)

    # ------------------------------------------------------------------ structure
    @property
    def dtype(self):
        return self._dtype

    def astype(self, dtype):
        self._dtype = as_dtype(dtype)
        return super().astype(self._dtype)

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def get_config(self):
        return {"layers": [module_spec(layer) for layer in self.layers],
                "dtype": str(self._dtype)}

    @classmethod
    def from_config(cls, config):
        return cls(*[module_from_spec(spec) for spec in config["layers"]],
                   dtype=config.get("dtype"))

    def summary(self, input_shape=None, file=None):
        """Print (and return) a table of the layers, their output shapes and parameter
        counts, as Keras's ``model.summary()``; ``input_shape`` defaults to
        ``(None, n_features)`` (``None``: any batch size)."""
        shape = tuple(input_shape) if input_shape is not None else (None, self.n_features)
        lines = [f"{'layer':<28} {'output shape':<24} {'parameters':>12}", "-" * 66]
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            lines.append(f"{f'{i} ' + type(layer).__name__:<28} {str(shape):<24} "
                         f"{layer.count_parameters():>12,}")
        lines += ["-" * 66, f"total parameters: {self.count_parameters():,} "
                  f"({self.dtype}, {self.count_parameters() * self.dtype.itemsize:,} bytes)",
                  f"buffers: {sum(int(np.prod(b.shape)) for b in self.buffers()):,} values"]
        text = "\n".join(lines)
        print(text, file=file)
        return text

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __repr__(self):
        body = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({body}\n)"

    # ------------------------------------------------------------------ protocol
    def _head_stages(self, logits):
        """The stages to run: all of them, or (``logits``) all but the last layer, a
        Sigmoid/Softmax that ``compile`` fused into the loss (see :meth:`compile`)."""
        if not logits:
            return self._stages
        layer, activation = self._stages[-1]
        return self._stages[:-1] if activation is None else \
            (*self._stages[:-1], (layer, None))

    def _forward(self, x, backend, logits=False):
        for layer, activation in self._head_stages(logits):
            x = layer._forward(x, backend) if activation is None else \
                layer._forward(x, backend, activation)
        return x

    def _backward(self, grad, backend, need_input_grad, logits=False):
        stages = self._head_stages(logits)
        for i in range(len(stages) - 1, -1, -1):
            # The first stage's input gradient is only computed when someone asks for it.
            grad = stages[i][0]._backward(grad, backend, need_input_grad or i > 0)
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
        """Write the architecture, weights, buffers and (if compiled) loss, metrics and
        optimiser state to ``path`` atomically; read it back with :func:`fastnn.load`.
        The format is a versioned, pickle-free ``.npz`` (see :mod:`fastnn.serialization`)."""
        from .serialization import save_model
        save_model(self, path, include_optimizer)

    def export_onnx(self, path, input_shape=None, opset=17):
        """Write the model in evaluation mode (Dropout the identity, BatchNorm1d's running
        statistics) as an ONNX graph to ``path``, for onnxruntime and other servers; the
        output is ``model(x)``'s (raw outputs, not ``predict``'s labels), of the model's
        dtype, with a dynamic batch axis (and sequence axis).  Needs ``pip install
        "fastnn[onnx]"``; see :mod:`fastnn.onnx_export` (``input_shape``: ``None`` for a
        dynamic axis; ``opset`` 17 or later).  Returns the ``onnx.ModelProto``."""
        from .onnx_export import export_onnx
        return export_onnx(self, path, input_shape, opset)
