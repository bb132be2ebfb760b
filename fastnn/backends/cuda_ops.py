"""The CUDA backend's operations: the kernels of ``fastnn.kernels.cuda``, by name.

Importing this module imports ``numba.cuda`` and fails with one
:class:`~fastnn.backends.BackendUnavailableError` that names what is missing (numba-cuda,
a GPU, a driver) and how to install it.  Arrays live in device memory (``MEMORY =
"cuda"``): parameters, gradients, optimiser state and activations stay there for the whole
training loop; only batches go in (:func:`asarray`) and loss values come out.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported) the
same code runs on the CPU, slowly; the tests use it.
"""
import importlib.util
import os

import numpy as np

from . import BackendUnavailableError
from .memory import is_device_array, to_host

_INSTALL = ('install the GPU support with  python -m pip install "fastnn[cuda13]"  (or '
            '[cuda12], matching the driver: NVIDIA\'s numba-cuda with NVVM) on a machine with '
            'an NVIDIA GPU and driver, or use backend="numba"')


def _require_cuda():
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba ships numba.cuda
        raise BackendUnavailableError(f"the 'cuda' backend cannot import numba.cuda ({exc}); "
                                      f"{_INSTALL}") from None
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return cuda
    try:
        cuda.get_current_device()
    except Exception as exc:  # CudaSupportError (no driver), CudaDriverError (no GPU), ...
        missing = ("" if importlib.util.find_spec("numba_cuda") else
                   " numba-cuda is not installed either.")
        reason = " ".join(str(exc).split()).rstrip(" :.")
        raise BackendUnavailableError(
            f"the 'cuda' backend needs an NVIDIA GPU with a working CUDA driver, and numba "
            f"could not use one: {reason}.{missing} To use it, {_INSTALL}. To try the "
            "backend without a GPU, set NUMBA_ENABLE_CUDASIM=1 before importing fastnn "
            "(Numba's CUDA simulator: correct, but very slow).") from None
    return cuda


cuda = _require_cuda()

from ..kernels.cuda.activations import *  # noqa: E402,F401,F403
from ..kernels.cuda.attention import attention_backward, attention_forward  # noqa: E402,F401
from ..kernels.cuda.bias import bias_add, bias_grad  # noqa: E402,F401
from ..kernels.cuda.dense import act_bias_grad, bias_act  # noqa: E402
from ..kernels.cuda.dropout import dropout_backward, dropout_forward  # noqa: E402,F401
from ..kernels.cuda.losses import (  # noqa: E402,F401
    bce_logits, bce_logits_weighted, mse, mse_weighted, softmax_xent, softmax_xent_soft,
    softmax_xent_soft_weighted, softmax_xent_weighted)
from ..kernels.cuda.metrics import (  # noqa: E402,F401
    abs_error_sum, argmax_matches, argmax_matches_soft, sign_matches, squared_error_sum,
    top_k_matches, top_k_matches_soft)
from ..kernels.cuda.embedding import embedding_backward, embedding_forward  # noqa: E402,F401
from ..kernels.cuda.heads import add, merge_heads, split_heads  # noqa: E402,F401
from ..kernels.cuda.matmul import matmul, matmul_nt, matmul_tn  # noqa: E402,F401
from ..kernels.cuda.norm import (  # noqa: E402,F401
    batch_norm_backward, batch_norm_backward_eval, batch_norm_forward_eval,
    batch_norm_forward_train, layer_norm_backward, layer_norm_forward)
from ..kernels.cuda.pooling import mean_pool_backward, mean_pool_forward  # noqa: E402,F401
from ..kernels.cuda.optim import (  # noqa: E402,F401
    adam_update, clip_inplace, rmsprop_update, scale_inplace, sgd_momentum_update, sgd_update,
    sum_of_squares)
from ..kernels.epilogue import epilogue_args  # noqa: E402

#: Where this backend's arrays live (see :mod:`fastnn.backends.memory`).
MEMORY = "cuda"


# --------------------------------------------------------------------------- memory
def empty(shape, dtype):
    return cuda.device_array(shape, dtype=np.dtype(dtype))


def zeros(shape, dtype):
    return cuda.to_device(np.zeros(shape, dtype=np.dtype(dtype)))


def asarray(array, dtype):
    """``array`` as a device array of ``dtype``: itself if it already is one, else a copy
    to the device (the only host-to-device transfer of a training step: the batch)."""
    dtype = np.dtype(dtype)
    if is_device_array(array):
        if array.dtype == dtype:
            return array
        array = array.copy_to_host()
    return cuda.to_device(np.ascontiguousarray(array, dtype=dtype))


def to_numpy(array):
    return to_host(array)


# --------------------------------------------------------------------------- fused dense
_no_bias = {}


def _bias_or_empty(bias, dtype):
    if bias is not None:
        return bias
    if dtype not in _no_bias:
        _no_bias[dtype] = cuda.device_array(0, dtype=dtype)
    return _no_bias[dtype]


def dense_forward(x, w, bias, out, activation, *params):
    """``out = f(x @ w + bias)``: the tiled GEMM, then bias and activation in one pass
    over the output, in place."""
    matmul(x, w, out)
    bias_act(out, _bias_or_empty(bias, out.dtype), out, *epilogue_args(activation, params))
    return out


def dense_backward(dy, x, w, y, dz, dw, db, dx, accumulate_w, accumulate_b, activation,
                   *params):
    """``dz = dy * f'(z)`` (from ``y``) and the bias gradient in one kernel, then the two
    gradient GEMMs."""
    act_bias_grad(dy, y, dz, _bias_or_empty(db, dy.dtype), *epilogue_args(activation, params),
                  accumulate_b)
    matmul_tn(x, dz, dw, accumulate_w)
    if dx is not None:
        matmul_nt(dz, w, dx)
    return dx
