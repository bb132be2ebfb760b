"""Export a model to ONNX for serving: ``model.export_onnx("model.onnx")``.

The graph is the model in evaluation mode, whatever its current mode: Dropout is the
identity and BatchNorm1d uses its running statistics, as ``model.eval(); model(x)``.  The
output is ``model(x)``'s raw output (logits; a final Sigmoid/Softmax layer is included),
not ``predict``'s labels.  Inputs and outputs keep the model's dtype (float32 or float64;
ids are int64); the batch axis is dynamic (``dim_param="batch"``), and so is the sequence
axis of sequence models (``"seq"``).  Opset 17 by default (``LayerNormalization``); a
later opset may be asked for (20 and later export a float32 model's GELU as ``Gelu``).

Precision: the graph computes fastnn's formulas in the model's dtype, so onnxruntime
matches ``model(x)`` to rounding.  ONNX attributes are float32: where a float64 model's
parameter (an ``eps`` of 1e-5, a leaky ReLU's 0.01) is not a float32 number, the layer is
written with elementary operators instead of the native one; likewise the operators
onnxruntime lacks in float64 (``Elu``; ``Erf``, for GELU: :func:`.onnx_activations._erfc_float64`).

How a layer exports is one small function per layer class in :data:`EXPORTERS`, written
with the :func:`exports` decorator: ``fn(graph, module, x) -> output name``, where ``x``
is a :class:`Value` (name and shape, ``None`` for a dynamic axis) and ``graph`` an
:class:`OnnxGraph` that makes nodes and constants.  Containers (``Sequential``,
``Residual``, ``TransformerEncoderLayer``) export their children through
``graph.emit(child, x)``: the same walk over the module tree that saving does through
``get_config`` (:func:`fastnn.module.module_spec`), so a new layer adds one entry here and
touches nothing else; a layer of your own can register its function the same way.
Activations export by registry name (:data:`.onnx_activations.ACTIVATIONS`, one entry
per name of ``fastnn.kernels.activation_specs``, each matching that record's formula).

``onnx`` is imported only here, when a model is exported (``pip install "fastnn[onnx]"``);
``import fastnn`` never imports it.
"""
import math
from dataclasses import dataclass

import numpy as np

from .backends.memory import to_host
from .dropout import Dropout
from .layers import Activation, Linear
from .model import Sequential
from .norm import BatchNorm1d, LayerNorm
from .onnx_activations import (  # noqa: F401  (re-exported: register yours here too)
    ACTIVATIONS, _exact_attribute, exports_activation)
from .sequence import (Embedding, FirstToken, MeanPool, PositionalEmbedding, Residual,
                       SinusoidalPositionalEncoding, _pool_axis, sinusoid_table)
from .transformer import MultiHeadAttention, TransformerEncoderLayer

#: The default opset: the first with LayerNormalization.
DEFAULT_OPSET = 17
_INSTALL = 'pip install "fastnn[onnx]"'


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("model.export_onnx needs the onnx package; install it with "
                          f"{_INSTALL}") from None
    return onnx


@dataclass(frozen=True)
class Value:
    """A tensor of the graph: its ``name`` and its ``shape`` (``None`` for a dynamic
    axis)."""
    name: str
    shape: tuple


@dataclass(frozen=True)
class Exporter:
    """How one layer class exports: ``emit(graph, module, x) -> output name``;
    ``sequence``: the layer takes ``(batch, seq, features)`` inputs (a features model
    holding one is exported with a dynamic sequence axis by default)."""
    emit: object
    sequence: bool = False


#: Layer class -> :class:`Exporter`.
EXPORTERS = {}

def exports(cls, sequence=False):
    """Decorator: register ``fn(graph, module, x)`` as the ONNX export of ``cls`` (and of
    its subclasses that do not override ``_forward``)."""
    def register(fn):
        EXPORTERS[cls] = Exporter(fn, sequence)
        return fn
    return register


def exporter_of(module):
    """The :class:`Exporter` of ``module``'s class: its own entry, or that of the nearest
    base class when the class does not change the forward pass (``ReLU`` is an
    ``Activation``); ``None`` when there is none."""
    cls = type(module)
    for base in cls.__mro__:
        entry = EXPORTERS.get(base)
        if entry is not None:
            return entry if base is cls or cls._forward is base._forward else None
    return None


