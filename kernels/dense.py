"""Fused dense-layer backward: the activation derivative and the bias gradient in one pass.

For a dense layer ``y = f(x @ w + b)`` the backward pass needs ``dz = dy * f'(z)``, then
``db = sum_rows(dz)``, ``dw = x.T @ dz`` and ``dx = dz @ w.T`` (the last two are
:mod:`.matmul` kernels).  :func:`act_bias_grad` computes ``dz`` and ``db`` together, reading
``dy`` and ``y`` once.  It expresses ``f'`` through the layer *output* ``y``, so the
forward pass (:func:`.matmul.matmul_bias_act`) never has to store the pre-activation
``z``.  That is possible for the activations in :data:`FROM_OUTPUT`, those whose record
in :mod:`.activation_specs` has a ``grad_from_output`` formula (ReLU: ``1 if y > 0``;
sigmoid: ``beta y (1 - y)``; softplus: ``-expm1(-y)``; ...).  GELU and the Gaussian are
not functions of their output alone; layers using them are not fused.

The formulas are compiled into one row loop per activation by :mod:`.act_elementwise`
(:data:`.act_elementwise.GRAD_ROWS`), walked here with ``literal_unroll``: the branch on
the code sits outside the vectorised loops.
"""
import numpy as np
from numba import literal_unroll, prange

from ._jit import kernel, parallel_kernel
from .act_elementwise import GRAD_ROWS
# FROM_OUTPUT: the activations whose derivative act_bias_grad computes from the output.
from .activation_specs import FROM_OUTPUT  # noqa: F401

# Rows per task: whole rows stream through memory (a task of 64 rows of 512 float32 is
# 128 KiB per array) and each task sums its rows into its own row of partial column
# sums.  The row blocks do not depend on the thread count, and the partial sums are
# added in block order, so ``db`` is the same on any number of threads.  Measured on
# 2048 x 512 float32 (ReLU), warm: 64-column tasks 0.18 ms, 64-row tasks 0.08 ms.
_ROW_BLOCK = 64
# Below this many elements the pass runs on one thread (waking the pool costs more).
_SERIAL_ELEMENTS = 1 << 15


@kernel
def _grad_rows(dy, y, dz, acc, act, p0, p1, r0, r1):
    """Rows ``r0:r1`` of ``dz``, their column sums added to ``acc``: the activation's
    rows pass, chosen once per task."""
    t = dy.dtype.type
    a, b = t(p0), t(p1)
    found = False
    for entry in literal_unroll(GRAD_ROWS):
        if act == entry[0]:
            found = True
            entry[1](dy, y, dz, acc, a, b, r0, r1)
    if not found:  # a code without a from-output formula: no gradient flows
        zero = t(0)
        for i in range(r0, r1):
            dzi = dz[i]
            for j in range(dzi.size):
                dzi[j] = zero


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
        # np.int64(0), not 0: a literal would compile every rows function a second time
        _grad_rows(dy, y, dz, partial[0], act, p0, p1, np.int64(0), n_rows)
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
