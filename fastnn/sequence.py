"""What a small sequence model needs around attention: token embeddings, positional
encodings, residual connections and pooling to a vector.

Shapes: token ids ``(batch, seq)`` (any ``(batch, ...)``) go into :class:`Embedding`, which
gives ``(batch, seq, dim)``; the positional encodings add a ``(seq, dim)`` table to such
a batch; :class:`Residual` wraps a shape-keeping module; :class:`MeanPool` and
:class:`FirstToken` reduce ``(batch, seq, dim)`` to ``(batch, dim)`` for a classifier::

    model = fnn.Sequential(fnn.Embedding(vocab, 64), fnn.PositionalEmbedding(128, 64),
                           fnn.Residual(fnn.Sequential(fnn.Linear(64, 128), fnn.ReLU(),
                                                       fnn.Linear(128, 64))),
                           fnn.MeanPool(), fnn.Linear(64, n_classes))

The kernels are the backend's row gather and deterministic scatter-add
(``embedding_forward`` / ``embedding_backward``, :mod:`fastnn.kernels.embedding`: also
the learned positions' gradient and FirstToken), ``bias_add`` (a ``(seq, dim)`` table
broadcast over the batch), ``mean_pool_forward`` / ``mean_pool_backward``
(:mod:`fastnn.kernels.pooling`) and ``add``.
"""
import numpy as np

from .backends.memory import like
from .init import make_rng
from .module import Module, Parameter, module_from_spec, module_spec, rows
from .validation import as_dtype, check_number


def _normal_table(rng, shape, std, dtype):
    """N(0, std**2) values, drawn in float64 then cast (one seed, either precision)."""
    return np.ascontiguousarray(rng.normal(0.0, std, size=shape), dtype=dtype)


def _check_std(init, name):
    """``"normal"`` (std 1) or a positive standard deviation."""
    if isinstance(init, str):
        if init.lower() != "normal":
            raise ValueError(f"{name} must be 'normal' (N(0, 1)) or a standard deviation "
                             f"such as 0.02, got {init!r}")
        return "normal", 1.0
    return init, float(check_number(init, name, low=0.0, low_open=True))


def _size(shape):
    return int(np.prod(shape, dtype=np.int64))


class _IndexCache:
    """int64 index arrays that depend on a shape only (positions, first tokens), kept in
    the memory of the backend that last asked (one entry: shapes rarely change)."""

    def __init__(self, make):
        self.make, self.key, self.array = make, None, None

    def get(self, backend, *shape):
        key = (backend.memory, shape)
        if key != self.key:
            host = np.ascontiguousarray(self.make(*shape), dtype=np.int64)
            self.array = host if backend.memory == "host" else backend.asarray(host, np.int64)
            self.key = key
        return self.array


class Embedding(Module):
    """A lookup table of learned vectors: ``out[..., :] = weight[x[...], :]``.

    Parameters
    ----------
    num_embeddings : int
        ``V``: the number of ids (the vocabulary); inputs must lie in ``[0, V)``.
    embedding_dim : int
        ``D``: the width of each vector.
    padding_idx : int, optional
        An id whose vector is all zeros at start and never trained (its gradient is
        always zero, as in PyTorch); negative values count from the end.
    init : "normal" or float, default "normal"
        ``weight`` drawn from N(0, 1) (PyTorch's default), or from N(0, init**2) for a
        number (0.02 as BERT and GPT-2).
    dtype : "float32" or "float64", default "float32"
    seed : int or numpy.random.Generator, optional

    Notes
    -----
    Input: integer ids of any shape ``(batch, ...)`` (the module's ``input_kind`` is
    ``"indices"``: they are checked, not converted to floats; an Embedding must therefore
    be the first layer of a model); output ``(batch, ..., D)`` of the weight's dtype.
    ``weight`` has shape ``(V, D)``.  The backward accumulates into ``weight.grad`` the
    scatter-add ``dW[v] += sum_{n: x_n = v} dy_n`` (PyTorch's dense gradient: rows no id
    uses are zero after ``zero_grad``); there is no gradient with respect to the ids
    (``backward`` returns None).
    """

    input_kind = "indices"

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, *, init="normal",
                 dtype="float32", seed=None):
        super().__init__()
        self.num_embeddings = check_number(num_embeddings, "num_embeddings", low=1,
                                           integer=True)
        self.embedding_dim = check_number(embedding_dim, "embedding_dim", low=1, integer=True)
        if padding_idx is not None:
            check_number(padding_idx, "padding_idx", low=-num_embeddings,
                         high=num_embeddings - 1, integer=True)
            padding_idx = int(padding_idx) % num_embeddings
        self.padding_idx = padding_idx
        self.init, self._std = _check_std(init, "init")
        self.index_bound = self.num_embeddings
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), as_dtype(dtype)))
        self.reset_parameters(make_rng(seed))

    def reset_parameters(self, rng):
        """Draw a new table from ``rng`` (the padding row zero)."""
        table = _normal_table(rng, (self.num_embeddings, self.embedding_dim), self._std,
                              self.weight.dtype)
        if self.padding_idx is not None:
            table[self.padding_idx] = 0
        self.weight.data = like(table, self.weight.data)        # stays on its device

    def output_shape(self, input_shape):
        return tuple(input_shape) + (self.embedding_dim,)

    def _forward(self, x, backend):
        if np.dtype(x.dtype).kind not in "iu":
            raise TypeError(f"Embedding takes integer ids, got a {x.dtype} array: it must be "
                            "the first layer of a model (its input is the token ids)")
        ids = x.reshape(x.size)
        out = backend.empty((x.size, self.embedding_dim), self.weight.dtype)
        backend.embedding_forward(self.weight.data, ids, out)
        self._ids = ids
        return out.reshape(tuple(x.shape) + (self.embedding_dim,))

    def _backward(self, grad, backend, need_input_grad):
        dweight, accumulate = self.weight._grad_for_backward()
        backend.embedding_backward(rows(grad), self._ids, dweight, accumulate,
                                   -1 if self.padding_idx is None else self.padding_idx)
        return None

    def get_config(self):
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, "init": self.init}

    @classmethod
    def from_config(cls, config):
        return cls(**config, seed=0)     # the weights come from the file

    def __repr__(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{pad})"


