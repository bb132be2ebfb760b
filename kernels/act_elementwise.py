"""The element-wise activation kernels, compiled from the formulas of the records in
:mod:`.activation_specs` (see :mod:`.activations` for the contract).

How one formula becomes every CPU kernel, without losing Numba's on-disk cache or
vectorisation:

* A kernel cannot take the formula as an argument (a kernel that receives a jitted
  function "uses dynamic globals" and is not cached), and closures made by a factory get
  no cache hit.  Instead each kernel below is written once as a *template* that calls the
  global name ``_formula``; :func:`_specialise` makes one copy of it per activation whose
  globals bind ``_formula`` to that activation's formula (a plain function object with
  the template's code, its own name and no closure: Numba caches it like any module
  function, one cache file per activation and dtype).
* The formulas are compiled with ``inline="always"``, so Numba pastes them into the
  template's element loop, where LLVM vectorises them together with the :mod:`.vmath`
  functions they call.  (Walking a tuple of formulas with ``literal_unroll`` and calling
  each through the tuple also caches, but the call cannot be inlined by Numba, and LLVM
  declined to inline GELU and the Gaussian: their loops stayed scalar, 4-5x slower.)
* Per activation: ``name_forward(x, out, *params)`` and ``name_backward(dy, x, y, out,
  *params)`` with the record's parameter names (parallel kernels, compiled lazily per
  activation like any kernel; the chunking body is written once and inlined), the span
  loops they run, the epilogue run :data:`EPILOGUE_RUNS` of :mod:`.epilogue` and the
  rows pass :data:`GRAD_ROWS` of :mod:`.dense`.  Those two modules walk the ``(code,
  function)`` tuples with ``literal_unroll``: the branch on the runtime code is outside
  the loops, and each loop is already compiled with its formula inlined.

Cache freshness: the kernels bind functions from another file, which Numba's cache index
does not hash; :mod:`._jit` makes every fastnn kernel's cache depend on all the kernel
sources, so editing or adding a record recompiles these kernels.
"""
import types

from numba import prange

from ._act_common import (CHUNK_CHEAP, CHUNK_TRANSCENDENTAL, SERIAL_MAX_BYTES,
                          SERIAL_MAX_TRANSCENDENTAL, _FLAGS)
from ._jit import kernel, parallel_kernel
from .activation_specs import ELEMENTWISE, reads

__all__ = ["EPILOGUE_RUNS", "GRAD_ROWS"]


def _specialise(template, name, params=(), **bound):
    """A copy of ``template`` named ``name`` whose globals also hold ``bound`` and whose
    parameters ``p0, p1`` are renamed ``params`` (the record's parameter names)."""
    code = template.__code__
    if params:
        names = list(code.co_varnames)
        for i, param in enumerate(params):
            names[names.index(f"p{i}")] = param
        code = code.replace(co_varnames=tuple(names))
    fn = types.FunctionType(code, {**template.__globals__, **bound}, name,
                            template.__defaults__)
    fn.__qualname__ = name
    fn.__doc__ = template.__doc__
    return fn


@kernel
def _schedule(heavy, n_arrays, itemsize):
    """``(serial_max, chunk)``: up to how many elements a kernel runs on one thread, and
    the elements per parallel task beyond that (see :mod:`._act_common`): compute-bound
    formulas (``heavy``) by element count, memory-bound ones by the bytes of their
    ``n_arrays`` streams."""
    if heavy:
        return SERIAL_MAX_TRANSCENDENTAL, CHUNK_TRANSCENDENTAL
    return SERIAL_MAX_BYTES // (n_arrays * itemsize), CHUNK_CHEAP


# --------------------------------------------------------------------------- templates
# Each calls the formula as the global ``_formula`` (and the kernels their span as
# ``_span``); they are never compiled as they stand.
def _forward_span(x, out, a, b):
    # When out is x, loop over out alone: with two names for one buffer LLVM's runtime
    # overlap check fails and it falls back to scalar code (10x slower in place).
    if x.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = _formula(out[i], a, b)                 # noqa: F821
    else:
        for i in range(x.size):
            out[i] = _formula(x[i], a, b)                   # noqa: F821


