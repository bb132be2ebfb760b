"""Fused dense-layer backward: the activation derivative and the bias gradient in one pass.

For a dense layer ``y = f(x @ w + b)`` the backward pass needs ``dz = dy * f'(z)``, then
``db = sum_rows(dz)``, ``dw = x.T @ dz`` and ``dx = dz @ w.T`` (the last two are
:mod:`.matmul` kernels).  :func:`act_bias_grad` computes ``dz`` and ``db`` together, reading
``dy`` and ``y`` once.  It expresses ``f'`` through the layer *output* ``y``, so the
forward pass (:func:`.matmul.matmul_bias_act`) never has to store the pre-activation
``z``.  That is possible for the activations in :data:`FROM_OUTPUT`:

===================  ==========================================================
identity             1
relu                 1 if y > 0 else 0
leaky_relu           1 if y > 0 else alpha            (needs alpha >= 0)
elu                  1 if y > 0 else y + alpha        (needs alpha >= 0)
sigmoid              beta * y * (1 - y)
tanh                 1 - y**2
softplus             1 - exp(-y) = -expm1(-y)
piecewise_linear     1 / (x_max - x_min) if 0 < y < 1 else 0
step                 0 (forward-only)
===================  ==========================================================

GELU and the Gaussian are not functions of their output alone; layers using them are
not fused.
"""
import math

from numba import prange

from ._jit import parallel_kernel, kernel
from .epilogue import EPILOGUE_CODES

#: Activations whose derivative :func:`act_bias_grad` computes from the output.
FROM_OUTPUT = frozenset({"identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh",
                         "softplus", "piecewise_linear", "step"})

_IDENTITY = EPILOGUE_CODES["identity"]
_RELU = EPILOGUE_CODES["relu"]
_LEAKY = EPILOGUE_CODES["leaky_relu"]
_ELU = EPILOGUE_CODES["elu"]
_SIGMOID = EPILOGUE_CODES["sigmoid"]
_TANH = EPILOGUE_CODES["tanh"]
_SOFTPLUS = EPILOGUE_CODES["softplus"]
_PIECEWISE = EPILOGUE_CODES["piecewise_linear"]
_STEP = EPILOGUE_CODES["step"]

# Columns per task: a few cache lines of each row, so the column sums of one task stay
# in registers/L1 while the task walks down the rows.
_COLUMN_BLOCK = 128
# Below this many elements the pass runs on one thread (waking the pool costs more).
_SERIAL_ELEMENTS = 1 << 15


@kernel
def _grad_columns(dy, y, dz, db, act, p0, p1, accumulate, has_bias, j0, j1):
    """``dz[:, j0:j1]`` and ``db[j0:j1]`` (see :func:`act_bias_grad`)."""
    n_rows = dy.shape[0]
    t = dy.dtype.type
    zero, one = t(0), t(1)
    a, b = t(p0), t(p1)
    for i in range(n_rows):
        # One loop per activation: the branch is taken once per row, and each loop
        # body is a simple select/multiply that LLVM vectorises.
        if act == _IDENTITY:
            for j in range(j0, j1):
                dz[i, j] = dy[i, j]
        elif act == _RELU:
            for j in range(j0, j1):
                dz[i, j] = dy[i, j] if y[i, j] > zero else zero
        elif act == _LEAKY:
            for j in range(j0, j1):
                dz[i, j] = dy[i, j] if y[i, j] > zero else a * dy[i, j]
        elif act == _ELU:
            for j in range(j0, j1):
                v = y[i, j]
                dz[i, j] = dy[i, j] if v > zero else dy[i, j] * (v + a)
        elif act == _SIGMOID:
            for j in range(j0, j1):
                v = y[i, j]
                dz[i, j] = dy[i, j] * a * v * (one - v)
        elif act == _TANH:
            for j in range(j0, j1):
                v = y[i, j]
                dz[i, j] = dy[i, j] * (one - v * v)
        elif act == _SOFTPLUS:
            for j in range(j0, j1):
                dz[i, j] = -dy[i, j] * math.expm1(-y[i, j])
        elif act == _PIECEWISE:
            inv_width = one / (b - a)
            for j in range(j0, j1):
                v = y[i, j]
                dz[i, j] = dy[i, j] * inv_width if (v > zero and v < one) else zero
        else:  # step: no gradient flows
            for j in range(j0, j1):
                dz[i, j] = zero
    if has_bias:
        if not accumulate:
            for j in range(j0, j1):
                db[j] = zero
        for i in range(n_rows):
            for j in range(j0, j1):
                db[j] += dz[i, j]


@parallel_kernel
def act_bias_grad(dy, y, dz, db, act, p0, p1, accumulate):
    """``dz = dy * f'(y)`` and ``db (+)= dz.sum(axis=0)`` in one pass.

    Parameters
    ----------
    dy, y, dz : (batch, features) C-contiguous arrays of one dtype; ``dz`` may be ``dy``.
    db : (features,) bias gradient, or a size-0 array when the layer has no bias.
    act : int, a code of :data:`.epilogue.EPILOGUE_CODES` in :data:`FROM_OUTPUT`.
    p0, p1 : float, the activation's parameters (as in the forward epilogue).
    accumulate : bool, add to ``db`` instead of overwriting it.

    Each column of ``db`` is summed in row order by one task, so the result does not
    depend on the thread count.
    """
    n_rows, n_cols = dy.shape
    has_bias = db.size > 0
    n_blocks = (n_cols + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK
    if n_rows * n_cols < _SERIAL_ELEMENTS or n_blocks == 1:
        _grad_columns(dy, y, dz, db, act, p0, p1, accumulate, has_bias, 0, n_cols)
    else:
        for blk in prange(n_blocks):
            j0 = blk * _COLUMN_BLOCK
            _grad_columns(dy, y, dz, db, act, p0, p1, accumulate, has_bias, j0,
                          min(j0 + _COLUMN_BLOCK, n_cols))
    return dz
