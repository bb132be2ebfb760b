"""Self-attention layers: :class:`MultiHeadAttention` and :class:`TransformerEncoderLayer`,
on sequences ``(batch, seq, embed_dim)``.

Both are compositions of existing modules (``Linear``, ``LayerNorm``, ``Dropout``,
activations) around the backend's scaled dot-product attention operations
(``attention_forward`` / ``attention_backward``: online-softmax kernels that never hold
the whole ``seq x seq`` score matrix, see ``fastnn/kernels/attention.py``) and the head
shuffles ``split_heads`` / ``merge_heads``.  Their backward passes run the children's
backward passes in reverse order, adding the gradients of the residual connections.
"""
import math

import numpy as np

from .dropout import Dropout
from .layers import Activation, Linear
from .module import Module
from .norm import LayerNorm
from .validation import check_number

_NO_MASK = {np.dtype(np.float32): np.empty((0, 0, 0, 0), np.float32),
            np.dtype(np.float64): np.empty((0, 0, 0, 0), np.float64)}


def _adder(backend):
    """``add(a, b)``: a new array ``a + b`` in the backend's memory (residual sums)."""
    return lambda a, b: backend.add(a, b, backend.empty(tuple(a.shape), a.dtype))


class MultiHeadAttention(Module):
    """Multi-head self-attention (Vaswani et al., 2017), as
    ``torch.nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)``
    called with ``query = key = value = x``::

        q, k, v = split(x @ W_in + b_in)                 # (batch, heads, seq, d), d = E / heads
        o_h = softmax(q_h k_h^T / sqrt(d) [+ causal mask]) v_h   # per head
        y = merge(o) @ W_out + b_out                      # (batch, seq, E)

    Parameters
    ----------
    embed_dim : int
        ``E``: width of the input and the output; divisible by ``num_heads``.
    num_heads : int
    causal : bool, default False
        Position ``i`` attends to positions ``<= i`` only.
    bias : bool, default True
        Biases of the input and output projections.

    Notes
    -----
    Parameters: ``in_proj.weight`` ``(E, 3E)`` (queries, keys, values side by side) and
    ``in_proj.bias`` ``(3E,)``; ``out_proj.weight`` ``(E, E)``, ``out_proj.bias``. Mapping
    from PyTorch (which stores ``(out, in)`` and computes ``x @ W.T``):
    ``in_proj.weight = in_proj_weight.T``, ``in_proj.bias = in_proj_bias``,
    ``out_proj.weight = out_proj.weight.T``, ``out_proj.bias = out_proj.bias``
    (see :meth:`load_torch_state`).  Initialisation: Glorot-uniform weights, zero biases.
    """

    def __init__(self, embed_dim, num_heads, causal=False, bias=True):
        super().__init__()
        self.embed_dim = check_number(embed_dim, "embed_dim", low=1, integer=True)
        self.num_heads = check_number(num_heads, "num_heads", low=1, integer=True)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads "
                             f"({num_heads})")
        self.head_dim = embed_dim // num_heads
        self.causal, self.use_bias = bool(causal), bool(bias)
        self.n_features = self.embed_dim
        self.in_proj = Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)

    def reset_parameters(self, rng):
        self.in_proj.reset_parameters(rng)
        self.out_proj.reset_parameters(rng)

    def _check(self, x):
        if x.ndim != 3:
            raise ValueError(f"MultiHeadAttention needs (batch, seq, embed_dim) inputs, got "
                             f"shape {tuple(x.shape)}")

    def _forward(self, x, backend):
        self._check(x)
        b, s, e = (int(n) for n in x.shape)
        h, d = self.num_heads, self.head_dim
        qkv = self.in_proj._forward(x, backend)                       # (b, s, 3e)
        heads = backend.split_heads(qkv, backend.empty((3, b, h, s, d), x.dtype))
        q, k, v = heads[0], heads[1], heads[2]
        out = backend.empty((b, h, s, d), x.dtype)
        lse = backend.empty((b, h, s), x.dtype)
        backend.attention_forward(q, k, v, _NO_MASK[np.dtype(x.dtype)], self.causal,
                                  1.0 / math.sqrt(d), out, lse)
        merged = backend.merge_heads(out.reshape((1, b, h, s, d)),
                                     backend.empty((b, s, e), x.dtype))
        self._saved = (heads, out, lse)
        return self.out_proj._forward(merged, backend)

    def _backward(self, grad, backend, need_input_grad):
        heads, out, lse = self._saved
        b, h, s, d = (int(n) for n in out.shape)
        dmerged = self.out_proj._backward(grad, backend, True)          # (b, s, e)
        dout = backend.split_heads(dmerged, backend.empty((1, b, h, s, d), grad.dtype))[0]
        dheads = backend.empty((3, b, h, s, d), grad.dtype)
        backend.attention_backward(dout, heads[0], heads[1], heads[2], out, lse,
                                   _NO_MASK[np.dtype(grad.dtype)], self.causal,
                                   1.0 / math.sqrt(d), dheads[0], dheads[1], dheads[2])
        dqkv = backend.merge_heads(dheads, backend.empty((b, s, 3 * h * d), grad.dtype))
        return self.in_proj._backward(dqkv, backend, need_input_grad)

    def get_config(self):
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "causal": self.causal, "bias": self.use_bias}

    def load_torch_state(self, state):
        """Copy the weights of a ``torch.nn.MultiheadAttention`` (its ``state_dict()``,
        tensors or arrays) into this layer, transposing as described in the class notes."""
        def array(name):
            value = state[name]
            value = value.detach().cpu().numpy() if hasattr(value, "detach") else value
            return np.asarray(value, dtype=self.in_proj.weight.dtype)
        self.in_proj.weight.data[...] = array("in_proj_weight").T
        self.out_proj.weight.data[...] = array("out_proj.weight").T
        if self.use_bias:
            self.in_proj.bias.data[...] = array("in_proj_bias")
            self.out_proj.bias.data[...] = array("out_proj.bias")
        return self

    def __repr__(self):
        return (f"MultiHeadAttention({self.embed_dim}, num_heads={self.num_heads}, "
                f"causal={self.causal})")