def _backward_span(dy, x, y, out, a, b):
    if dy.ctypes.data == out.ctypes.data:
        for i in range(out.size):
            out[i] = _formula(out[i], x[i], y[i], a, b)     # noqa: F821
    else:
        for i in range(dy.size):
            out[i] = _formula(dy[i], x[i], y[i], a, b)      # noqa: F821


def _forward(x, out, p0, p1):
    # Serial below a size threshold, else in fixed chunks on prange (waking Numba's
    # thread pool costs more than small problems take).
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    t = x.dtype.type
    a = t(p0)
    b = t(p1)
    n = xf.size
    serial_max, chunk = _schedule(_HEAVY, 2, xf.itemsize)  # noqa: F821
    if n <= serial_max:
        _span(xf, of, a, b)                                 # noqa: F821
    else:
        for c in prange((n + chunk - 1) // chunk):
            lo = c * chunk
            hi = min(lo + chunk, n)
            _span(xf[lo:hi], of[lo:hi], a, b)               # noqa: F821
    return out


def _backward(dy, x, y, out, p0, p1):
    df = dy.reshape(dy.size)
    of = out.reshape(out.size)
    # Only the arrays the derivative reads (the others' reshape costs ~0.1 µs a call).
    xf = x.reshape(x.size) if _READS_X else of              # noqa: F821
    yf = y.reshape(y.size) if _READS_Y else of              # noqa: F821
    t = dy.dtype.type
    a = t(p0)
    b = t(p1)
    n = df.size
    serial_max, chunk = _schedule(_HEAVY, _ARRAYS, df.itemsize)  # noqa: F821
    if n <= serial_max:
        _span(df, xf, yf, of, a, b)                         # noqa: F821
    else:
        for c in prange((n + chunk - 1) // chunk):
            lo = c * chunk
            hi = min(lo + chunk, n)
            _span(df[lo:hi], xf[lo:hi], yf[lo:hi], of[lo:hi], a, b)  # noqa: F821
    return out


# The kernels themselves: the activation's parameters, named as in its record.
def _forward_0(x, out):
    """``out = f(x)`` element-wise; ``x``, ``out`` C-contiguous arrays of one dtype and
    shape (``out`` may be ``x``); returns ``out``."""
    return _body(x, out, 0.0, 0.0)                          # noqa: F821


def _forward_1(x, out, p0):
    """``out = f(x)`` element-wise; ``x``, ``out`` C-contiguous arrays of one dtype and
    shape (``out`` may be ``x``), then the parameter; returns ``out``."""
    return _body(x, out, p0, 0.0)                           # noqa: F821


def _forward_2(x, out, p0, p1):
    """``out = f(x)`` element-wise; ``x``, ``out`` C-contiguous arrays of one dtype and
    shape (``out`` may be ``x``), then the parameters; returns ``out``."""
    return _body(x, out, p0, p1)                            # noqa: F821


def _backward_0(dy, x, y, out):
    """``out = dy * f'(x)`` element-wise (``y = f(x)``; ``out`` may be ``dy``)."""
    return _body(dy, x, y, out, 0.0, 0.0)                   # noqa: F821


def _backward_1(dy, x, y, out, p0):
    """``out = dy * f'(x)`` element-wise (``y = f(x)``; ``out`` may be ``dy``)."""
    return _body(dy, x, y, out, p0, 0.0)                    # noqa: F821


def _backward_2(dy, x, y, out, p0, p1):
    """``out = dy * f'(x)`` element-wise (``y = f(x)``; ``out`` may be ``dy``)."""
    return _body(dy, x, y, out, p0, p1)                     # noqa: F821


_FORWARDS = (_forward_0, _forward_1, _forward_2)
_BACKWARDS = (_backward_0, _backward_1, _backward_2)


def _epilogue_run(c, s, n, a, b):
    """``c[s:s+n] = f(c[s:s+n])`` in place (the GEMM epilogue's activation step)."""
    for j in range(n):
        c[s + j] = _formula(c[s + j], a, b)                 # noqa: F821


def _grad_rows(dy, y, dz, acc, a, b, r0, r1):
    """Rows ``r0:r1``: ``dz = dy * f'(z)`` from the output ``y``, and ``acc += dz`` (the
    fused dense backward's pass).  Each row is a 1-D array indexed from 0: unit-stride,
    non-negative indices that LLVM vectorises (2-D ``dz[i, j]`` indexing kept the loop
    scalar: 18x slower on 2048 x 512).  ``dz`` may be ``dy``."""
    for i in range(r0, r1):
        dyi = dy[i]
        yi = y[i]
        dzi = dz[i]
        for j in range(dzi.size):
            v = _formula(dyi[j], yi[j], a, b)               # noqa: F821
            dzi[j] = v
            acc[j] += v


# --------------------------------------------------------------------------- per activation
# 'contract' lets LLVM fuse a*b + c into one FMA (rounding only, never NaN/Inf behaviour).
_formula_kernel = kernel(fastmath=_FLAGS, inline="always")
_loop_kernel = kernel(fastmath=_FLAGS)
_body_kernel = kernel(inline="always")

#: ``(code, run(c, s, n, a, b))`` for every element-wise activation (the GEMM epilogue).
EPILOGUE_RUNS = ()
#: ``(code, rows(dy, y, dz, acc, a, b, r0, r1))`` for those with a from-output
#: derivative (the fused dense backward).
GRAD_ROWS = ()


def _compile(spec):
    """The kernels of one element-wise record: ``(forward, backward, epilogue run, rows
    pass or None)``."""
    name = spec.name
    params = tuple(param for param, _ in spec.params)
    heavy_forward, heavy_backward = spec.transcendental
    f = _formula_kernel(spec.forward)
    g = _formula_kernel(spec.backward)
    forward_span = _loop_kernel(_specialise(_forward_span, f"_{name}_forward_span",
                                            _formula=f))
    backward_span = _loop_kernel(_specialise(_backward_span, f"_{name}_backward_span",
                                             _formula=g))
    forward_body = _body_kernel(_specialise(_forward, f"_{name}_forward",
                                            _HEAVY=heavy_forward, _span=forward_span))
    reads_x, reads_y = reads(spec.backward, "x"), reads(spec.backward, "y")
    backward_body = _body_kernel(_specialise(_backward, f"_{name}_backward",
                                             _HEAVY=heavy_backward, _READS_X=reads_x,
                                             _READS_Y=reads_y, _ARRAYS=2 + reads_x + reads_y,
                                             _span=backward_span))
    forward = parallel_kernel(_specialise(_FORWARDS[len(params)], f"{name}_forward", params,
                                          _body=forward_body))
    backward = parallel_kernel(_specialise(_BACKWARDS[len(params)], f"{name}_backward",
                                           params, _body=backward_body))
    forward.__doc__ = f"{name}: {spec.doc}.  " + forward.__doc__
    run = _loop_kernel(_specialise(_epilogue_run, f"_{name}_epilogue_run", _formula=f))
    rows = None
    if spec.grad_from_output is not None:
        rows = _loop_kernel(_specialise(_grad_rows, f"_{name}_grad_rows",
                                        _formula=_formula_kernel(spec.grad_from_output)))
    return forward, backward, run, rows


for _spec in ELEMENTWISE:
    _fwd, _bwd, _run, _rows = _compile(_spec)
    globals()[_fwd.__name__], globals()[_bwd.__name__] = _fwd, _bwd
    __all__ += [_fwd.__name__, _bwd.__name__]
    EPILOGUE_RUNS += ((_spec.code, _run),)
    if _rows is not None:
        GRAD_ROWS += ((_spec.code, _rows),)
del _spec, _fwd, _bwd, _run, _rows
