"""Activation functions and their derivatives on the GPU: the twins of :mod:`..activations`.

Every activation ``name`` of :data:`ACTIVATIONS` (the CPU registry, imported, not copied)
has the CPU kernels' signatures, ``name_forward(x, out, *params)`` (``out = f(x)``) and
``name_backward(dy, x, y, out, *params)`` (``out = dy * f'(x)``, ``y = f(x)``), on
C-contiguous device arrays of one dtype (1-D or 2-D; softmax 2-D); ``out`` may be ``x``
(forward) or ``dy`` (backward).

* Device functions, built per dtype by :func:`device_functions`: the formulas of the
  records in :mod:`..activation_specs` -- the very functions the CPU kernels compile --
  re-bound to CUDA primitives (:func:`_primitives`: libdevice's ``exp``, ``expm1``,
  ``log1p``, ``tanh``, and the normal cdf/pdf and ``exp(-x**2)`` below) and compiled by
  ``numba.cuda``, plus dispatchers on the codes (``forward``, ``backward``,
  ``backward_from_output``) that :mod:`.dense` reuses.  Everything is inlined by Numba
  (``inline="always"``): a non-inlined device function is compiled for the current GPU,
  so ``cuda.compile_ptx`` could not compile the kernels on a machine without one.
* The element-wise launchers share two grid-stride kernels over the flattened arrays that
  switch on the code.  The code is the same for every thread (no divergence).  The
  backward kernel reads ``x`` and ``y`` only for the activations that need them.
* Softmax: one block per row (grid-stride over the rows), the threads striding along the
  row; the row maximum and the sum of exponentials are tree reductions in shared memory
  (the block size is a power of two, 32 to ``THREADS``, so rows of any width work).
* Constants are Numba scalars of the kernel's dtype and the launchers convert the
  parameters to the array dtype, so a float32 kernel has no float64 instruction.

Numerics follow the CPU kernels, formula for formula (overflow-free forms; NaN in gives
NaN out except for the step, which maps NaN to 0; infinities as in the NumPy reference);
the primitives differ: ``Phi(x) = erfc(-x/sqrt 2)/2`` corrected to first order for the
rounding of ``x/sqrt 2`` (accurate in the left tail), and ``exp(-x**2)`` with ``x**2``
split exactly by an FMA.
"""
import builtins
import functools
import math
import types
from types import SimpleNamespace

import numba
from numba import cuda

from ..activation_specs import ELEMENTWISE, PRIMITIVES, reads
from ..activations import ACTIVATIONS, NOT_DIFFERENTIABLE, ROW_WISE
from ._common import MAX_BLOCKS, THREADS, grid_1d, signatures

__all__ = ([f"{name}_{way}" for name in ACTIVATIONS for way in ("forward", "backward")]
           + ["ACTIVATIONS", "NOT_DIFFERENTIABLE", "ROW_WISE"])

_INV_SQRT2 = 0.7071067811865476
_TWO_OVER_SQRT_PI = 1.1283791670955126
_INV_SQRT_2PI = 0.3989422804014327
# 1/sqrt(2) minus its rounding to the dtype (exact to the dtype's precision).
_INV_SQRT2_LO = {"float32": 1.210161710447897e-08, "float64": -4.833646656726457e-17}
# |x| above which exp(-x**2) (resp. exp(-x**2/2)) is exactly 0: clamping |x| there keeps the
# FMA split of x**2 free of inf - inf.
_GAUSS_X_MAX = {"float32": 11.0, "float64": 40.0}
_HALF_GAUSS_X_MAX = {"float32": 15.0, "float64": 40.0}
# |x| below which the tail correction of Phi is computed (it would be inf - inf at inf).
_FINITE_MAX = {"float32": 1e30, "float64": 1e300}