class OnnxGraph:
    """A graph under construction: nodes, constants (initializers) and the walk.

    ``dtype`` is the model's float dtype; :meth:`const` converts numbers to it, so a
    float32 model stays float32 throughout.
    """

    def __init__(self, onnx, model, dtype, opset):
        self.onnx, self.dtype, self.opset = onnx, np.dtype(dtype), opset
        self.nodes, self.initializers, self._names = [], [], set()
        self._consts = {}
        self._paths = {id(m): name for name, m in model.named_modules()}

    # ------------------------------------------------------------------ names
    def fresh(self, hint):
        """A name not used yet, from ``hint``."""
        name, i = hint, 1
        while name in self._names:
            name, i = f"{hint}_{i}", i + 1
        self._names.add(name)
        return name

    def path(self, module):
        """``module``'s dotted name in the model (``"2.self_attn"``), as in state_dict."""
        return self._paths.get(id(module), type(module).__name__)

    # ------------------------------------------------------------------ building
    def node(self, op, inputs, hint=None, **attributes):
        """Add a node; returns its (single) output's name."""
        output = self.fresh(hint or op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [output],
                                                     name=self.fresh(f"{op}_node"),
                                                     **attributes))
        return output

    def array(self, name, array):
        """An initializer holding ``array`` as it is (its own dtype); returns its name."""
        name = self.fresh(name)
        # (np.array, not np.ascontiguousarray: that makes a 0-d array 1-d)
        self.initializers.append(self.onnx.numpy_helper.from_array(
            np.array(array, order="C"), name))
        return name

    def tensor(self, module, attribute):
        """The parameter or buffer ``module.<attribute>`` as an initializer named like its
        state_dict entry (``"0.weight"``), in the model's dtype."""
        value = getattr(module, attribute)
        value = getattr(value, "data", value)
        array = np.asarray(to_host(value), dtype=self.dtype)
        return self.array(f"{self.path(module)}.{attribute}", array)

    def const(self, value, dtype=None):
        """A constant (a number or a list) of the model's dtype, or of ``dtype``;
        identical constants are shared."""
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.array("const", array)
        return self._consts[key]

    def ints(self, values):
        """A 1-D int64 constant (shapes, axes, indices)."""
        return self.const(list(values), np.int64)

    def reduce_mean(self, x, axes, keepdims):
        """``ReduceMean`` over ``axes`` (an attribute up to opset 17, an input after)."""
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.ints(axes)], keepdims=int(keepdims))
        return self.node("ReduceMean", [x], axes=list(axes), keepdims=int(keepdims))

    def emit(self, module, x):
        """Export ``module`` applied to the :class:`Value` ``x``; returns its output
        :class:`Value`."""
        entry = exporter_of(module)
        if entry is None:
            raise NotImplementedError(
                f"{type(module).__name__} (layer {self.path(module)!r}) has no ONNX export. "
                f"fastnn exports {', '.join(sorted(c.__name__ for c in EXPORTERS))}; for a "
                "layer of your own, register how it exports with "
                "@fastnn.onnx_export.exports(YourLayer) (see that module's docstring)")
        shape = tuple(module.output_shape(x.shape))
        return Value(entry.emit(self, module, x), shape)


# ---------------------------------------------------------------------- layers
@exports(Activation)
def _activation(graph, module, x):
    fn = ACTIVATIONS.get(module.name)
    if fn is None:
        raise NotImplementedError(f"activation {module.name!r} (layer {graph.path(module)!r})"
                                  " has no ONNX export")
    return fn(graph, x.name, module.params)


@exports(Linear)
def _linear(graph, module, x):
    weight = graph.tensor(module, "weight")
    bias = None if module.bias is None else graph.tensor(module, "bias")
    if len(x.shape) == 2:
        return graph.node("Gemm", [x.name, weight] + ([bias] if bias else []))
    # Gemm is 2-D only: (batch, ..., in) @ (in, out) broadcasts with MatMul
    z = graph.node("MatMul", [x.name, weight])
    return z if bias is None else graph.node("Add", [z, bias])


