"""Adam and AdamW (decoupled weight decay), PyTorch's formulations and defaults."""
import math

from .base import Optimizer, _betas, _flag, _flat, _lr, _non_negative, _positive


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), PyTorch's formulation and defaults.

    Per parameter, at its step ``t = 1, 2, ...``::

        g = grad + weight_decay * param                      (L2 penalty in the gradient)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        v_max = max(v_max, v), and v_max replaces v below     (amsgrad)
        param -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    ``eps`` is added to the bias-corrected ``sqrt(v_hat)``, as PyTorch does.  The
    bias-correction factors are computed once per step in float64 and the update runs in
    the parameter's dtype.  Moments below the smallest normal float are stored as zero
    (the update differs from PyTorch's by less than any float resolves; see
    ``fastnn.kernels.optim``).

    Parameters
    ----------
    params : list of Parameter or of parameter-group dicts, optional
    lr : float, default 0.001
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment, each in [0, 1).
    eps : float, default 1e-8
        (> 0) added to the denominator.
    weight_decay : float, default 0.0
        L2 penalty added to the gradient (use :class:`AdamW` for decoupled decay).
    amsgrad : bool, default False
        Keep the running maximum of ``v`` (Reddi et al., 2018); one more state array.
    clip_norm, clip_value : float, optional
        Gradient clipping, see the module docstring.
    """

    _CHECKS = {"lr": _lr, "betas": _betas, "eps": _positive, "weight_decay": _non_negative,
               "amsgrad": _flag}
    #: AdamW: weight decay applied to the parameter, not added to the gradient.
    _decoupled = False

    def __init__(self, params=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, **kwargs):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "amsgrad": amsgrad}, **kwargs)

    def _init_state(self, param, group):
        state = {"step": 0, "exp_avg": self._zeros(param), "exp_avg_sq": self._zeros(param)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = self._zeros(param)
        return state

    def _update(self, backend, param, state, group):
        state["step"] = t = state["step"] + 1
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        p = _flat(param.data)
        # PyTorch computes these in Python floats too: step_size = lr / bias_correction1
        step_size = lr / (1.0 - beta1 ** t)
        bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** t)
        max_sq = (self._state_array(backend, state, "max_exp_avg_sq", param)
                  if group["amsgrad"] else self._absent(backend, p.dtype))
        if self._decoupled:
            l2, param_decay = 0.0, 1.0 - lr * wd
        else:
            l2, param_decay = wd, 1.0
        backend.adam_update(p, _flat(param._grad), state["exp_avg"], state["exp_avg_sq"],
                            max_sq, step_size, beta1, beta2, group["eps"], l2, param_decay,
                            bias_correction2_sqrt)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as PyTorch's AdamW.

    Each step first shrinks the parameter, ``param *= 1 - lr * weight_decay``, then takes
    the :class:`Adam` step with no L2 term in the gradient (one fused pass all the same).

    Parameters
    ----------
    params : list of Parameter or of parameter-group dicts, optional
    lr : float, default 0.001
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0.01
        Decoupled decay rate.  Biases and normalisation parameters usually get none:
        ``AdamW(weight_decay_groups(model), ...)``.
    amsgrad : bool, default False
    clip_norm, clip_value : float, optional
    """

    _decoupled = True

    def __init__(self, params=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, **kwargs):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, **kwargs)
