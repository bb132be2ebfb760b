"""LayerNorm and BatchNorm on the GPU: the twins of :mod:`fastnn.kernels.layer_norm` and
:mod:`fastnn.kernels.batch_norm`.

Same operations, signatures, conventions (size-0 ``gamma``/``beta``/gradient outputs for
absent ones; statistics in the input's dtype) and formulas as the CPU kernels; see that
module's docstring.  Every sum is a fixed tree in shared memory, without atomics: the
results depend on the shape only, run to run.

LayerNorm (statistics per row): **a block per row** (:data:`THREADS` threads, grid-stride
over the rows).  The threads stride along the row (coalesced), and each sum is a tree in
shared memory; the mean and variance by the corrected two-pass algorithm, as on the CPU.
The backward is two launches: ``dgamma``/``dbeta`` as column sums (the column layout
below), then ``dx`` with a block per row (in that order, so ``dx`` may be ``dy``).

BatchNorm (statistics per column): **a block per strip of** :data:`COLUMNS` **columns**,
with :data:`ROWS` threads per column (as :func:`.bias.bias_grad`): thread ``(tx, ty)``
takes rows ``ty, ty + ROWS, ...`` of column ``tx`` (a warp reads 32 consecutive elements
of a row), and the ``ROWS`` partial sums of a column are added by a tree in shared memory.
A block owns whole columns, so one launch does everything: the statistics (corrected two
passes about the pivot ``x[0]``, as on the CPU), the running statistics, and then ``y``;
the backward likewise takes the column sums and then writes ``dx``.  Evaluation mode's
forward is element-wise (grid-stride); its backward (the running statistics constant:
``dx = dy * gamma * rstd``, ``dgamma (+)= sum(dy * xhat)``, ``dbeta (+)= sum(dy)``) is one
launch of the column layout, ``dx`` written in the pass that takes the sums.
"""
import math

import numba
from numba import cuda

from ._common import MAX_BLOCKS, THREADS, grid_1d, jit_family, ptx_entries

__all__ = ["layer_norm_forward", "layer_norm_backward", "batch_norm_forward_train",
           "batch_norm_forward_eval", "batch_norm_backward", "batch_norm_backward_eval"]

#: Columns per block of the column kernels (one warp wide: coalesced row segments).
COLUMNS = 32
#: Threads per column in those blocks (a power of two: tree reduction).
ROWS = 8

assert THREADS & (THREADS - 1) == 0 and ROWS & (ROWS - 1) == 0


# inline="always": the device functions are never compiled on their own, which would ask
# the current GPU for its compute capability (see .losses).
@cuda.jit(device=True, inline="always")
def _row_total(buffer, tid, value):
    """Sum of ``value`` over a one-dimensional block of ``THREADS`` threads, returned to
    every thread; all threads must call it."""
    buffer[tid] = value
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if tid < step:
            buffer[tid] += buffer[tid + step]
        cuda.syncthreads()
        step //= 2
    total = buffer[0]
    cuda.syncthreads()              # all have read it before the buffer is reused
    return total


@cuda.jit(device=True, inline="always")
def _column_total(buffer, tx, ty, value):
    """Sum of ``value`` over the ``ROWS`` threads of column ``tx`` of a ``(COLUMNS,
    ROWS)`` block (``buffer`` is ``(ROWS, COLUMNS)``), returned to each of them."""
    buffer[ty, tx] = value
    cuda.syncthreads()
    step = ROWS // 2
    while step > 0:
        if ty < step:
            buffer[ty, tx] += buffer[ty + step, tx]
        cuda.syncthreads()
        step //= 2
    total = buffer[0, tx]
    cuda.syncthreads()
    return total


