"""Dropout: in training mode each element is zeroed with probability ``p`` and the kept
ones are scaled by ``1 / (1 - p)`` (inverted dropout), so evaluation mode is the
identity and needs no rescaling.

The keep/drop decision of element ``i`` of a call is a pure function of the layer's
``seed``, its stream ``offset`` and ``i`` (a counter-based random stream,
``fastnn/kernels/dropout.py``): the same seed gives the same masks on any number of
threads, on every backend, and a model saved and loaded mid-training continues the same
stream (the offset is a buffer).  Each training call advances the offset by the number
of elements it drew.
"""
import numpy as np

from .init import make_rng
from .module import Module, rows, unrows
from .validation import check_number


class Dropout(Module):
    """Inverted dropout with probability ``p`` (PyTorch's ``nn.Dropout``).

    Parameters
    ----------
    p : float in [0, 1], default 0.5
        Probability of zeroing an element (``p = 1``: every output is 0).
    seed : int, optional
        Seed of the random stream; default: drawn from fastnn's generator
        (:func:`fastnn.manual_seed`, or the ``seed`` of ``Sequential``).
    """

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        self.p = float(check_number(p, "p", low=0.0, high=1.0))
        if seed is None or isinstance(seed, np.random.Generator):
            self.reset_parameters(make_rng(seed))
        else:
            self.reset_parameters(seed=check_number(seed, "seed", low=0, integer=True))
        self.register_buffer("offset", np.zeros(1, np.uint64))

    def reset_parameters(self, rng=None, seed=None):
        """Draw a new stream seed from ``rng`` (or take ``seed``) and restart the stream."""
        self.seed = int(seed) if seed is not None else int(rng.integers(0, 2**63))
        if "offset" in self._registry("_buffers"):
            self.offset[...] = 0

    def _forward(self, x, backend):
        self._dropped = self.training and self.p > 0
        if not self._dropped:
            return x
        x2 = rows(x)
        y = backend.empty(x2.shape, x.dtype)
        self._mask = backend.empty(x2.shape, np.uint8)
        backend.dropout_forward(x2, self.p, self.seed, int(self.offset[0]), y, self._mask)
        self.offset[0] += np.uint64(x2.size)
        return unrows(y, x)

    def _backward(self, grad, backend, need_input_grad):
        if not self._dropped:
            return grad
        g2 = rows(grad)
        dx = backend.empty(g2.shape, grad.dtype)
        backend.dropout_backward(g2, self._mask, self.p, dx)
        return unrows(dx, grad)

    def get_config(self):
        return {"p": self.p, "seed": self.seed}

    def __repr__(self):
        return f"Dropout(p={self.p:g})"
