"""Bias + element-wise activation applied to an output in place: the GEMM epilogue.

A dense layer's forward pass is ``y = f(x @ w + b)``.  :func:`.matmul.matmul_bias_act`
applies ``f(. + b)`` to each output tile of the product right after the tile's last
``k`` block has been stored, while it is still in L1, so ``y`` is written to memory once
instead of three times (product, bias, activation).  :func:`bias_act_run` is that step for
one contiguous run of a row; :func:`bias_act_rows` applies it to a whole matrix, for
callers that already hold ``z = x @ w`` and for testing.

Activations are passed as integer codes (:data:`EPILOGUE_CODES`, from the records of
:mod:`.activation_specs`) with two float parameters ``p0, p1`` in the record's order:
sigmoid ``beta``; leaky_relu and elu ``alpha``; piecewise_linear ``x_min, x_max``; the
others ignore them.  ``act = -1`` (:data:`NO_EPILOGUE`) means "plain product": the GEMM
core skips the epilogue entirely.  Softmax works on whole rows, so it is not an epilogue.

The formulas are the records' forward formulas, compiled into one loop per activation
by :mod:`.act_elementwise` (:data:`.act_elementwise.EPILOGUE_RUNS`, the formula inlined
as in the element-wise kernels, same 'contract' fast-math flag), so a fused layer gives
the results of the unfused one; a test checks it.  NaN propagates as in the
NumPy reference: a fused forward pass must not hide a diverging layer.  No 'nnan'/'ninf'
flags are used.

The branch on ``act`` sits outside the element loops (``literal_unroll`` over the
``(code, loop)`` pairs), so each case is one simple loop over the run that LLVM
vectorises (the :mod:`.vmath` functions are plain arithmetic that inlines into the loop,
unlike ``math.exp``, which Numba lowers to scalar libm calls).
"""
import numba
import numpy as np
from numba import literal_unroll

from ._jit import kernel, parallel_kernel
from .act_elementwise import EPILOGUE_RUNS
# Activation name -> epilogue code, from the records of .activation_specs.
from .activation_specs import EPILOGUE_CODES

__all__ = ["EPILOGUE_CODES", "NO_EPILOGUE", "bias_act_run", "bias_act_rows",
           "epilogue_args"]


def epilogue_args(activation, params):
    """``(code, p0, p1)`` for an activation name and its parameters (as a layer holds
    them, in registry order; missing ones are 0): the arguments the fused kernels take."""
    return (EPILOGUE_CODES[activation], float(params[0]) if params else 0.0,
            float(params[1]) if len(params) > 1 else 0.0)


#: ``act`` value meaning "no epilogue": the product is stored (or accumulated) as it is.
NO_EPILOGUE = -1

_U = np.uint64

# Elements per task of bias_act_rows, and the size below which it runs on one thread
# (waking Numba's thread pool costs a few microseconds).
_ROWS_CHUNK = 1 << 14
_SERIAL_ELEMENTS = 1 << 15


# 'contract' lets LLVM fuse a*b + c into one FMA (rounding only, never NaN/Inf behaviour),
# as in kernels/activations.py, so both give the same results.
@kernel(fastmath={"contract"})
def bias_act_run(c, start, n, bias, bias_start, act, p0, p1):
    """``c[start + j] = f(c[start + j] + bias[bias_start + j])`` for ``j < n``, in place.

    Parameters
    ----------
    c : ndarray, 1-D, C-contiguous, float32 or float64
        Typically a flattened output matrix; the run is part of one row.
    start, n : int
        First index and length of the run.
    bias : ndarray, 1-D, same dtype
        Per-column bias; size 0 means no bias.
    bias_start : int
        Index of the bias of the run's first column.
    act : int
        A code of :data:`EPILOGUE_CODES` (any other value: no activation).
    p0, p1 : float
        The activation's parameters (see the module docstring).
    """
    s = _U(start)
    n = _U(n)
    t = c.dtype.type
    if bias.size != 0:
        b0 = _U(bias_start)
        for j in range(n):
            c[s + j] += bias[b0 + j]
    a = t(p0)
    b = t(p1)
    for entry in literal_unroll(EPILOGUE_RUNS):
        if act == entry[0]:
            entry[1](c, s, n, a, b)


@kernel
def _bias_act_chunk(q, zf, of, n_cols, bias, act, p0, p1, chunk):
    """Elements ``[q*chunk, (q+1)*chunk)`` of the flattened matrix, row run by row run."""
    lo = _U(q) * chunk
    hi = min(lo + chunk, _U(zf.size))
    in_place = zf.ctypes.data == of.ctypes.data
    while lo < hi:
        col = lo % n_cols
        n = min(n_cols - col, hi - lo)
        if not in_place:
            for j in range(n):
                of[lo + j] = zf[lo + j]
        bias_act_run(of, lo, n, bias, col, act, p0, p1)
        lo += n


@parallel_kernel
def bias_act_rows(z, bias, out, act, p0, p1):
    """``out = f(z + bias)`` element-wise, ``bias`` broadcast over the rows.

    Parameters
    ----------
    z : ndarray, shape (M, N), C-contiguous, float32 or float64
    bias : ndarray, shape (N,) or (0,) for no bias, same dtype
    out : ndarray, shape (M, N), C-contiguous, same dtype; may be ``z`` (in place)
    act : int
        A code of :data:`EPILOGUE_CODES`.
    p0, p1 : float
        The activation's parameters (see the module docstring).

    Returns
    -------
    out : ndarray, shape (M, N)
        The same object that was passed in.
    """
    zf = z.reshape(z.size)
    of = out.reshape(out.size)
    n_cols = _U(z.shape[1])
    size = _U(z.size)
    if size == _U(0):
        return out
    # Fixed-size chunks of whole row runs: each element's result does not depend on
    # the chunking anyway (it is element-wise), the size only bounds the scheduling.
    chunk = _U(_ROWS_CHUNK)
    n_chunks = (size + chunk - _U(1)) // chunk
    if size < _U(_SERIAL_ELEMENTS):
        _bias_act_chunk(_U(0), zf, of, n_cols, bias, act, p0, p1, size)
    else:
        for q in numba.prange(n_chunks):
            _bias_act_chunk(_U(q), zf, of, n_cols, bias, act, p0, p1, chunk)
    return out