def _make_kernels(dtype):
    zero = dtype(0)
    one = dtype(1)

    # ----------------------------------------------------------------- LayerNorm
    def layer_norm_forward_kernel(x, gamma, beta, eps, y, mean, rstd):
        n_rows, n_cols = x.shape
        buf_a = cuda.shared.array(THREADS, dtype)
        buf_b = cuda.shared.array(THREADS, dtype)
        tid = cuda.threadIdx.x
        has_gamma = gamma.size > 0
        has_beta = beta.size > 0
        inv_n = one / dtype(n_cols)
        for i in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
            s = zero
            for j in range(tid, n_cols, THREADS):
                s += x[i, j]
            m = _row_total(buf_a, tid, s) * inv_n
            c = zero
            q = zero
            for j in range(tid, n_cols, THREADS):
                d = x[i, j] - m
                c += d
                q += d * d
            c = _row_total(buf_a, tid, c)
            q = _row_total(buf_b, tid, q)
            mu = m + c * inv_n
            v = (q - c * c * inv_n) * inv_n
            v = zero if v < zero else v
            r = one / math.sqrt(v + eps)
            if tid == 0:
                mean[i] = mu
                rstd[i] = r
            for j in range(tid, n_cols, THREADS):
                out = (x[i, j] - mu) * r
                if has_gamma:
                    out = out * gamma[j]
                if has_beta:
                    out = out + beta[j]
                y[i, j] = out

    def layer_norm_dx_kernel(dy, x, gamma, mean, rstd, dx):
        n_rows, n_cols = x.shape
        buf_a = cuda.shared.array(THREADS, dtype)
        buf_b = cuda.shared.array(THREADS, dtype)
        tid = cuda.threadIdx.x
        has_gamma = gamma.size > 0
        inv_n = one / dtype(n_cols)
        for i in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
            m = mean[i]
            r = rstd[i]
            sg = zero
            sgx = zero
            for j in range(tid, n_cols, THREADS):
                g = dy[i, j] * gamma[j] if has_gamma else dy[i, j]
                sg += g
                sgx += g * ((x[i, j] - m) * r)
            a = _row_total(buf_a, tid, sg) * inv_n
            b = _row_total(buf_b, tid, sgx) * inv_n
            for j in range(tid, n_cols, THREADS):
                g = dy[i, j] * gamma[j] if has_gamma else dy[i, j]
                dx[i, j] = r * (g - a - ((x[i, j] - m) * r) * b)

    def layer_norm_param_grad_kernel(dy, x, mean, rstd, dgamma, dbeta, accumulate):
        n_rows, n_cols = x.shape
        buf_a = cuda.shared.array((ROWS, COLUMNS), dtype)
        buf_b = cuda.shared.array((ROWS, COLUMNS), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        for col0 in range(cuda.blockIdx.x * COLUMNS, n_cols, cuda.gridDim.x * COLUMNS):
            col = col0 + tx
            sg = zero
            sb = zero
            if col < n_cols:
                for i in range(ty, n_rows, ROWS):
                    d = dy[i, col]
                    sg += d * ((x[i, col] - mean[i]) * rstd[i])
                    sb += d
            sg = _column_total(buf_a, tx, ty, sg)
            sb = _column_total(buf_b, tx, ty, sb)
            if ty == 0 and col < n_cols:
                if dgamma.size > 0:
                    dgamma[col] = dgamma[col] + sg if accumulate else sg
                if dbeta.size > 0:
                    dbeta[col] = dbeta[col] + sb if accumulate else sb

    # ----------------------------------------------------------------- BatchNorm
    def batch_norm_train_kernel(x, gamma, beta, eps, momentum, unbias, running_mean,
                                running_var, y, mean, rstd):
        n_rows, n_cols = x.shape
        buf_a = cuda.shared.array((ROWS, COLUMNS), dtype)
        buf_b = cuda.shared.array((ROWS, COLUMNS), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        inv_n = one / dtype(n_rows)
        for col0 in range(cuda.blockIdx.x * COLUMNS, n_cols, cuda.gridDim.x * COLUMNS):
            col = col0 + tx
            valid = col < n_cols
            pivot = x[0, col] if valid else zero
            s = zero
            if valid:
                for i in range(ty, n_rows, ROWS):
                    s += x[i, col] - pivot
            shifted = _column_total(buf_a, tx, ty, s) * inv_n
            c = zero
            q = zero
            if valid:
                for i in range(ty, n_rows, ROWS):
                    d = (x[i, col] - pivot) - shifted
                    c += d
                    q += d * d
            c = _column_total(buf_a, tx, ty, c)
            q = _column_total(buf_b, tx, ty, q)
            if valid:
                mu = pivot + (shifted + c * inv_n)
                v = (q - c * c * inv_n) * inv_n
                v = zero if v < zero else v
                r = one / math.sqrt(v + eps)
                if ty == 0:
                    mean[col] = mu
                    rstd[col] = r
                    if running_mean.size > 0:
                        keep = one - momentum
                        running_mean[col] = keep * running_mean[col] + momentum * mu
                        running_var[col] = keep * running_var[col] + momentum * (v * unbias)
                scale = gamma[col] * r if gamma.size > 0 else r
                b = beta[col] if beta.size > 0 else zero
                for i in range(ty, n_rows, ROWS):
                    # y may be x: every thread read its pivot before the first barrier
                    y[i, col] = (x[i, col] - mu) * scale + b

    def batch_norm_eval_kernel(x, gamma, beta, eps, running_mean, running_var, y):
        n_cols = x.shape[1]
        has_beta = beta.size > 0
        for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            i = k // n_cols
            j = k - i * n_cols
            r = one / math.sqrt(running_var[j] + eps)
            scale = gamma[j] * r if gamma.size > 0 else r
            out = (x[i, j] - running_mean[j]) * scale
            y[i, j] = out + beta[j] if has_beta else out

    def batch_norm_backward_kernel(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, accumulate):
        n_rows, n_cols = x.shape
        buf_a = cuda.shared.array((ROWS, COLUMNS), dtype)
        buf_b = cuda.shared.array((ROWS, COLUMNS), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        inv_n = one / dtype(n_rows)
        for col0 in range(cuda.blockIdx.x * COLUMNS, n_cols, cuda.gridDim.x * COLUMNS):
            col = col0 + tx
            valid = col < n_cols
            m = mean[col] if valid else zero
            s_dy = zero
            s_dxc = zero
            if valid:
                for i in range(ty, n_rows, ROWS):
                    d = dy[i, col]
                    s_dy += d
                    s_dxc += d * (x[i, col] - m)
            s_dy = _column_total(buf_a, tx, ty, s_dy)
            s_dxc = _column_total(buf_b, tx, ty, s_dxc)
            if valid:
                r = rstd[col]
                s_dxh = s_dxc * r                       # dgamma of this batch
                if ty == 0:
                    if dgamma.size > 0:
                        dgamma[col] = dgamma[col] + s_dxh if accumulate else s_dxh
                    if dbeta.size > 0:
                        dbeta[col] = dbeta[col] + s_dy if accumulate else s_dy
                a = gamma[col] * r if gamma.size > 0 else r
                mdy = s_dy * inv_n
                cc = a * r * s_dxh * inv_n
                for i in range(ty, n_rows, ROWS):
                    dx[i, col] = a * (dy[i, col] - mdy) - cc * (x[i, col] - m)

    def batch_norm_backward_eval_kernel(dy, x, gamma, eps, running_mean, running_var, dx,
                                        dgamma, dbeta, accumulate):
        n_rows, n_cols = x.shape
        buf_a = cuda.shared.array((ROWS, COLUMNS), dtype)
        buf_b = cuda.shared.array((ROWS, COLUMNS), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        for col0 in range(cuda.blockIdx.x * COLUMNS, n_cols, cuda.gridDim.x * COLUMNS):
            col = col0 + tx
            valid = col < n_cols
            s_dy = zero
            s_dxc = zero
            r = one
            if valid:
                m = running_mean[col]
                r = one / math.sqrt(running_var[col] + eps)
                a = gamma[col] * r if gamma.size > 0 else r
                for i in range(ty, n_rows, ROWS):
                    # each element is read, then written, by this thread only: dx may be dy
                    d = dy[i, col]
                    s_dy += d
                    s_dxc += d * (x[i, col] - m)
                    dx[i, col] = d * a
            # every thread of the block reaches the barriers of the sums
            s_dy = _column_total(buf_a, tx, ty, s_dy)
            s_dxc = _column_total(buf_b, tx, ty, s_dxc)
            if valid and ty == 0:
                s_dxh = s_dxc * r                        # sum dy * xhat
                if dgamma.size > 0:
                    dgamma[col] = dgamma[col] + s_dxh if accumulate else s_dxh
                if dbeta.size > 0:
                    dbeta[col] = dbeta[col] + s_dy if accumulate else s_dy

    return jit_family((layer_norm_forward_kernel, layer_norm_dx_kernel,
                       layer_norm_param_grad_kernel, batch_norm_train_kernel,
                       batch_norm_eval_kernel, batch_norm_backward_kernel,
                       batch_norm_backward_eval_kernel), dtype)


#: numpy dtype name -> {name: kernel}.
_KERNELS = {str(dt): _make_kernels(dt) for dt in (numba.float32, numba.float64)}

_M, _V = "{t}[:, ::1]", "{t}[::1]"
_SIGNATURES = {
    "layer_norm_forward": f"void({_M}, {_V}, {_V}, {{t}}, {_M}, {_V}, {_V})",
    "layer_norm_dx": f"void({_M}, {_M}, {_V}, {_V}, {_V}, {_M})",
    "layer_norm_param_grad": f"void({_M}, {_M}, {_V}, {_V}, {_V}, {_V}, boolean)",
    "batch_norm_train": (f"void({_M}, {_V}, {_V}, {{t}}, {{t}}, {{t}}, {_V}, {_V}, {_M}, "
                         f"{_V}, {_V})"),
    "batch_norm_eval": f"void({_M}, {_V}, {_V}, {{t}}, {_V}, {_V}, {_M})",
    "batch_norm_backward": f"void({_M}, {_M}, {_V}, {_V}, {_V}, {_M}, {_V}, {_V}, boolean)",
    "batch_norm_backward_eval": (f"void({_M}, {_M}, {_V}, {{t}}, {_V}, {_V}, {_M}, {_V}, "
                                 f"{_V}, boolean)"),
}
PTX_SIGNATURES = ptx_entries(_KERNELS, _SIGNATURES)


def _kernels(array):
    return _KERNELS[str(array.dtype)]


def _column_grid(n_cols):
    return min(MAX_BLOCKS, (n_cols + COLUMNS - 1) // COLUMNS)


def layer_norm_forward(x, gamma, beta, eps, y, mean, rstd):
    """LayerNorm over the last axis (:func:`fastnn.kernels.layer_norm.layer_norm_forward`).

    x, y : (rows, features) device arrays, C-contiguous, one float dtype (``y`` may be
    ``x``); gamma, beta : (features,) or size 0; mean, rstd : (rows,), written.
    Returns ``y``.
    """
    n_rows, n_cols = x.shape
    if n_rows and n_cols:
        _kernels(x)["layer_norm_forward"][min(n_rows, MAX_BLOCKS), THREADS](
            x, gamma, beta, x.dtype.type(eps), y, mean, rstd)
    return y


def layer_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, accumulate):
    """Backward of :func:`layer_norm_forward`
    (:func:`fastnn.kernels.layer_norm.layer_norm_backward`): ``dgamma``/``dbeta`` (size 0:
    skipped) by column sums, then ``dx`` (may be ``dy``).  Returns ``dx``."""
    n_rows, n_cols = x.shape
    if not n_cols:
        return dx
    kernels = _kernels(x)
    if dgamma.size or dbeta.size:
        kernels["layer_norm_param_grad"][_column_grid(n_cols), (COLUMNS, ROWS)](
            dy, x, mean, rstd, dgamma, dbeta, bool(accumulate))
    if n_rows:
        kernels["layer_norm_dx"][min(n_rows, MAX_BLOCKS), THREADS](dy, x, gamma, mean, rstd,
                                                                   dx)
    return dx


def batch_norm_forward_train(x, gamma, beta, eps, momentum, running_mean, running_var, y,
                             mean, rstd):
    """BatchNorm with batch statistics, running statistics updated in place
    (:func:`fastnn.kernels.batch_norm.batch_norm_forward_train`; ``running_*`` size 0: not
    tracked).  One launch.  Returns ``y``."""
    n_rows, n_cols = x.shape
    if n_rows and n_cols:
        t = x.dtype.type
        unbias = t(n_rows) / t(n_rows - 1) if n_rows > 1 else t(1)     # as on the CPU
        _kernels(x)["batch_norm_train"][_column_grid(n_cols), (COLUMNS, ROWS)](
            x, gamma, beta, t(eps), t(momentum), unbias, running_mean, running_var, y, mean,
            rstd)
    return y


def batch_norm_forward_eval(x, gamma, beta, eps, running_mean, running_var, y):
    """``y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta``.  Returns ``y``."""
    if x.size:
        _kernels(x)["batch_norm_eval"][grid_1d(x.size), THREADS](
            x, gamma, beta, x.dtype.type(eps), running_mean, running_var, y)
    return y


def batch_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, accumulate):
    """Backward of :func:`batch_norm_forward_train`
    (:func:`fastnn.kernels.batch_norm.batch_norm_backward`); one launch, ``dx`` may be ``dy``.
    Returns ``dx``."""
    n_rows, n_cols = x.shape
    if n_rows and n_cols:
        _kernels(x)["batch_norm_backward"][_column_grid(n_cols), (COLUMNS, ROWS)](
            dy, x, gamma, mean, rstd, dx, dgamma, dbeta, bool(accumulate))
    return dx


def batch_norm_backward_eval(dy, x, gamma, eps, running_mean, running_var, dx, dgamma, dbeta,
                             accumulate):
    """Backward of :func:`batch_norm_forward_eval`
    (:func:`fastnn.kernels.batch_norm.batch_norm_backward_eval`), the running statistics
    constants::

        rstd = 1 / sqrt(running_var + eps)
        dx = dy * gamma * rstd
        dgamma (+)= rstd * sum(dy * (x - running_mean)),   dbeta (+)= sum(dy)

    (sums over the rows; ``gamma``, ``dgamma``, ``dbeta`` may be size 0).  One launch,
    ``dx`` may be ``dy``.  Returns ``dx``."""
    n_cols = x.shape[1]
    if n_cols:          # also for 0 rows: the gradients are then zero sums
        _kernels(x)["batch_norm_backward_eval"][_column_grid(n_cols), (COLUMNS, ROWS)](
            dy, x, gamma, x.dtype.type(eps), running_mean, running_var, dx, dgamma, dbeta,
            bool(accumulate))
    return dx