def _check_sequence(module, x):
    """``(batch, seq, dim)`` with ``seq <= max_len``: the positional encodings' input."""
    shape = tuple(x.shape)
    if len(shape) != 3:
        raise ValueError(f"{type(module).__name__} needs (batch, seq, dim) inputs, got shape "
                         f"{shape}")
    if shape[1] > module.max_len:
        raise ValueError(f"{type(module).__name__} has positions for sequences of at most "
                         f"max_len={module.max_len}, got seq = {shape[1]} (shape {shape}); "
                         "build it with a larger max_len")
    return shape


def _add_positions(table, x, backend):
    """``y[b, s, :] = x[b, s, :] + table[s, :]``: the first ``seq`` rows of the table,
    flattened, as a bias over ``(batch, seq * dim)`` rows."""
    b, s, d = (int(n) for n in x.shape)
    out = backend.empty((b, s * d), x.dtype)
    backend.bias_add(x.reshape((b, s * d)), table[:s].reshape(s * d), out)
    return out.reshape((b, s, d))


class PositionalEmbedding(Module):
    """Learned positional embeddings (BERT, GPT-2): ``y[b, s, :] = x[b, s, :] +
    weight[s, :]``.

    Parameters
    ----------
    max_len : int
        The longest sequence; ``weight`` has shape ``(max_len, dim)``.
    dim : int
        Width of the input's last axis.
    init : float, default 0.02
        ``weight`` drawn from N(0, init**2): BERT's and GPT-2's choice, small next to token
        embeddings so that training starts from the bag of tokens and learns how much
        order matters.
    dtype, seed : as :class:`Embedding`.

    Notes
    -----
    Input ``(batch, seq, dim)`` with ``seq <= max_len``, output the same shape.  Backward:
    ``dx = dy`` and ``dweight[s] += sum_b dy[b, s]`` for ``s < seq`` (later rows get zero
    after ``zero_grad``), by the embedding scatter-add (fixed order: deterministic).
    """

    def __init__(self, max_len, dim, *, init=0.02, dtype="float32", seed=None):
        super().__init__()
        self.max_len = check_number(max_len, "max_len", low=1, integer=True)
        self.dim = check_number(dim, "dim", low=1, integer=True)
        self.n_features = self.dim
        self.init = float(check_number(init, "init", low=0.0, low_open=True))
        self.weight = Parameter(np.empty((max_len, dim), as_dtype(dtype)))
        self._positions = _IndexCache(lambda b, s: np.tile(np.arange(s), b))
        self.reset_parameters(make_rng(seed))

    def reset_parameters(self, rng):
        table = _normal_table(rng, (self.max_len, self.dim), self.init, self.weight.dtype)
        self.weight.data = like(table, self.weight.data)

    def output_shape(self, input_shape):
        if len(input_shape) == 3 and input_shape[1] is not None and input_shape[1] > self.max_len:
            raise ValueError(f"PositionalEmbedding has max_len={self.max_len}, got sequences "
                             f"of {input_shape[1]}")
        return tuple(input_shape)

    def _forward(self, x, backend):
        b, s, d = _check_sequence(self, x)
        self._shape = (b, s, d)
        return _add_positions(self.weight.data, x, backend)

    def _backward(self, grad, backend, need_input_grad):
        b, s, d = self._shape
        dweight, accumulate = self.weight._grad_for_backward()
        backend.embedding_backward(grad.reshape((b * s, d)), self._positions.get(backend, b, s),
                                   dweight, accumulate, -1)
        return grad

    def get_config(self):
        return {"max_len": self.max_len, "dim": self.dim, "init": self.init}

    @classmethod
    def from_config(cls, config):
        return cls(**config, seed=0)

    def __repr__(self):
        return f"PositionalEmbedding({self.max_len}, {self.dim})"