@exports(Sequential)
def _sequential(graph, module, x):
    for layer in module.layers:
        x = graph.emit(layer, x)
    return x.name


@exports(Residual)
def _residual(graph, module, x):
    return graph.node("Add", [x.name, graph.emit(module.module, x).name])


@exports(Dropout)
def _dropout(graph, module, x):
    return x.name           # evaluation mode: the identity


def _affine(graph, module, xhat):
    if module.weight is not None:
        xhat = graph.node("Mul", [xhat, graph.tensor(module, "weight")])
    if module.bias is not None:
        xhat = graph.node("Add", [xhat, graph.tensor(module, "bias")])
    return xhat


def _normalised(graph, module, centred, var):
    """``centred / sqrt(var + eps)``, scaled and shifted by the module's affine."""
    std = graph.node("Sqrt", [graph.node("Add", [var, graph.const(module.eps)])])
    return _affine(graph, module, graph.node("Div", [centred, std]))


def _moments(graph, x, axes):
    """``(x - mean, biased variance)`` over ``axes`` (kept)."""
    centred = graph.node("Sub", [x, graph.reduce_mean(x, axes, True)])
    return centred, graph.reduce_mean(graph.node("Mul", [centred, centred]), axes, True)


def _param_or_fill(graph, module, attribute, n, fill):
    return graph.tensor(module, attribute) if getattr(module, attribute) is not None \
        else graph.const(np.full(n, fill))


@exports(LayerNorm)
def _layer_norm(graph, module, x):
    if not _exact_attribute(graph, module.eps):
        # a float64 model's eps (1e-5) is not a float32 attribute: the same formula
        return _normalised(graph, module, *_moments(graph, x.name, [len(x.shape) - 1]))
    scale = _param_or_fill(graph, module, "weight", module.normalized_shape, 1.0)
    bias = [graph.tensor(module, "bias")] if module.bias is not None else []
    # stash_type: the statistics' precision (the spec's default is float32)
    stash = graph.onnx.helper.np_dtype_to_tensor_dtype(graph.dtype)
    return graph.node("LayerNormalization", [x.name, scale] + bias, axis=-1,
                      epsilon=module.eps, stash_type=stash)


@exports(BatchNorm1d)
def _batch_norm(graph, module, x):
    rank = len(x.shape)
    if not module.track_running_stats:
        # no running statistics: evaluation mode uses the batch's, per feature over every
        # other axis, as fastnn does
        return _normalised(graph, module, *_moments(graph, x.name, list(range(rank - 1))))
    mean, var = graph.tensor(module, "running_mean"), graph.tensor(module, "running_var")
    if not _exact_attribute(graph, module.eps):
        # float64 eps: fastnn's formula, (x - running_mean) / sqrt(running_var + eps)
        return _normalised(graph, module, graph.node("Sub", [x.name, mean]), var)
    # BatchNormalization normalises axis 1 (channels): fastnn's features are the last axis
    n = module.num_features
    inputs = [_param_or_fill(graph, module, "weight", n, 1.0),
              _param_or_fill(graph, module, "bias", n, 0.0), mean, var]
    if rank == 2:
        return graph.node("BatchNormalization", [x.name] + inputs, epsilon=module.eps)
    to_channels = [0, rank - 1] + list(range(1, rank - 1))
    back = [0] + list(range(2, rank)) + [1]
    y = graph.node("BatchNormalization",
                   [graph.node("Transpose", [x.name], perm=to_channels)] + inputs,
                   epsilon=module.eps)
    return graph.node("Transpose", [y], perm=back)


def _check_sequence_input(graph, module, x):
    if len(x.shape) != 3:
        raise ValueError(f"{type(module).__name__} (layer {graph.path(module)!r}) needs "
                         f"(batch, seq, features) inputs, the export gives it shape "
                         f"{x.shape}; pass export_onnx(path, input_shape=(None, None, "
                         "features))")


def _sequence_length(graph, x):
    """The input's sequence length ``[seq]`` (1-D int64), read at run time."""
    return graph.node("Shape", [x.name], start=1, end=2)


def _first_positions(graph, table, x):
    """``table[:seq]``, the first rows of a ``(max_len, dim)`` table."""
    return graph.node("Slice", [table, graph.ints([0]), _sequence_length(graph, x),
                                graph.ints([0])])


