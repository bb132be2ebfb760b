"""The training step of ``fastnn train --model transformer``, on fastnn and on PyTorch.

The model is the command line's (:func:`fastnn.cli._transformer_layers`): each MNIST
image as a sequence of its 28 rows of 28 pixels, ``Linear(28, 64)`` + learned positions,
two post-norm encoder layers (4 heads, GELU feed-forward of 128, dropout 0), the mean
over the rows and ``Linear(64, 10)``; softmax cross-entropy, Adam (lr 1e-3, PyTorch's
defaults).  An epoch is ``ceil(60000 / B)`` of these steps, so the ratio of the steps'
block means is the ratio of the epochs' training time.

PyTorch's model is ``nn.Linear``, an ``nn.Parameter`` table of positions,
``nn.TransformerEncoder`` of ``nn.TransformerEncoderLayer(batch_first=True,
activation="gelu")`` (nested tensors off: every sequence is full) and ``nn.Linear``,
started from fastnn's initial weights.  Both steps take the same batch as NumPy arrays.
"""
from types import SimpleNamespace

import numpy as np

from .steps import FastnnStep, TorchStep

#: The command line's transformer (``fastnn train --model transformer`` defaults).
TRANSFORMER = SimpleNamespace(side=28, embed_dim=64, heads=4, layers=2, ff_dim=128,
                              dropout=0.0, classes=10)
#: The command line's batch size.
TRANSFORMER_BATCH = 128


def transformer_flops(batch, config=TRANSFORMER):
    """FLOPs of the step's matrix products and attention, forward and backward (``3x`` the
    forward's, the input layer's ``dx`` not taken): per sequence of ``S`` tokens of width
    ``E``, each encoder layer's projections ``2 S E (3E + E + 2F)`` and attention ``4 S^2
    E``, the input layer ``2 S side E``, the output layer ``2 E classes``."""
    s, e, f = config.side, config.embed_dim, config.ff_dim
    layer = 2 * s * e * (4 * e + 2 * f) + 4 * s * s * e
    forward = config.layers * layer + 2 * s * config.side * e + 2 * e * config.classes
    return float(batch) * (3 * forward - 2 * s * config.side * e)


def transformer_model(seed=0, dtype="float32", config=TRANSFORMER):
    """The fastnn model of ``fastnn train --model transformer``."""
    from .. import Sequential
    from ..cli import _transformer_layers
    return Sequential(*_transformer_layers(config, config.side), seed=seed, dtype=dtype)


def sequence_batch(batch, dtype=np.float32, config=TRANSFORMER):
    """The fixed batch: ``x`` (B, 28, 28) in [0, 1), labels (B,)."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, config.side, config.side), dtype=np.float32).astype(dtype)
    return x, rng.integers(0, config.classes, batch)


def fastnn_transformer_step(batch, dtype=np.float32, config=TRANSFORMER):
    """fastnn's step (:class:`.steps.FastnnStep` with Adam) on :func:`transformer_model`."""
    x, labels = sequence_batch(batch, dtype, config)
    model = transformer_model(dtype=np.dtype(dtype).name, config=config)
    return FastnnStep(batch, "numba", model=model, x=x, labels=labels, optimizer="adam")


class TorchTransformerStep:
    """PyTorch eager on the same step, from fastnn's initial weights.

    ``parameters()`` / ``gradients()`` give PyTorch's arrays in fastnn's order and layout
    (weight matrices transposed), for the tests that both compute the same step."""

    def __init__(self, batch, threads=None, dtype=np.float32, config=TRANSFORMER):
        import numba
        import torch
        torch.set_num_threads(threads or numba.get_num_threads())
        kind = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
        self.torch = torch
        self.model = _torch_model(torch, config).to(kind)
        fastnn_model = transformer_model(dtype=np.dtype(dtype).name, config=config)
        with torch.no_grad():
            for (name, tensor), (_, p) in zip(self._named(), fastnn_model.named_parameters()):
                value = np.array(p.data)
                tensor.copy_(torch.from_numpy(value.T.copy() if self._transposed(name, tensor)
                                              else value))
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.x, self.labels = sequence_batch(batch, dtype, config)

    def _named(self):
        """``(name, tensor)`` in fastnn's order (PyTorch lists a module's own parameters,
        the positions, before its children's)."""
        named = dict(self.model.named_parameters())
        order = ["embed.weight", "embed.bias", "positions"]
        return [(n, named[n]) for n in order] + [(n, t) for n, t in named.items()
                                                 if n not in order]

    @staticmethod
    def _transposed(name, tensor):
        """PyTorch stores (out, in) matrices; fastnn ``x @ W`` ones (the position table
        is the same in both)."""
        return tensor.dim() == 2 and name != "positions"

    __call__ = TorchStep.__call__        # the same attributes: model, loss_fn, optimizer

    def _in_fastnn_layout(self, value_of):
        return [value_of(t).T.copy() if self._transposed(name, t) else value_of(t).copy()
                for name, t in self._named()]

    def parameters(self):
        return self._in_fastnn_layout(lambda t: t.detach().numpy())

    def gradients(self):
        return self._in_fastnn_layout(lambda t: t.grad.detach().numpy())


def _torch_model(torch, config):
    """The PyTorch twin of :func:`transformer_model`."""
    nn = torch.nn

    class MnistTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            e = config.embed_dim
            self.embed = nn.Linear(config.side, e)
            self.positions = nn.Parameter(torch.zeros(config.side, e))
            layer = nn.TransformerEncoderLayer(e, config.heads, config.ff_dim, config.dropout,
                                               activation="gelu", batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, config.layers,
                                                 enable_nested_tensor=False)
            self.head = nn.Linear(e, config.classes)

        def forward(self, x):
            return self.head(self.encoder(self.embed(x) + self.positions).mean(dim=1))

    return MnistTransformer()