def sinusoid_table(max_len, dim):
    """The encodings of Vaswani et al. (2017), float64 ``(max_len, dim)``::

        PE[pos, 2i]     = sin(pos / 10000**(2i / dim))
        PE[pos, 2i + 1] = cos(pos / 10000**(2i / dim))

    (an odd ``dim`` ends with a sine column)."""
    position = np.arange(max_len, dtype=np.float64)[:, None]
    angle = position / np.power(10000.0, np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.empty((max_len, dim))
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, :dim // 2])
    return table


class SinusoidalPositionalEncoding(Module):
    """Fixed sinusoidal positional encodings (Vaswani et al., 2017): ``y[b, s, :] =
    x[b, s, :] + PE[s, :]`` with the table of :func:`sinusoid_table`.

    Parameters
    ----------
    dim : int
        Width of the input's last axis.
    max_len : int, default 5000
        The longest sequence.

    Notes
    -----
    Input ``(batch, seq, dim)`` with ``seq <= max_len``, output the same shape; backward
    ``dx = dy``.  No parameters and no buffers: the table is a function of ``(max_len,
    dim)``, computed in float64 when first needed and kept, cast to the input's dtype, in
    the memory of the backend that runs (not saved with the model: nothing to load, and
    float32 and float64 models use the same values to rounding).  The original paper also
    scales token embeddings by ``sqrt(dim)`` before adding these; do that in the
    embedding's ``init`` if you want it.
    """

    def __init__(self, dim, max_len=5000):
        super().__init__()
        self.dim = check_number(dim, "dim", low=1, integer=True)
        self.max_len = check_number(max_len, "max_len", low=1, integer=True)
        self.n_features = self.dim
        self._tables = {}

    def table(self, backend, dtype):
        """The ``(max_len, dim)`` table in ``backend``'s memory, of ``dtype``."""
        key = (backend.memory, np.dtype(dtype).str)
        if key not in self._tables:
            host = np.ascontiguousarray(sinusoid_table(self.max_len, self.dim), dtype=dtype)
            self._tables[key] = host if backend.memory == "host" else backend.asarray(host,
                                                                                      dtype)
        return self._tables[key]

    def output_shape(self, input_shape):
        if len(input_shape) == 3 and input_shape[1] is not None and input_shape[1] > self.max_len:
            raise ValueError(f"SinusoidalPositionalEncoding has max_len={self.max_len}, got "
                             f"sequences of {input_shape[1]}")
        return tuple(input_shape)

    def _forward(self, x, backend):
        _check_sequence(self, x)
        return _add_positions(self.table(backend, x.dtype), x, backend)

    def _backward(self, grad, backend, need_input_grad):
        return grad

    def get_config(self):
        return {"dim": self.dim, "max_len": self.max_len}

    def __repr__(self):
        return f"SinusoidalPositionalEncoding({self.dim}, max_len={self.max_len})"


def _pool_axis(axis, ndim, name):
    """``axis`` as a non-negative axis of an ``ndim``-D input, never the batch axis."""
    a = axis + ndim if axis < 0 else axis
    if not 1 <= a < ndim:
        raise ValueError(f"{name}(axis={axis}) needs an input with that axis besides the "
                         f"batch axis 0, got {ndim}-D input")
    return a


class MeanPool(Module):
    """Mean over one axis (by default the sequence axis 1): ``(batch, seq, dim) ->
    (batch, dim)``, ``y[b, :] = sum_s x[b, s, :] / seq``.

    Parameters
    ----------
    axis : int, default 1
        The axis averaged away (not the batch axis 0; negative counts from the end).

    Notes
    -----
    Backward: ``dx[b, s, :] = dy[b, :] / seq``.  Any rank: the input is viewed as
    ``(before, axis, after)`` (:mod:`fastnn.kernels.pooling`).  Every position counts:
    padding tokens included (there is no mask).
    """

    def __init__(self, axis=1):
        super().__init__()
        self.axis = check_number(axis, "axis", integer=True)
        if self.axis == 0:
            raise ValueError("MeanPool(axis=0) would average over the batch; pool over the "
                             "sequence axis (1) or another non-batch axis")

    def output_shape(self, input_shape):
        a = _pool_axis(self.axis, len(input_shape), "MeanPool")
        return tuple(input_shape[:a]) + tuple(input_shape[a + 1:])

    def _forward(self, x, backend):
        shape = tuple(x.shape)
        a = _pool_axis(self.axis, len(shape), "MeanPool")
        outer, seq, inner = _size(shape[:a]), shape[a], _size(shape[a + 1:])
        out = backend.empty((outer, inner), x.dtype)
        backend.mean_pool_forward(x.reshape((outer, seq, inner)), out)
        self._shape = shape
        return out.reshape(shape[:a] + shape[a + 1:])

    def _backward(self, grad, backend, need_input_grad):
        shape = self._shape
        a = _pool_axis(self.axis, len(shape), "MeanPool")
        outer, seq, inner = _size(shape[:a]), shape[a], _size(shape[a + 1:])
        dx = backend.empty((outer, seq, inner), grad.dtype)
        backend.mean_pool_backward(grad.reshape((outer, inner)), dx)
        return dx.reshape(shape)

    def get_config(self):
        return {"axis": self.axis}

    def __repr__(self):
        return f"MeanPool(axis={self.axis})"


class FirstToken(Module):
    """The first position of each sequence (BERT's ``[CLS]`` pooling): ``(batch, seq,
    dim) -> (batch, dim)``, ``y[b, :] = x[b, 0, :]``.

    Notes
    -----
    Any rank ``(batch, seq, ...)``.  The rows ``x[b, 0]`` are gathered, and their
    gradient scattered back (zeros elsewhere), by the embedding operations: the input seen
    as a table of ``batch * seq`` rows, ids ``b * seq``.
    """

    def __init__(self):
        super().__init__()
        self._first = _IndexCache(lambda b, s: np.arange(b) * s)

    def output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"FirstToken needs (batch, seq, ...) inputs, got shape "
                             f"{tuple(input_shape)}")
        return tuple(input_shape[:1]) + tuple(input_shape[2:])

    def _forward(self, x, backend):
        shape = tuple(x.shape)
        self.output_shape(shape)
        b, s, inner = shape[0], shape[1], _size(shape[2:])
        out = backend.empty((b, inner), x.dtype)
        backend.embedding_forward(x.reshape((b * s, inner)), self._first.get(backend, b, s),
                                  out)
        self._shape = shape
        return out.reshape(shape[:1] + shape[2:])

    def _backward(self, grad, backend, need_input_grad):
        b, s = self._shape[:2]
        inner = _size(self._shape[2:])
        dx = backend.empty((b * s, inner), grad.dtype)
        backend.embedding_backward(grad.reshape((b, inner)), self._first.get(backend, b, s),
                                   dx, False, -1)
        return dx.reshape(self._shape)

    def __repr__(self):
        return "FirstToken()"