@exports(Embedding)
def _embedding(graph, module, x):
    return graph.node("Gather", [graph.tensor(module, "weight"), x.name], axis=0)


@exports(PositionalEmbedding, sequence=True)
def _positional_embedding(graph, module, x):
    _check_sequence_input(graph, module, x)
    table = _first_positions(graph, graph.tensor(module, "weight"), x)
    return graph.node("Add", [x.name, table])


@exports(SinusoidalPositionalEncoding, sequence=True)
def _sinusoidal(graph, module, x):
    _check_sequence_input(graph, module, x)
    # the layer's own table: float64 values cast to the model's dtype
    values = np.asarray(sinusoid_table(module.max_len, module.dim), dtype=graph.dtype)
    table = graph.array(f"{graph.path(module)}.table", values)
    return graph.node("Add", [x.name, _first_positions(graph, table, x)])


@exports(MeanPool, sequence=True)
def _mean_pool(graph, module, x):
    axis = _pool_axis(module.axis, len(x.shape), "MeanPool")
    return graph.reduce_mean(x.name, [axis], False)


@exports(FirstToken, sequence=True)
def _first_token(graph, module, x):
    return graph.node("Gather", [x.name, graph.const(0, np.int64)], axis=1)


@exports(MultiHeadAttention, sequence=True)
def _attention(graph, module, x):
    _check_sequence_input(graph, module, x)
    h, d, e = module.num_heads, module.head_dim, module.embed_dim
    qkv = graph.emit(module.in_proj, x).name                       # (b, s, 3e)
    # fastnn's split_heads: column (g*H + h)*D + i of the projection is part g (q, k, v)
    # of head h; (b, s, 3, h, d) then one part each
    qkv = graph.node("Reshape", [qkv, graph.ints([0, 0, 3, h, d])])
    q, k, v = (graph.node("Gather", [qkv, graph.const(g, np.int64)], axis=2)
               for g in range(3))                                   # (b, s, h, d)
    q = graph.node("Transpose", [q], perm=[0, 2, 1, 3])            # (b, h, s, d)
    k = graph.node("Transpose", [k], perm=[0, 2, 3, 1])            # (b, h, d, s)
    v = graph.node("Transpose", [v], perm=[0, 2, 1, 3])
    scores = graph.node("Mul", [graph.node("MatMul", [q, k]), graph.const(1.0 / math.sqrt(d))])
    if module.causal:
        # -inf above the diagonal of a (seq, seq) matrix, seq read at run time
        seq = _sequence_length(graph, x)
        full = graph.node("ConstantOfShape", [graph.node("Concat", [seq, seq], axis=0)],
                          value=graph.onnx.numpy_helper.from_array(
                              np.array([-np.inf], graph.dtype)))
        mask = graph.node("Trilu", [full, graph.const(1, np.int64)], upper=1)
        scores = graph.node("Add", [scores, mask])
    weights = graph.node("Softmax", [scores], axis=-1)
    out = graph.node("Transpose", [graph.node("MatMul", [weights, v])], perm=[0, 2, 1, 3])
    merged = Value(graph.node("Reshape", [out, graph.ints([0, 0, e])]), x.shape)
    return graph.emit(module.out_proj, merged).name


@exports(TransformerEncoderLayer, sequence=True)
def _encoder_layer(graph, module, x):
    def add(a, b):
        return Value(graph.node("Add", [a.name, b.name]), a.shape)

    def ff(h):
        for layer in (module.linear1, module.activation, module.linear2):
            h = graph.emit(layer, h)
        return h

    if module.norm_first:
        h = add(x, graph.emit(module.self_attn, graph.emit(module.norm1, x)))
        return add(h, ff(graph.emit(module.norm2, h))).name
    h = graph.emit(module.norm1, add(x, graph.emit(module.self_attn, x)))
    return graph.emit(module.norm2, add(h, ff(h))).name


