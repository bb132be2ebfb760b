"""The one place where fastnn's Numba compilation options live.

Every kernel module decorates its functions with :func:`kernel` (serial) or
:func:`parallel_kernel` (uses ``numba.prange``).  Options:

* ``cache=True``: the compiled machine code is written next to the source (or to
  ``NUMBA_CACHE_DIR``) so only the very first call on a machine pays the compile.
* ``nogil=True``: kernels release the GIL, so user threads can overlap them.
* ``error_model="numpy"``: division follows IEEE rules instead of raising
  ``ZeroDivisionError``; this lets LLVM vectorise loops that divide.
* ``fastmath`` is *off* by default: NaN/Inf must propagate so that diverging training
  is detected.  A kernel that opts in says why next to its decorator.

Compilation is lazy (no eager signatures): importing fastnn compiles nothing, and a
kernel is compiled once per dtype the first time it is called.
"""
import numba

_OPTIONS = dict(cache=True, nogil=True, error_model="numpy")


def kernel(fn=None, **extra):
    """Compile ``fn`` as a serial kernel (``@kernel`` or ``@kernel(fastmath=...)``)."""
    if fn is None:
        return lambda f: numba.njit(**_OPTIONS, **extra)(f)
    return numba.njit(**_OPTIONS, **extra)(fn)


def parallel_kernel(fn=None, **extra):
    """Compile ``fn`` as a kernel whose ``numba.prange`` loops run on Numba's thread pool."""
    if fn is None:
        return lambda f: numba.njit(parallel=True, **_OPTIONS, **extra)(f)
    return numba.njit(parallel=True, **_OPTIONS, **extra)(fn)

