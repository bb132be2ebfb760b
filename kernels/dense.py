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
import numpy as np
from numba import prange

from . import vmath
from ._jit import kernel, parallel_kernel
# FROM_OUTPUT: the activations whose derivative act_bias_grad computes from the output.
from .activation_specs import FROM_OUTPUT  # noqa: F401
from .epilogue import EPILOGUE_CODES

# 'contract' lets LLVM fuse multiply-adds (rounding only, as in the activation kernels).
_FLAGS = {"contract"}


_IDENTITY = EPILOGUE_CODES["identity"]
_RELU = EPILOGUE_CODES["relu"]
_LEAKY = EPILOGUE_CODES["leaky_relu"]
_ELU = EPILOGUE_CODES["elu"]
_SIGMOID = EPILOGUE_CODES["sigmoid"]
_TANH = EPILOGUE_CODES["tanh"]
_SOFTPLUS = EPILOGUE_CODES["softplus"]
_PIECEWISE = EPILOGUE_CODES["piecewise_linear"]
_STEP = EPILOGUE_CODES["step"]

# Rows per task: whole rows stream through memory (a task of 64 rows of 512 float32 is
# 128 KiB per array) and each task sums its rows into its own row of partial column
# sums.  The row blocks do not depend on the thread count, and the partial sums are
# added in block order, so ``db`` is the same on any number of threads.  Measured on
# 2048 x 512 float32 (ReLU), warm: 64-column tasks 0.18 ms, 64-row tasks 0.08 ms.
_ROW_BLOCK = 64
# Below this many elements the pass runs on one thread (waking the pool costs more).
_SERIAL_ELEMENTS = 1 << 15


@kernel(fastmath=_FLAGS, inline="always")
def _grad_row(dyi, yi, dzi, acc, act, a, b):
    """One row: ``dzi = dyi * f'(yi)`` and ``acc += dzi``.

    The rows are 1-D arrays indexed from 0, so LLVM sees unit-stride, non-negative
    indices and vectorises each loop (2-D ``dz[i, j]`` indexing over column blocks kept
    every loop scalar: 18x slower on 2048 x 512).  ``dzi`` may be ``dyi``.
    """
    t = dyi.dtype.type
    zero, one = t(0), t(1)
    n = dzi.size
    if act == _IDENTITY:
        for j in range(n):
            v = dyi[j]
            dzi[j] = v
            acc[j] += v
    elif act == _RELU:
        for j in range(n):
            v = dyi[j] if yi[j] > zero else zero
            dzi[j] = v
            acc[j] += v
    elif act == _LEAKY:
        for j in range(n):
            v = dyi[j] if yi[j] > zero else a * dyi[j]
            dzi[j] = v
            acc[j] += v
    elif act == _ELU:
        for j in range(n):
            u = yi[j]
            v = dyi[j] if u > zero else dyi[j] * (u + a)
            dzi[j] = v
            acc[j] += v
    elif act == _SIGMOID:
        for j in range(n):
            u = yi[j]
            v = dyi[j] * a * u * (one - u)
            dzi[j] = v
            acc[j] += v
    elif act == _TANH:
        for j in range(n):
            u = yi[j]
            v = dyi[j] * (one - u * u)
            dzi[j] = v
            acc[j] += v
    elif act == _SOFTPLUS:
        for j in range(n):
            v = -dyi[j] * vmath.expm1(-yi[j])
            dzi[j] = v
            acc[j] += v
    elif act == _PIECEWISE:
        inv_width = one / (b - a)
        for j in range(n):
            u = yi[j]
            v = dyi[j] * inv_width if (u > zero and u < one) else zero
            dzi[j] = v
            acc[j] += v
    else:  # step: no gradient flows
        for j in range(n):
            dzi[j] = zero


@kernel
def _grad_rows(dy, y, dz, acc, act, p0, p1, r0, r1):
    """Rows ``r0:r1`` of ``dz``, their column sums added to ``acc``."""
    t = dy.dtype.type
    a, b = t(p0), t(p1)
    for i in range(r0, r1):
        _grad_row(dy[i], y[i], dz[i], acc, act, a, b)


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

    The rows are split into fixed blocks of :data:`_ROW_BLOCK`; each block's column sums
    are added in block order, so the result does not depend on the thread count.
    """
    n_rows, n_cols = dy.shape
    n_tasks = (n_rows + _ROW_BLOCK - 1) // _ROW_BLOCK
    if n_rows * n_cols < _SERIAL_ELEMENTS or n_tasks == 1:
        n_tasks = 1
    partial = np.zeros((n_tasks, n_cols), dy.dtype)
    if n_tasks == 1:
        _grad_rows(dy, y, dz, partial[0], act, p0, p1, 0, n_rows)
    else:
        for task in prange(n_tasks):
            r0 = task * _ROW_BLOCK
            _grad_rows(dy, y, dz, partial[task], act, p0, p1, r0, min(r0 + _ROW_BLOCK, n_rows))
    if db.size > 0:
        if not accumulate:
            for j in range(n_cols):
                db[j] = dy.dtype.type(0)
        for task in range(n_tasks):
            pt = partial[task]
            for j in range(n_cols):
                db[j] += pt[j]
    return dz
