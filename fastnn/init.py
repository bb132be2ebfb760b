"""Weight initialisers and the library's random-number source.

For a weight of shape (fan_in, fan_out):

=================  ==============================  =========================
name               distribution                    variance
=================  ==============================  =========================
glorot_uniform     U(-a, a), a = sqrt(6/(in+out))  2 / (fan_in + fan_out)
glorot_normal      N(0, 2/(in+out))                2 / (fan_in + fan_out)
he_uniform         U(-a, a), a = sqrt(6/in)        2 / fan_in
he_normal          N(0, 2/in)                      2 / fan_in
=================  ==============================  =========================

``xavier_*`` are aliases of ``glorot_*`` and ``kaiming_*`` of ``he_*``.  Glorot suits
sigmoid/tanh layers (Glorot & Bengio, 2010), He suits ReLU layers (He et al., 2015).
Values are drawn in float64 and then cast, so one seed gives the same network in either
precision.
"""
import math

import numpy as np

from .validation import check_choice, check_number

_global_rng = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator that layers created without an explicit ``seed`` draw from."""
    global _global_rng
    _global_rng = np.random.default_rng(seed)


def make_rng(seed=None):
    """A ``numpy.random.Generator``: from ``seed`` (int, Generator) or the global one."""
    if seed is None:
        return _global_rng
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(check_number(seed, "seed", low=0, integer=True))


def _glorot_uniform(rng, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def _glorot_normal(rng, fan_in, fan_out):
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))


def _he_uniform(rng, fan_in, fan_out):
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def _he_normal(rng, fan_in, fan_out):
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


#: name -> function(rng, fan_in, fan_out) returning a float64 (fan_in, fan_out) array.
INITIALIZERS = {
    "glorot_uniform": _glorot_uniform,
    "glorot_normal": _glorot_normal,
    "xavier_uniform": _glorot_uniform,
    "xavier_normal": _glorot_normal,
    "he_uniform": _he_uniform,
    "he_normal": _he_normal,
    "kaiming_uniform": _he_uniform,
    "kaiming_normal": _he_normal,
}


def init_weight(init, fan_in, fan_out, dtype, rng):
    """A (fan_in, fan_out) weight drawn by the initialiser named ``init``."""
    draw = check_choice(init, "initializer", INITIALIZERS)
    return np.ascontiguousarray(draw(rng, fan_in, fan_out), dtype=dtype)


def init_bias(bias_init, fan_out, dtype):
    """A (fan_out,) bias: ``"zeros"`` or a constant such as ``0.01`` (also ``"constant:0.01"``)."""
    if isinstance(bias_init, str):
        if bias_init.lower() == "zeros":
            value = 0.0
        elif bias_init.lower().startswith("constant:"):
            value = float(bias_init.split(":", 1)[1])
        else:
            raise ValueError(f"unknown bias initializer {bias_init!r}; valid: 'zeros', "
                             "a number such as 0.01, or 'constant:<value>'")
    else:
        value = check_number(bias_init, "bias_init")
    return np.full(fan_out, value, dtype=dtype)
