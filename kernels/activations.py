"""Activation functions and their derivatives.

Every activation ``name`` has two kernels with uniform signatures::

    name_forward(x, out, *params)            out = f(x)
    name_backward(dy, x, y, out, *params)    out = dy * f'(x)      (y = f(x) from the forward)

``x``, ``y``, ``dy`` and ``out`` are C-contiguous 2-D arrays (batch, features) of one dtype;
``out`` may be the same array as ``dy`` (in-place backward) or ``x`` (in-place forward).
Scalar parameters (``beta``, ``alpha``, ``x_min``, ``x_max``) come last, are converted to the
array dtype inside the kernel, and have defaults listed in :data:`ACTIVATIONS`, derived
(like every other table about activations) from the records of :mod:`.activation_specs`.

NaN in gives NaN out in every forward except ``step``, whose output is a 0/1 mask
(``x >= 0`` is false for NaN, so NaN maps to 0, as in the NumPy reference).

How the element-wise kernels are built (each in three parts):

* ``_name(v, ...)``: the function of one element, written with :mod:`.vmath` so that LLVM
  inlines and vectorises it (``math.exp`` would be a scalar libm call, ~10x slower).
* ``_name_forward_span(x, out, ...)``: the loop over a flat stretch of elements.  When
  ``out`` is ``x`` itself it loops over ``out`` alone: with two names for one buffer LLVM's
  runtime overlap check fails and it falls back to scalar code (10x slower in place).
* ``name_forward``: flattens the arrays (one statement per array: a tuple assignment of
  several ``reshape`` calls miscompiled under ``parallel=True`` in numba 0.68.1, mixing up
  the arrays) and runs the span serially below a size threshold, else in chunks on
  ``prange`` (see :data:`SERIAL_MAX_TRANSCENDENTAL` and :data:`SERIAL_MAX_BYTES`).
  Waking Numba's thread pool costs 1-3 µs (more when its threads have gone to sleep),
  which is more than small problems take serially.

The kernels live in :mod:`.act_piecewise` (identity, ReLU, leaky ReLU, piecewise linear,
step: memory-bound), :mod:`.act_smooth` (sigmoid, tanh, ELU, softplus, GELU, Gaussian:
built on :mod:`.vmath`) and :mod:`.act_softmax` (rows); this module is their registry.

Softmax works on rows, in blocks of rows.  Constants are built with ``x.dtype.type(c)`` (or
:func:`.vmath.like` for scalars) so float32 stays float32.
"""
from ._act_common import (CHUNK_CHEAP, CHUNK_TRANSCENDENTAL,  # noqa: F401
                          SERIAL_MAX_BYTES, SERIAL_MAX_TRANSCENDENTAL)
from .act_piecewise import (identity_backward, identity_forward,  # noqa: F401
                            leaky_relu_backward, leaky_relu_forward,
                            piecewise_linear_backward, piecewise_linear_forward,
                            relu_backward, relu_forward, step_backward, step_forward)
from .act_smooth import (elu_backward, elu_forward, gaussian_backward,  # noqa: F401
                         gaussian_forward, gelu_backward, gelu_forward, sigmoid_backward,
                         sigmoid_forward, softplus_backward, softplus_forward,
                         tanh_backward, tanh_forward)
from .act_softmax import softmax_backward, softmax_forward  # noqa: F401


# --------------------------------------------------------------------------- the registry
# The one list of activations is kernels/activation_specs.py: ACTIVATIONS (name ->
# default parameters, in the order the kernels take them), NOT_DIFFERENTIABLE and
# ROW_WISE are derived from its records.
from .activation_specs import ACTIVATIONS, NOT_DIFFERENTIABLE, ROW_WISE  # noqa: E402

__all__ = ([f"{name}_{way}" for name in ACTIVATIONS for way in ("forward", "backward")]
           + ["ACTIVATIONS", "NOT_DIFFERENTIABLE", "ROW_WISE"])
