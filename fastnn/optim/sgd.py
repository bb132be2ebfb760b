"""Stochastic gradient descent, with optional (Nesterov) momentum and weight decay."""
from .base import Optimizer, _flag, _flat, _fraction, _lr, _non_negative


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay.

    Per parameter, PyTorch's formulation::

        g = grad + weight_decay * param
        velocity = momentum * velocity + g                  (momentum > 0)
        param -= lr * (g + momentum * velocity  if nesterov else  velocity)
        param -= lr * g                                     (momentum = 0)

    (a velocity below the smallest normal float is stored as zero: see
    ``fastnn.kernels.optim``).

    Parameters
    ----------
    params : list of Parameter or of parameter-group dicts, optional
    lr : float, default 0.01
        Learning rate (> 0).
    momentum : float, default 0.0
        In [0, 1).
    weight_decay : float, default 0.0
        L2 penalty added to the gradient.
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0``).
    clip_norm, clip_value : float, optional
        Gradient clipping, see the module docstring.
    """

    _CHECKS = {"lr": _lr, "momentum": _fraction, "weight_decay": _non_negative,
               "nesterov": _flag}

    def __init__(self, params=None, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False,
                 **kwargs):
        super().__init__(params, {"lr": lr, "momentum": momentum,
                                  "weight_decay": weight_decay, "nesterov": nesterov},
                         **kwargs)

    def _check_group(self, group):
        if group.get("nesterov") and not group.get("momentum"):
            raise ValueError("nesterov=True needs momentum > 0")

    def _init_state(self, param, group):
        return {"velocity": self._zeros(param)} if group["momentum"] else {}

    def _update(self, backend, param, state, group):
        p, g = _flat(param.data), _flat(param._grad)
        if group["momentum"]:
            velocity = self._state_array(backend, state, "velocity", param)
            backend.sgd_momentum_update(p, g, velocity, group["lr"],
                                        group["momentum"], group["weight_decay"],
                                        group["nesterov"])
        else:
            backend.sgd_update(p, g, group["lr"], group["weight_decay"])