def _primitives(dtype, device):
    """The functions of :data:`..activation_specs.PRIMITIVES` as device functions for the
    Numba float type ``dtype``."""
    key = str(dtype)
    one, half = dtype(1), dtype(0.5)
    inv_sqrt2, inv_sqrt2_lo = dtype(_INV_SQRT2), dtype(_INV_SQRT2_LO[key])
    two_over_sqrt_pi, inv_sqrt_2pi = dtype(_TWO_OVER_SQRT_PI), dtype(_INV_SQRT_2PI)
    gauss_max, half_gauss_max = dtype(_GAUSS_X_MAX[key]), dtype(_HALF_GAUSS_X_MAX[key])
    finite_max = dtype(_FINITE_MAX[key])
    zero = dtype(0)

    @device
    def like(v, c):
        return dtype(c)

    @device
    def normal_cdf(v):
        # z = -v/sqrt 2 = zh + zl; erfc(zh + zl) = erfc(zh) - zl * 2/sqrt(pi) * exp(-zh**2)
        zh = -v * inv_sqrt2
        zl = cuda.fma(-v, inv_sqrt2, -zh) - v * inv_sqrt2_lo if abs(v) < finite_max else zero
        return half * (math.erfc(zh) - zl * two_over_sqrt_pi * math.exp(-zh * zh))

    @device
    def exp_neg_square(v, scale, clamp):
        """``exp(-scale * v*v)`` (``scale`` 1 or 1/2) with ``v*v = hi + lo`` split exactly
        by an FMA: ``exp(-scale*hi) * (1 - scale*lo)``; rounding ``v*v`` first would cost
        ``scale * v*v`` ulps."""
        a = abs(v)
        a = clamp if a > clamp else a           # NaN passes
        hi = a * a
        lo = cuda.fma(a, a, -hi)
        return math.exp(-(scale * hi)) * (one - scale * lo)

    @device
    def normal_pdf(v):
        return exp_neg_square(v, half, half_gauss_max) * inv_sqrt_2pi

    @device
    def gaussian(v):
        return exp_neg_square(v, one, gauss_max)

    found = {"exp": math.exp, "expm1": math.expm1, "log1p": math.log1p, "tanh": math.tanh,
             "like": like, "normal_cdf": normal_cdf, "normal_pdf": normal_pdf,
             "gaussian": gaussian}
    assert set(found) == set(PRIMITIVES)
    return found


def _dispatcher(name, arguments, pairs, otherwise, namespace, device):
    """A device function ``name(code, *arguments)`` that returns the formula of ``code``
    from ``pairs`` (``(code, device function)``) applied to the arguments, else
    ``otherwise``.  Generated as source: an ``if`` per code calling each formula by
    name, which Numba inlines (a call through a tuple could not be)."""
    args = ", ".join(arguments)
    lines = [f"def {name}(code, {args}):"]
    for code, fn in pairs:
        namespace[f"_{name}_{code}"] = fn
        lines += [f"    if code == {code}:", f"        return _{name}_{code}({args})"]
    lines.append(f"    return {otherwise}")
    exec("\n".join(lines), namespace)
    return device(namespace[name])


@functools.lru_cache(maxsize=None)
def device_functions(dtype):
    """The device functions for the Numba float type ``dtype``, in a namespace (one per
    dtype: the kernels of this module and of :mod:`.dense` share them): the primitives,
    ``forward(code, v, p0, p1)`` = ``f(v)``, ``backward(code, d, x, y, p0, p1)`` =
    ``d * f'(x)`` and ``backward_from_output(code, d, y, p0, p1)`` = ``d * f'(z)`` from
    ``y = f(z)`` (0 for the codes without a from-output formula, as in the CPU
    ``act_bias_grad``); any other code: identity."""
    device = cuda.jit(device=True, inline="always")
    primitives = _primitives(dtype, device)
    scope = {"__builtins__": builtins, **primitives}

    def compiled(formula):
        return device(types.FunctionType(formula.__code__, scope, formula.__name__,
                                         formula.__defaults__))

    namespace = {"zero": dtype(0)}
    forward = _dispatcher("forward", ("v", "p0", "p1"),
                          [(s.code, compiled(s.forward)) for s in ELEMENTWISE], "v",
                          namespace, device)
    backward = _dispatcher("backward", ("d", "x", "y", "p0", "p1"),
                           [(s.code, compiled(s.backward)) for s in ELEMENTWISE], "d",
                           namespace, device)
    backward_from_output = _dispatcher(
        "backward_from_output", ("d", "y", "p0", "p1"),
        [(s.code, compiled(s.grad_from_output)) for s in ELEMENTWISE
         if s.grad_from_output is not None], "zero", namespace, device)
    return SimpleNamespace(forward=forward, backward=backward,
                           backward_from_output=backward_from_output, **primitives)


