"""Optimisers: in-place parameter updates through the backend's fused kernels.

``opt = SGD(model.parameters(), lr=0.1, momentum=0.9)``; each step: ``opt.zero_grad()``,
``model.backward(grad)``, ``opt.step()``.  Like Keras, an optimiser may also be created
without parameters and bound later by ``model.compile(optimizer=opt)``.

Gradient clipping is built in: ``clip_value`` clamps every gradient element to
``[-clip_value, clip_value]``; ``clip_norm`` rescales all gradients together when their
global L2 norm exceeds it (both may be given; value clipping runs first).
"""
import math

import numpy as np

from .backends import get_backend
from .backends.memory import assign, backend_for, place, to_host
from .validation import check_choice, check_number


def _flat(array):
    return array.reshape(-1)


class Optimizer:
    """Base class: parameter binding, clipping, per-parameter state, state_dict."""

    def __init__(self, params=None, *, clip_norm=None, clip_value=None, backend=None):
        self.clip_norm = None if clip_norm is None else check_number(
            clip_norm, "clip_norm", low=0, low_open=True)
        self.clip_value = None if clip_value is None else check_number(
            clip_value, "clip_value", low=0, low_open=True)
        self.backend = backend
        self.params = []
        self.state = []
        if params is not None:
            self.bind(params)

    def bind(self, params):
        """Attach the parameters to optimise (a list of :class:`fastnn.Parameter`)."""
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        self.params = params
        self.state = [self._init_state(p) for p in params]
        self._memory = "host"           # _init_state allocates on the host
        return self

    def _init_state(self, param):
        return {}

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def step(self):
        """Apply one update to every parameter that received a gradient."""
        if not self.params:
            raise RuntimeError("optimizer has no parameters: pass model.parameters() or "
                               "use model.compile(optimizer=...)")
        # without a backend of its own: where the parameters live (e.g. after model.to("cuda"))
        backend = (get_backend(self.backend) if self.backend is not None
                   else backend_for(self.params[0].data))
        if self._memory != backend.memory:       # e.g. after model.to("cuda")
            self.state = [{k: place(v, backend) for k, v in s.items()} for s in self.state]
            self._memory = backend.memory
        live = [(p, s) for p, s in zip(self.params, self.state) if not p._grad_stale]
        if self.clip_value is not None:
            for p, _ in live:
                backend.clip_inplace(_flat(p._grad), self.clip_value)
        if self.clip_norm is not None:
            norm = math.sqrt(sum(backend.sum_of_squares(_flat(p._grad)) for p, _ in live))
            if norm > self.clip_norm:
                scale = self.clip_norm / (norm + 1e-6)
                for p, _ in live:
                    backend.scale_inplace(_flat(p._grad), scale)
        for p, s in live:
            self._update(backend, p, s)

    def _update(self, backend, param, state):
        raise NotImplementedError

    def state_dict(self):
        """Hyperparameters and per-parameter state (copies), for resuming training."""
        return {"hyperparameters": dict(self.hyperparameters()),
                "state": [{k: np.array(to_host(v)) for k, v in s.items()} for s in self.state]}

    def load_state_dict(self, state_dict):
        state = state_dict["state"]
        if len(state) != len(self.params):
            raise ValueError(f"optimizer state has {len(state)} entries, the optimizer has "
                             f"{len(self.params)} parameters")
        for mine, theirs, p in zip(self.state, state, self.params):
            for key, value in theirs.items():
                if key not in mine or np.shape(value) != mine[key].shape:
                    raise ValueError(f"optimizer state {key!r} does not match parameter of "
                                     f"shape {p.shape}")
                assign(mine[key], value)
        for key, value in state_dict.get("hyperparameters", {}).items():
            setattr(self, key, value)

    def hyperparameters(self):
        return {"clip_norm": self.clip_norm, "clip_value": self.clip_value}


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay.

    Parameters
    ----------
    params : list of Parameter, optional
    lr : float, default 0.01
        Learning rate (> 0).
    momentum : float, default 0.0
        In [0, 1).  With momentum, ``v = momentum * v + g`` and ``p -= lr * v``.
    weight_decay : float, default 0.0
        L2 penalty added to the gradient: ``g += weight_decay * p``.
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0``).
    clip_norm, clip_value : float, optional
        Gradient clipping, see the module docstring.
    """

    def __init__(self, params=None, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False,
                 **kwargs):
        self.lr = check_number(lr, "lr", low=0, low_open=True)
        self.momentum = check_number(momentum, "momentum", low=0, high=1, high_open=True)
        self.weight_decay = check_number(weight_decay, "weight_decay", low=0)
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)
        super().__init__(params, **kwargs)

    def _init_state(self, param):
        return {"velocity": np.zeros(param.data.size, param.dtype)} if self.momentum else {}

    def _update(self, backend, param, state):
        p, g = _flat(param.data), _flat(param._grad)
        if self.momentum:
            backend.sgd_momentum_update(p, g, state["velocity"], self.lr, self.momentum,
                                        self.weight_decay, self.nesterov)
        else:
            backend.sgd_update(p, g, self.lr, self.weight_decay)

    def hyperparameters(self):
        return {**super().hyperparameters(), "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov}

    def __repr__(self):
        return (f"SGD(lr={self.lr:g}, momentum={self.momentum:g}, "
                f"weight_decay={self.weight_decay:g}, nesterov={self.nesterov})")


#: Names accepted by ``compile(optimizer=...)``.
OPTIMIZERS = {"sgd": SGD}


def get_optimizer(optimizer):
    """An :class:`Optimizer` from an instance or a name in :data:`OPTIMIZERS`."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    return check_choice(optimizer, "optimizer", OPTIMIZERS)()
