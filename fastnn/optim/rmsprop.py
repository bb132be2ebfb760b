"""RMSprop, with optional momentum and centring, PyTorch's formulation and defaults."""
from .base import Optimizer, _flag, _flat, _fraction, _lr, _non_negative, _positive


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012), PyTorch's formulation and defaults.

    Per parameter::

        g = grad + weight_decay * param
        square_avg = alpha * square_avg + (1 - alpha) * g**2
        avg = sqrt(square_avg) + eps
        centered: grad_avg = alpha * grad_avg + (1 - alpha) * g
                  avg = sqrt(square_avg - grad_avg**2) + eps
        momentum > 0: buf = momentum * buf + g / avg;  param -= lr * buf
        else:         param -= lr * g / avg

    ``eps`` is added outside the square root, as in PyTorch.  State below the smallest
    normal float is stored as zero, and the centred variance is taken as 0 where rounding
    made it negative (PyTorch would give NaN there).

    Parameters
    ----------
    params : list of Parameter or of parameter-group dicts, optional
    lr : float, default 0.01
    alpha : float, default 0.99
        Smoothing constant, in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0.0
    momentum : float, default 0.0
        In [0, 1); with momentum the state has a momentum buffer.
    centered : bool, default False
        Divide by an estimate of the gradient's variance instead of its second moment.
    clip_norm, clip_value : float, optional
    """

    _CHECKS = {"lr": _lr, "alpha": _fraction, "eps": _positive, "weight_decay": _non_negative,
               "momentum": _fraction, "centered": _flag}

    def __init__(self, params=None, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, **kwargs):
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps,
                                  "weight_decay": weight_decay, "momentum": momentum,
                                  "centered": centered}, **kwargs)

    def _init_state(self, param, group):
        state = {"step": 0, "square_avg": self._zeros(param)}
        if group["momentum"]:
            state["momentum_buffer"] = self._zeros(param)
        if group["centered"]:
            state["grad_avg"] = self._zeros(param)
        return state

    def _update(self, backend, param, state, group):
        state["step"] += 1
        p = _flat(param.data)
        absent = self._absent(backend, p.dtype)
        backend.rmsprop_update(p, _flat(param._grad), state["square_avg"],
                               self._state_array(backend, state, "grad_avg", param)
                               if group["centered"] else absent,
                               self._state_array(backend, state, "momentum_buffer", param)
                               if group["momentum"] else absent,
                               group["lr"], group["alpha"], group["eps"],
                               group["weight_decay"], group["momentum"])
