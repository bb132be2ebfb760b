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

Cache freshness: Numba's cache index checks the timestamp and size of the kernel's own
source file only, so an edit of a function or a global it takes from *another* file (a
:mod:`.vmath` function, an activation formula of :mod:`.activation_specs`, the tables
built from it) would leave stale machine code in the cache.  The locators installed
below make the stamp of every kernel in this folder include the timestamps and sizes of
all the folder's sources: after any edit here, fastnn's kernels recompile once.
"""
import os
import warnings

import numba
from numba.core import caching
from numba.core.errors import NumbaExperimentalFeatureWarning

_OPTIONS = dict(cache=True, nogil=True, error_model="numpy")

# The kernels that walk a tuple of jitted functions with literal_unroll (the activation
# epilogue and derivative passes) make Numba say that first-class function types are
# experimental; the calls are resolved at compile time, and users should not see it.
warnings.filterwarnings("ignore", message=".*First-class function type",
                        category=NumbaExperimentalFeatureWarning,
                        module=r".*[\\/]kernels[\\/]")


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



# --------------------------------------------------------------------------- cache freshness
_KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))


def _sources_stamp():
    """``(name, mtime_ns, size)`` of every source file of the kernels folder."""
    return tuple((entry.name, entry.stat().st_mtime_ns, entry.stat().st_size)
                 for entry in sorted(os.scandir(_KERNELS_DIR), key=lambda e: e.name)
                 if entry.name.endswith(".py"))


_SOURCES_STAMP = _sources_stamp()


def _stamped(base):
    """``base`` (a Numba cache locator) restricted to this folder, with the folder's
    sources in its freshness stamp."""
    class Locator(base):
        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != _KERNELS_DIR:
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return super().get_source_stamp(), _SOURCES_STAMP

    Locator.__name__ = Locator.__qualname__ = f"FastnnSources{base.__name__}"
    return Locator


_LOCATORS = caching.CacheImpl._locator_classes
if not any(cls.__name__.startswith("FastnnSources") for cls in _LOCATORS):
    # Tried first, in Numba's own order; functions outside this folder fall through.
    _LOCATORS[:0] = [_stamped(base) for base in list(_LOCATORS)]