class TransformerEncoderLayer(Module):
    """A transformer encoder block, as ``torch.nn.TransformerEncoderLayer(embed_dim,
    num_heads, ff_dim, dropout, activation, batch_first=True, norm_first=norm_first)``::

        post-norm (default):  h = norm1(x + drop(attn(x)));  y = norm2(h + drop(ff(h)))
        pre-norm:             h = x + drop(attn(norm1(x)));  y = h + drop(ff(norm2(h)))
        ff(h) = linear2(drop(act(linear1(h))))

    Parameters
    ----------
    embed_dim, num_heads : int
    ff_dim : int, default 2048
        Width of the feed-forward layer.
    dropout : float, default 0.1
    activation : str, default "relu"
        Any element-wise activation name (``"gelu"``, ...).
    norm_first : bool, default False
    causal : bool, default False
        Causal self-attention.
    eps : float, default 1e-5
        LayerNorm's epsilon.
    """

    def __init__(self, embed_dim, num_heads, ff_dim=2048, dropout=0.1, activation="relu",
                 norm_first=False, causal=False, eps=1e-5):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.ff_dim = check_number(ff_dim, "ff_dim", low=1, integer=True)
        self.dropout_p = float(check_number(dropout, "dropout", low=0.0, high=1.0))
        self.norm_first, self.eps = bool(norm_first), float(eps)
        self.n_features = embed_dim
        self.self_attn = MultiHeadAttention(embed_dim, num_heads, causal=causal)
        self.linear1 = Linear(embed_dim, self.ff_dim)
        self.activation = Activation(activation)
        self.linear2 = Linear(self.ff_dim, embed_dim)
        self.norm1 = LayerNorm(embed_dim, eps=eps)
        self.norm2 = LayerNorm(embed_dim, eps=eps)
        self.dropout = Dropout(self.dropout_p)
        self.dropout1 = Dropout(self.dropout_p)
        self.dropout2 = Dropout(self.dropout_p)

    def reset_parameters(self, rng):
        for module in (self.self_attn, self.linear1, self.linear2, self.dropout,
                       self.dropout1, self.dropout2):
            module.reset_parameters(rng)

    def _ff_forward(self, h, backend):
        if self.activation.fusable:           # the activation in linear1's epilogue
            a = self.linear1._forward(h, backend, self.activation)
        else:
            a = self.activation._forward(self.linear1._forward(h, backend), backend)
        return self.dropout2._forward(
            self.linear2._forward(self.dropout._forward(a, backend), backend), backend)

    def _ff_backward(self, grad, backend):
        g = self.linear2._backward(self.dropout2._backward(grad, backend, True), backend, True)
        g = self.dropout._backward(g, backend, True)
        if not self.activation.fusable:
            g = self.activation._backward(g, backend, True)
        return self.linear1._backward(g, backend, True)

    def _attn_forward(self, x, backend):
        return self.dropout1._forward(self.self_attn._forward(x, backend), backend)

    def _attn_backward(self, grad, backend, need_input_grad):
        return self.self_attn._backward(self.dropout1._backward(grad, backend, True), backend,
                                        need_input_grad)

    def _forward(self, x, backend):
        add = _adder(backend)
        if self.norm_first:
            h = add(x, self._attn_forward(self.norm1._forward(x, backend), backend))
            return add(h, self._ff_forward(self.norm2._forward(h, backend), backend))
        h = self.norm1._forward(add(x, self._attn_forward(x, backend)), backend)
        return self.norm2._forward(add(h, self._ff_forward(h, backend)), backend)

    def _backward(self, grad, backend, need_input_grad):
        add = _adder(backend)
        if self.norm_first:
            gh = add(grad, self.norm2._backward(self._ff_backward(grad, backend), backend,
                                                True))
            ga = self._attn_backward(gh, backend, True)
            return add(gh, self.norm1._backward(ga, backend, True))
        gh = self.norm2._backward(grad, backend, True)
        gh = add(gh, self._ff_backward(gh, backend))
        gx = self.norm1._backward(gh, backend, True)
        return add(gx, self._attn_backward(gx, backend, True))

    def get_config(self):
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "ff_dim": self.ff_dim, "dropout": self.dropout_p,
                "activation": self.activation.name, "norm_first": self.norm_first,
                "causal": self.self_attn.causal, "eps": self.eps}

    def __repr__(self):
        return (f"TransformerEncoderLayer({self.embed_dim}, num_heads={self.num_heads}, "
                f"ff_dim={self.ff_dim}, dropout={self.dropout_p:g}, "
                f"norm_first={self.norm_first})")