# ---------------------------------------------------------------------- the model
def _default_input_shape(model):
    if model.input_kind == "indices":
        return (None, None)
    if not model.n_features:
        raise ValueError("the model does not say its input width (no Linear or "
                         "normalisation layer first); pass export_onnx(path, "
                         "input_shape=(None, features))")
    sequence = any(getattr(exporter_of(m), "sequence", False) for m in model.modules())
    return (None, None, model.n_features) if sequence else (None, model.n_features)


def _dims(shape, names):
    return [names.get(i) if n is None else int(n) for i, n in enumerate(shape)]


def to_onnx(model, input_shape=None, opset=DEFAULT_OPSET):
    """The ``onnx.ModelProto`` of ``model`` in evaluation mode (see the module doc).

    Parameters
    ----------
    model : Module
        A ``Sequential`` (or any module whose layers have an entry in :data:`EXPORTERS`).
    input_shape : tuple, optional
        The input's shape, ``None`` for a dynamic axis (axis 0 is named ``"batch"``, axis
        1 ``"seq"``, later ones ``"dim<i>"``).  Default: ``(None, n_features)``,
        ``(None, None, n_features)`` when the model holds a sequence layer, and
        ``(None, None)`` int64 ids for a model that starts with an Embedding.
    opset : int, default 17
    """
    onnx = _import_onnx()
    opset = int(opset)
    if not DEFAULT_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset must be between {DEFAULT_OPSET} (LayerNormalization) and "
                         f"{onnx.defs.onnx_opset_version()} (this onnx), got {opset}")
    dtype = np.dtype(model.dtype or np.float32)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"ONNX export needs a float32 or float64 model, got {dtype}")
    shape = tuple(_default_input_shape(model) if input_shape is None else input_shape)
    if not shape or any(n is not None and (not isinstance(n, (int, np.integer))
                                           or isinstance(n, bool) or n < 1) for n in shape):
        raise ValueError(f"input_shape must be a tuple of positive ints or None (a dynamic "
                         f"axis), got {input_shape!r}")
    if model.input_kind != "indices" and model.n_features and shape[-1] != model.n_features:
        raise ValueError(f"input_shape {shape} ends in {shape[-1]}, the model takes "
                         f"{model.n_features} features")
    names = {i: ("batch", "seq")[i] if i < 2 else f"dim{i}" for i in range(len(shape))}
    graph = OnnxGraph(onnx, model, dtype, opset)
    x = Value(graph.fresh("input"), shape)
    y = graph.emit(model, x)
    output = graph.fresh("output")
    if graph.nodes and graph.nodes[-1].output[0] == y.name:
        graph.nodes[-1].output[0] = output
    else:                                       # the identity model
        graph.nodes.append(onnx.helper.make_node("Identity", [y.name], [output]))
    in_type = np.int64 if model.input_kind == "indices" else dtype
    tensor_type = onnx.helper.np_dtype_to_tensor_dtype
    # the output's dynamic axes are the input's (layers drop axes, never reorder them)
    in_dynamic = [names[i] for i, n in enumerate(shape) if n is None]
    out_dynamic = [i for i, n in enumerate(y.shape) if n is None]
    out_names = dict(zip(out_dynamic, in_dynamic)) if len(out_dynamic) == len(in_dynamic) \
        else {0: "batch"}
    proto = onnx.helper.make_graph(
        graph.nodes, "fastnn",
        [onnx.helper.make_tensor_value_info(x.name, tensor_type(np.dtype(in_type)),
                                            _dims(shape, names))],
        [onnx.helper.make_tensor_value_info(output, tensor_type(dtype),
                                            _dims(y.shape, out_names))],
        graph.initializers)
    from . import __version__
    opsets = [onnx.helper.make_opsetid("", opset)]
    # the oldest IR version the opset allows, not this onnx's newest: runtimes older than
    # the onnx package refuse IR versions they do not know
    result = onnx.helper.make_model(proto, producer_name="fastnn",
                                    producer_version=__version__, opset_imports=opsets,
                                    ir_version=onnx.helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(result)
    return result


def export_onnx(model, path, input_shape=None, opset=DEFAULT_OPSET):
    """Write :func:`to_onnx`'s graph to ``path`` atomically; returns the ModelProto."""
    from .serialization import atomic_write
    result = to_onnx(model, input_shape, opset)
    atomic_write(path, lambda f: f.write(result.SerializeToString()))
    return result
