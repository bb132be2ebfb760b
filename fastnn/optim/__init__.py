"""Optimisers: in-place parameter updates through the backend's fused kernels.

``opt = Adam(model.parameters(), lr=1e-3)``; each step: ``opt.zero_grad()``,
``model.backward(grad)``, ``opt.step()``.  Like Keras, an optimiser may also be created
without parameters and bound later by ``model.compile(optimizer=opt)``.

Every optimiser follows PyTorch's documented update rule and defaults (``SGD``, ``Adam``,
``AdamW``, ``RMSprop``); each update is one fused pass over a parameter, its gradient and
its state (the kernels in ``fastnn.kernels.optim``), identical for any thread count.

Parameter groups, as in PyTorch: pass a list of dicts instead of a list of parameters,
each with ``"params"`` and any hyperparameters that override the constructor's::

    opt = fnn.AdamW([{"params": decayed}, {"params": biases, "weight_decay": 0.0}], lr=1e-3)
    opt = fnn.AdamW(fnn.weight_decay_groups(model), lr=1e-3, weight_decay=0.01)  # the same

``opt.param_groups`` holds the groups (dicts with ``"params"`` and every hyperparameter);
a learning-rate schedule (:mod:`fastnn.schedules`) changes each group's ``"lr"``.
``opt.lr`` (and every other hyperparameter name) reads the first group's value and,
assigned, sets it in every group.

Gradient clipping is built in: ``clip_value`` clamps every gradient element to
``[-clip_value, clip_value]``; ``clip_norm`` rescales all gradients together when their
global L2 norm exceeds it (both may be given; value clipping runs first).

State: ``opt.state[i]`` belongs to ``opt.params[i]``: its arrays (momentum, moments) and,
for Adam and RMSprop, ``"step"``, a Python int counting that parameter's updates (a
parameter that got no gradient in a step is not updated and its count does not move, as
in PyTorch).  ``state_dict()`` / ``load_state_dict()`` copy all of it, and ``model.save``
stores it, so a resumed run equals an uninterrupted one.

The package: :mod:`.base` (:class:`Optimizer`: hyperparameter checks, groups, binding,
clipping, state; :func:`weight_decay_groups`), one module per update rule (:mod:`.sgd`,
:mod:`.adam` with AdamW, :mod:`.rmsprop`), and here :data:`OPTIMIZERS`, the one list of
the names ``compile`` accepts.
"""
from ..validation import check_choice
from .adam import Adam, AdamW
from .base import Optimizer, weight_decay_groups
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "RMSprop", "Optimizer", "get_optimizer",
           "weight_decay_groups"]

#: Names accepted by ``compile(optimizer=...)``.
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get_optimizer(optimizer):
    """An :class:`Optimizer` from an instance or a name in :data:`OPTIMIZERS` (with its
    default hyperparameters)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    return check_choice(optimizer, "optimizer", OPTIMIZERS)()
