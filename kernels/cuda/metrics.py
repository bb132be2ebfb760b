"""Metric sums on the GPU, so that ``fit(..., metrics=[...])`` copies one scalar per
batch to the host instead of the batch's outputs.

Signature of the family (as :mod:`fastnn.backends.numpy_ops`)::

    total = name(outputs, targets)

* :func:`argmax_matches`: rows whose largest output is at the integer label.
* :func:`argmax_matches_soft`: rows whose largest output is where the target row is
  largest (one-hot or soft targets).  Ties go to the first index, as ``np.argmax``.
* :func:`sign_matches`: elements with ``(output >= 0) == (target >= 0.5)`` (BCE on logits).
* :func:`abs_error_sum`: ``sum |output - target|`` (the MAE metric).
* :func:`squared_error_sum`: ``sum (output - target)**2`` (the MSE and RMSE metrics).
* :func:`top_k_matches`: rows with fewer than ``k`` outputs larger than the one at the
  integer label (top-k accuracy; a tie with the k-th counts as in, as TensorFlow's
  ``in_top_k``; a NaN at the label never counts); :func:`top_k_matches_soft`: the same
  with the label the argmax of the target row.

Each kernel gives every thread a grid-stride share of rows or elements, sums in a
register, reduces the block in shared memory and finishes on the device with the loss
kernels' :func:`~.losses.store_block_sum` / :func:`~.losses.finish_sum`.  Counts are summed in
the array dtype (exact in float32 up to 2**24 matches per batch).
"""
import numba
from numba import cuda

from ._common import THREADS, grid_1d, jit_family, ptx_entries
from .losses import finish_sum, store_block_sum


def _make_kernels(dtype):
    zero = dtype(0)
    one = dtype(1)
    half = dtype(0.5)

    @cuda.jit(device=True, inline="always")
    def row_argmax(a, i):
        best = 0
        m = a[i, 0]
        for j in range(1, a.shape[1]):
            if a[i, j] > m:
                m = a[i, j]
                best = j
        return best

    def argmax_matches_kernel(outputs, labels, partials):
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for i in range(cuda.grid(1), outputs.shape[0], cuda.gridsize(1)):
            if row_argmax(outputs, i) == labels[i]:
                total += one
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    def argmax_matches_soft_kernel(outputs, targets, partials):
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for i in range(cuda.grid(1), outputs.shape[0], cuda.gridsize(1)):
            if row_argmax(outputs, i) == row_argmax(targets, i):
                total += one
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    def sign_matches_kernel(outputs, targets, partials):
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for k in range(cuda.grid(1), outputs.size, cuda.gridsize(1)):
            if (outputs[k] >= zero) == (targets[k] >= half):
                total += one
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    def abs_error_sum_kernel(outputs, targets, partials):
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for k in range(cuda.grid(1), outputs.size, cuda.gridsize(1)):
            total += abs(outputs[k] - targets[k])
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    def squared_error_sum_kernel(outputs, targets, partials):
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for k in range(cuda.grid(1), outputs.size, cuda.gridsize(1)):
            diff = outputs[k] - targets[k]
            total += diff * diff
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    @cuda.jit(device=True, inline="always")
    def in_top_k(a, i, label, k):
        at_label = a[i, label]
        larger = 0
        for j in range(a.shape[1]):
            if a[i, j] > at_label:
                larger += 1
        return larger < k and at_label == at_label

    def top_k_matches_kernel(outputs, labels, k, partials):
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for i in range(cuda.grid(1), outputs.shape[0], cuda.gridsize(1)):
            if in_top_k(outputs, i, labels[i], k):
                total += one
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    def top_k_matches_soft_kernel(outputs, targets, k, partials):
        buffer = cuda.shared.array(THREADS, dtype)
        total = zero
        for i in range(cuda.grid(1), outputs.shape[0], cuda.gridsize(1)):
            if in_top_k(outputs, i, row_argmax(targets, i), k):
                total += one
        store_block_sum(buffer, partials, cuda.threadIdx.x, cuda.blockIdx.x, total)

    return jit_family((argmax_matches_kernel, argmax_matches_soft_kernel,
                       sign_matches_kernel, abs_error_sum_kernel, squared_error_sum_kernel,
                       top_k_matches_kernel, top_k_matches_soft_kernel), dtype)


#: numpy dtype name -> {name: kernel}.
_KERNELS = {str(dt): _make_kernels(dt) for dt in (numba.float32, numba.float64)}

_SIGNATURES = {
    "argmax_matches": "void({t}[:, ::1], int64[::1], {t}[::1])",
    "argmax_matches_soft": "void({t}[:, ::1], {t}[:, ::1], {t}[::1])",
    "sign_matches": "void({t}[::1], {t}[::1], {t}[::1])",
    "abs_error_sum": "void({t}[::1], {t}[::1], {t}[::1])",
    "squared_error_sum": "void({t}[::1], {t}[::1], {t}[::1])",
    "top_k_matches": "void({t}[:, ::1], int64[::1], int64, {t}[::1])",
    "top_k_matches_soft": "void({t}[:, ::1], {t}[:, ::1], int64, {t}[::1])",
}
PTX_SIGNATURES = ptx_entries(_KERNELS, _SIGNATURES)


def _total(name, count, outputs, targets, *args):
    blocks = grid_1d(count)
    partials = cuda.device_array(blocks, dtype=outputs.dtype)
    _KERNELS[str(outputs.dtype)][name][blocks, THREADS](outputs, targets, *args, partials)
    return finish_sum(partials)


def argmax_matches(outputs, labels):
    """Rows ``i`` with ``argmax(outputs[i]) == labels[i]``; outputs (batch, classes),
    labels (batch,) int64."""
    assert labels.shape == (outputs.shape[0],)
    return int(_total("argmax_matches", outputs.shape[0], outputs, labels))


def argmax_matches_soft(outputs, targets):
    """Rows ``i`` with ``argmax(outputs[i]) == argmax(targets[i])``."""
    assert targets.shape == outputs.shape
    return int(_total("argmax_matches_soft", outputs.shape[0], outputs, targets))


def sign_matches(outputs, targets):
    """Elements with ``(outputs >= 0) == (targets >= 0.5)``."""
    assert targets.shape == outputs.shape
    return int(_total("sign_matches", outputs.size, outputs.reshape(outputs.size),
                      targets.reshape(targets.size)))


def abs_error_sum(outputs, targets):
    """``sum(|outputs - targets|)`` as a Python float."""
    assert targets.shape == outputs.shape
    return _total("abs_error_sum", outputs.size, outputs.reshape(outputs.size),
                  targets.reshape(targets.size))


def squared_error_sum(outputs, targets):
    """``sum((outputs - targets)**2)`` as a Python float."""
    assert targets.shape == outputs.shape
    return _total("squared_error_sum", outputs.size, outputs.reshape(outputs.size),
                  targets.reshape(targets.size))


def top_k_matches(outputs, labels, k):
    """Rows ``i`` where fewer than ``k`` outputs exceed ``outputs[i, labels[i]]``;
    outputs (batch, classes), labels (batch,) int64."""
    assert labels.shape == (outputs.shape[0],)
    return int(_total("top_k_matches", outputs.shape[0], outputs, labels, int(k)))


def top_k_matches_soft(outputs, targets, k):
    """:func:`top_k_matches` with ``labels = argmax(targets, axis=1)``."""
    assert targets.shape == outputs.shape
    return int(_total("top_k_matches_soft", outputs.shape[0], outputs, targets, int(k)))
