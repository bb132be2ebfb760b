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

How the element-wise kernels are built: each activation's formulas are written once, as
scalar functions in its record in :mod:`.activation_specs` (with :mod:`.vmath` functions,
which LLVM inlines and vectorises; ``math.exp`` would be a scalar libm call, ~10x slower).
:mod:`.act_elementwise` compiles them into two generic kernels,
``activation_forward(x, out, code, p0, p1)`` and
``activation_backward(dy, x, y, out, code, p0, p1)``, that run the activation's own element
loop serially below a size threshold, else in chunks on ``prange`` (see
:data:`SERIAL_MAX_TRANSCENDENTAL` and :data:`SERIAL_MAX_BYTES`; waking Numba's thread pool
costs 1-3 µs, more than small problems take serially), and gives every activation its
``name_forward`` / ``name_backward`` on top of them.  The GEMM epilogue and the fused dense
backward compile the same formulas.

Softmax works on rows, in blocks of rows.  Constants are built with ``x.dtype.type(c)`` (or
:func:`.vmath.like` for scalars) so float32 stays float32.
"""
from ._act_common import (CHUNK_CHEAP, CHUNK_TRANSCENDENTAL,  # noqa: F401
                          SERIAL_MAX_BYTES, SERIAL_MAX_TRANSCENDENTAL)
from .act_elementwise import *  # noqa: F401,F403  (name_forward, name_backward)
from .act_softmax import softmax_backward, softmax_forward  # noqa: F401


# --------------------------------------------------------------------------- the registry
# The one list of activations is kernels/activation_specs.py: ACTIVATIONS (name ->
# default parameters, in the order the kernels take them), NOT_DIFFERENTIABLE and
# ROW_WISE are derived from its records.
from .activation_specs import ACTIVATIONS, NOT_DIFFERENTIABLE, ROW_WISE  # noqa: E402

__all__ = ([f"{name}_{way}" for name in ACTIVATIONS for way in ("forward", "backward")]
           + ["ACTIVATIONS", "NOT_DIFFERENTIABLE", "ROW_WISE"])
