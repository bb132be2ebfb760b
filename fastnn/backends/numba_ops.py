"""The Numba backend's operations: the kernels of ``fastnn.kernels``, by name.

The Numba backend is the NumPy backend with these operations in place of NumPy's
(:mod:`fastnn.backends`); an operation not defined here runs NumPy's version.  Most are
kernels as they are; the fused dense-layer operations are short compositions of kernels
that translate activation names into the kernels' codes.
"""
import numpy as np

from ..kernels.activations import *  # noqa: F401,F403
from ..kernels.attention import attention_backward, attention_forward  # noqa: F401
from ..kernels.batch_norm import (  # noqa: F401
    batch_norm_backward, batch_norm_backward_eval, batch_norm_forward_eval,
    batch_norm_forward_train)
from ..kernels.bias import bias_add, bias_grad  # noqa: F401
from ..kernels.dense import act_bias_grad
from ..kernels.dropout import dropout_backward, dropout_forward  # noqa: F401
from ..kernels.embedding import embedding_backward, embedding_forward  # noqa: F401
from ..kernels.epilogue import epilogue_args
from ..kernels.layer_norm import layer_norm_backward, layer_norm_forward  # noqa: F401
from ..kernels.losses import (  # noqa: F401
    bce_logits, bce_logits_weighted, mse, mse_weighted, softmax_xent, softmax_xent_soft,
    softmax_xent_soft_weighted, softmax_xent_weighted)
from ..kernels.matmul import matmul, matmul_bias_act, matmul_nt, matmul_tn  # noqa: F401
from ..kernels.pooling import mean_pool_backward, mean_pool_forward  # noqa: F401
from ..kernels.optim import (  # noqa: F401
    adam_update, clip_inplace, rmsprop_update, scale_inplace, sgd_momentum_update, sgd_update,
    sum_of_squares)

# Numba's wrapper of a kernel that returns an array turns a Ctrl-C that arrives during
# the kernel into SystemError; the backend wraps these operations to raise a plain
# KeyboardInterrupt (fastnn/interrupts.py says why).
NUMBA_CPU_KERNELS = True

_NO_BIAS = {np.dtype(np.float32): np.empty(0, np.float32),
            np.dtype(np.float64): np.empty(0, np.float64)}


def dense_forward(x, w, bias, out, activation, *params):
    """``out = f(x @ w + bias)`` in one pass: bias and activation in the GEMM epilogue."""
    return matmul_bias_act(x, w, _NO_BIAS[x.dtype] if bias is None else bias, out,
                           *epilogue_args(activation, params))


def dense_backward(dy, x, w, y, dz, dw, db, dx, accumulate_w, accumulate_b, activation,
                   *params):
    """``dz``/``db`` in one pass (:func:`act_bias_grad`), then the two gradient GEMMs."""
    act_bias_grad(dy, y, dz, _NO_BIAS[dy.dtype] if db is None else db,
                  *epilogue_args(activation, params), accumulate_b)
    matmul_tn(x, dz, dw, accumulate_w)
    if dx is not None:
        matmul_nt(dz, w, dx)
    return dx
