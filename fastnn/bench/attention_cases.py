"""The attention benchmark of ``fastnn bench --only attention`` (issue 11): scaled
dot-product attention, forward and forward + backward, float32, against PyTorch eager
``F.scaled_dot_product_attention`` (backward by autograd) and a NumPy implementation
written as a careful user would.

The careful NumPy user (:class:`NumpyAttention`): every buffer preallocated, batched
``np.matmul`` over (batch, heads) writing in place (``out=``), the softmax in place in
the materialised ``S_q x S_k`` score matrix, the causal mask an additive ``-inf``
matrix built once.  ``tests/test_bench.py`` checks that it computes what fastnn does.
"""
import numpy as np

from .cases import Case, _add_torch, _rng

#: The issue's shapes, (batch, heads, seq, d).
ATTENTION_SHAPES = ((8, 8, 512, 64), (1, 8, 2048, 64))
#: The issue's targets on forward + backward; the forward alone is reported without one.
ATTENTION_TARGETS = {"numpy": 3.0, "torch": 1.5}
DIRECTIONS = ("forward", "forward+backward")


def attention_flops(shape, causal, direction):
    """Multiply-adds x 2 of the products: ``Q K^T`` and ``P V`` in the forward (4 B H S^2
    d), and ``Q K^T`` again, ``dV``, ``dP``, ``dQ``, ``dK`` in the backward (10 B H S^2
    d); about half of it under the causal mask."""
    n_b, n_h, seq, d = shape
    per_product = 2.0 * n_b * n_h * seq * seq * d * (0.5 if causal else 1.0)
    return per_product * (2 if direction == "forward" else 7)


class NumpyAttention:
    """``out = softmax(scale Q K^T + causal) V`` (and with ``backward``, ``dq``, ``dk``,
    ``dv`` from ``dout``) in preallocated NumPy buffers.

    Forward: ``P = exp(X - rowmax X) / rowsum`` in place of ``X = scale Q K^T``.
    Backward: ``dV = P^T dO``, ``dP = dO V^T``, ``dS = scale P (dP - rowsum(dO * O))``,
    ``dQ = dS K``, ``dK = dS^T Q``.
    """

    def __init__(self, q, k, v, dout, causal, scale, backward=True):
        self.q, self.k, self.v, self.dout = q, k, v, dout
        self.backward = backward
        n_b, n_h, sq, d = q.shape
        sk = k.shape[2]
        t = q.dtype.type
        self.scale = t(scale)
        self.p = np.empty((n_b, n_h, sq, sk), q.dtype)
        self.rows = np.empty((n_b, n_h, sq, 1), q.dtype)
        self.out = np.empty((n_b, n_h, sq, v.shape[3]), q.dtype)
        self.bias = None
        if causal:
            self.bias = np.triu(np.full((sq, sk), -np.inf, q.dtype), 1)
        if backward:
            self.dp = np.empty_like(self.p)
            self.tmp = np.empty_like(self.out)
            self.dq, self.dk, self.dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)

    def __call__(self):
        p, rows = self.p, self.rows
        np.matmul(self.q, np.swapaxes(self.k, -1, -2), out=p)
        p *= self.scale
        if self.bias is not None:
            p += self.bias
        np.max(p, axis=-1, keepdims=True, out=rows)
        p -= rows
        np.exp(p, out=p)
        np.sum(p, axis=-1, keepdims=True, out=rows)
        np.reciprocal(rows, out=rows)
        p *= rows
        np.matmul(p, self.v, out=self.out)
        if not self.backward:
            return self.out
        dp = self.dp
        np.matmul(np.swapaxes(p, -1, -2), self.dout, out=self.dv)
        np.matmul(self.dout, np.swapaxes(self.v, -1, -2), out=dp)
        np.multiply(self.dout, self.out, out=self.tmp)
        np.sum(self.tmp, axis=-1, keepdims=True, out=rows)
        dp -= rows
        dp *= p
        dp *= self.scale
        np.matmul(dp, self.k, out=self.dq)
        np.matmul(np.swapaxes(dp, -1, -2), self.q, out=self.dk)
        return self.out, self.dq, self.dk, self.dv


class TorchAttention:
    """``torch.nn.functional.scaled_dot_product_attention`` (eager), with ``backward``
    its autograd backward from ``dout``; ``ImportError`` without PyTorch."""

    def __init__(self, q, k, v, dout, causal, scale, backward=True, threads=None):
        import numba
        import torch
        torch.set_num_threads(threads or numba.get_num_threads())
        self.torch, self.causal, self.scale, self.backward = torch, causal, scale, backward
        self.qkv = [torch.from_numpy(a).requires_grad_(backward) for a in (q, k, v)]
        self.dout = torch.from_numpy(dout)

    def __call__(self):
        sdpa = self.torch.nn.functional.scaled_dot_product_attention
        if not self.backward:
            with self.torch.no_grad():
                return sdpa(*self.qkv, is_causal=self.causal, scale=self.scale)
        for tensor in self.qkv:
            tensor.grad = None
        out = sdpa(*self.qkv, is_causal=self.causal, scale=self.scale)
        out.backward(self.dout)
        return (out,) + tuple(tensor.grad for tensor in self.qkv)


def attention_case(direction, shape=ATTENTION_SHAPES[0], causal=False, dtype=np.float32,
                   torch=False):
    """Attention on (batch, heads, seq, d) inputs, ``direction`` ``"forward"`` or
    ``"forward+backward"``, scale ``1/sqrt(d)``, no mask but the causal one.

    ``run["numba"]``: fastnn's kernels (``attention_forward``, then
    ``attention_backward``) into preallocated outputs; ``run["numpy"]``: the careful
    NumPy user (:class:`NumpyAttention`); ``run["torch"]`` (with ``torch``, when PyTorch
    is importable): :class:`TorchAttention`.  Each returns ``out`` (forward) or ``(out,
    dq, dk, dv)``.  ``data["targets"]``: the targets by baseline (none on the forward)."""
    from ..backends import get_backend
    from ..kernels.attention import as_mask4
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose {', '.join(DIRECTIONS)}")
    backward = direction == "forward+backward"
    rng = _rng()
    q, k, v, dout = (rng.standard_normal(shape).astype(dtype) for _ in range(4))
    scale = 1.0 / np.sqrt(shape[3])
    ops = get_backend("numba")
    mask = as_mask4(None, dtype)
    out, lse = np.empty(shape, dtype), np.empty(shape[:3], dtype)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)

    def fastnn_run():
        ops.attention_forward(q, k, v, mask, causal, scale, out, lse)
        if not backward:
            return out
        ops.attention_backward(dout, q, k, v, out, lse, mask, causal, scale, dq, dk, dv)
        return out, dq, dk, dv
    run = {"numba": fastnn_run, "numpy": NumpyAttention(q, k, v, dout, causal, scale, backward)}
    if torch:
        _add_torch(run, lambda: TorchAttention(q, k, v, dout, causal, scale, backward))
    targets = ATTENTION_TARGETS if backward else {"numpy": None, "torch": None}
    name = f"attention{' causal' if causal else ''} {direction}"
    return Case("attention", name, "x".join(map(str, shape)), run,
                flops=attention_flops(shape, causal, direction), target=targets["numpy"],
                data={"q": q, "k": k, "v": v, "dout": dout, "scale": scale,
                      "targets": targets})