class Residual(Module):
    """A residual connection around a module: ``y = x + module(x)``.

    Parameters
    ----------
    module : Module
        Keeps the shape of its input (a ``Sequential`` of several layers is fine).  It is
        this module's child ``"module"``: its parameters (``"module.weight"``), buffers,
        mode and saving go through the usual registries.

    Notes
    -----
    Backward: ``dx = dy + module.backward(dy)``; the module accumulates its parameter
    gradients as usual.
    """

    def __init__(self, module):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"Residual wraps a fastnn Module, got {type(module).__name__}")
        self.module = module
        self.n_features = module.n_features
        if self.n_features:
            self.output_shape((None, self.n_features))       # a width change: refuse now

    def output_shape(self, input_shape):
        inner = self.module.output_shape(input_shape)
        if tuple(inner) != tuple(input_shape):
            raise ValueError(f"Residual needs a module that keeps the shape of its input: "
                             f"{type(self.module).__name__} maps {tuple(input_shape)} to "
                             f"{tuple(inner)}")
        return tuple(input_shape)

    def _forward(self, x, backend):
        y = self.module._forward(x, backend)
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(f"Residual needs a module that keeps the shape of its input: "
                             f"{type(self.module).__name__} maps {tuple(x.shape)} to "
                             f"{tuple(y.shape)}")
        # a new array: y may be x itself, or an output the module keeps for its backward
        return backend.add(x, y, backend.empty(tuple(x.shape), x.dtype))

    def _backward(self, grad, backend, need_input_grad):
        inner = self.module._backward(grad, backend, need_input_grad)
        if not need_input_grad:
            return None
        return backend.add(grad, inner, backend.empty(tuple(grad.shape), grad.dtype))

    def get_config(self):
        return {"module": module_spec(self.module)}

    @classmethod
    def from_config(cls, config):
        return cls(module_from_spec(config["module"]))

    def __repr__(self):
        return f"Residual({self.module!r})"


__all__ = ["Embedding", "FirstToken", "MeanPool", "PositionalEmbedding", "Residual",
           "SinusoidalPositionalEncoding", "sinusoid_table"]
