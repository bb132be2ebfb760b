"""The Numba backend's operations: the kernels of ``fastnn.kernels``, by name."""
from ..kernels.activations import *  # noqa: F401,F403
from ..kernels.bias import bias_add, bias_grad  # noqa: F401
from ..kernels.losses import bce_logits, mse, softmax_xent, softmax_xent_soft  # noqa: F401
from ..kernels.matmul import matmul, matmul_nt, matmul_tn  # noqa: F401
from ..kernels.optim import (  # noqa: F401
    clip_inplace, scale_inplace, sgd_momentum_update, sgd_update, sum_of_squares)