# --------------------------------------------------------------------------- kernels
# Codes whose derivative reads the gradient dy, the input x, resp. the output y: the
# backward kernel loads only those (the code is a runtime value there).
_USES_DY = tuple(s.code for s in ELEMENTWISE if reads(s.backward, "d"))
_USES_X = tuple(s.code for s in ELEMENTWISE if reads(s.backward, "x"))
_USES_Y = tuple(s.code for s in ELEMENTWISE if reads(s.backward, "y"))


def _make_kernels(dtype):
    dev = device_functions(dtype)
    act_forward, act_backward = dev.forward, dev.backward
    zero, minus_inf = dtype(0), dtype(-math.inf)

    @cuda.jit(device=True, inline="always")
    def block_reduce(shared, v, take_max):
        """Sum (or maximum) of ``v`` over the block (2**k threads), for every thread."""
        tid = cuda.threadIdx.x
        shared[tid] = v
        cuda.syncthreads()
        s = cuda.blockDim.x // 2
        while s > 0:
            if tid < s:
                other = shared[tid + s]
                if take_max:
                    shared[tid] = other if other > shared[tid] else shared[tid]
                else:
                    shared[tid] += other
            cuda.syncthreads()
            s //= 2
        total = shared[0]
        cuda.syncthreads()                      # the next reduction overwrites shared
        return total

    def elementwise_forward(x, out, code, p0, p1):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            out[i] = act_forward(code, x[i], p0, p1)

    def elementwise_backward(dy, x, y, out, code, p0, p1):
        uses_x = code in _USES_X
        uses_y = code in _USES_Y
        uses_dy = code in _USES_DY
        for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
            d = dy[i] if uses_dy else zero
            v = x[i] if uses_x else zero
            w = y[i] if uses_y else zero
            out[i] = act_backward(code, d, v, w, p0, p1)

    def softmax_forward_rows(x, out):
        n_rows, n_cols = x.shape
        shared = cuda.shared.array(THREADS, dtype)
        tid = cuda.threadIdx.x
        step = cuda.blockDim.x
        for r in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
            m = minus_inf
            for j in range(tid, n_cols, step):
                v = x[r, j]
                m = v if v > m else m           # ignores NaN; the sum below is NaN then
            m = block_reduce(shared, m, True)
            s = zero
            for j in range(tid, n_cols, step):
                e = math.exp(x[r, j] - m)
                out[r, j] = e
                s += e
            s = block_reduce(shared, s, False)
            for j in range(tid, n_cols, step):
                out[r, j] = out[r, j] / s

    def softmax_backward_rows(dy, y, out):
        n_rows, n_cols = y.shape
        shared = cuda.shared.array(THREADS, dtype)
        tid = cuda.threadIdx.x
        step = cuda.blockDim.x
        for r in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
            dot = zero
            for j in range(tid, n_cols, step):
                dot += dy[r, j] * y[r, j]
            dot = block_reduce(shared, dot, False)
            for j in range(tid, n_cols, step):
                out[r, j] = y[r, j] * (dy[r, j] - dot)

    kernels = {}
    for fn in (elementwise_forward, elementwise_backward, softmax_forward_rows,
               softmax_backward_rows):
        base = fn.__name__
        fn.__name__ = fn.__qualname__ = f"{base}_{dtype}"
        kernels[base] = cuda.jit(fn)
    return SimpleNamespace(**kernels)


_KERNELS = {str(dt): _make_kernels(dt) for dt in (numba.float32, numba.float64)}

_SIGNATURES = {
    "elementwise_forward": "void({t}[::1], {t}[::1], int64, {t}, {t})",
    "elementwise_backward": "void({t}[::1], {t}[::1], {t}[::1], {t}[::1], int64, {t}, {t})",
    "softmax_forward_rows": "void({t}[:, ::1], {t}[:, ::1])",
    "softmax_backward_rows": "void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1])",
}
PTX_SIGNATURES = [
    (f"{kernel}_{dt}", getattr(_KERNELS[dt], kernel).py_func, sig)
    for kernel, template in _SIGNATURES.items()
    for dt, sig in zip(("float32", "float64"), signatures(template))
]


# --------------------------------------------------------------------------- launchers
def _forward(x, out, code, p0=0.0, p1=0.0):
    n = x.size
    if n:
        t = x.dtype.type
        _KERNELS[str(x.dtype)].elementwise_forward[grid_1d(n), THREADS](
            x.reshape(n), out.reshape(n), code, t(p0), t(p1))
    return out


def _backward(dy, x, y, out, code, p0=0.0, p1=0.0):
    n = dy.size
    if n:
        t = dy.dtype.type
        _KERNELS[str(dy.dtype)].elementwise_backward[grid_1d(n), THREADS](
            dy.reshape(n), x.reshape(n), y.reshape(n), out.reshape(n), code, t(p0), t(p1))
    return out


def _row_launch(n_rows, n_cols):
    """(blocks, threads) of the row kernels: a power of two, 32 to THREADS, threads."""
    return min(n_rows, MAX_BLOCKS), min(THREADS, max(32, 1 << (n_cols - 1).bit_length()))


def _launchers(spec, forward, backward):
    """``{name}_forward(x, out, <params>)`` and ``{name}_backward(dy, x, y, out, <params>)``
    for the element-wise record ``spec``, calling ``forward(x, out, code, p0, p1)`` and
    ``backward(dy, x, y, out, code, p0, p1)``.  Generated as source, like ``dataclasses``
    does, so that the functions take the record's parameter names."""
    names = [name for name, _ in spec.params]
    assert len(names) <= 2, "the kernels take two parameters"
    signature = "".join(f", {name}" for name in names)
    values = ", ".join([f"float({name})" for name in names] + ["0.0"] * (2 - len(names)))
    source = (f"def {spec.name}_forward(x, out{signature}):\n"
              f"    return _forward(x, out, {spec.code}, {values})\n"
              f"def {spec.name}_backward(dy, x, y, out{signature}):\n"
              f"    return _backward(dy, x, y, out, {spec.code}, {values})\n")
    namespace = {"_forward": forward, "_backward": backward}
    exec(source, namespace)
    fwd, bwd = namespace[f"{spec.name}_forward"], namespace[f"{spec.name}_backward"]
    fwd.__doc__ = f"{spec.doc}: ``out = f(x)``."
    bwd.__doc__ = f"``out = dy * f'(x)`` (``y = f(x)``) for {spec.name}."
    return fwd, bwd


# name_forward / name_backward for every element-wise record, with its parameter names.
for _spec in ELEMENTWISE:
    for _fn in _launchers(_spec, _forward, _backward):
        globals()[_fn.__name__] = _fn
del _spec, _fn


def softmax_forward(x, out):
    """Row-wise ``out[i] = exp(x[i] - max x[i]) / sum_j exp(x[i, j] - max x[i])``;
    x, out : (rows, cols).  A NaN makes its row NaN."""
    n_rows, n_cols = x.shape
    if n_rows and n_cols:
        blocks, threads = _row_launch(n_rows, n_cols)
        _KERNELS[str(x.dtype)].softmax_forward_rows[blocks, threads](x, out)
    return out


def softmax_backward(dy, x, y, out):
    """Row-wise ``out = y * (dy - sum_j(dy * y))``."""
    n_rows, n_cols = y.shape
    if n_rows and n_cols:
        blocks, threads = _row_launch(n_rows, n_cols)
        _KERNELS[str(y.dtype)].softmax_backward_rows[blocks, threads](dy, y, out)
    return out
