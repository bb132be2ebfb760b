"""Launch geometry and conventions shared by the CUDA kernels.

* Element-wise kernels use a grid-stride loop over ``THREADS``-thread blocks, so any
  size works with a bounded grid (:func:`grid_1d`).
* Kernels are written once per dtype family through small factories where a constant
  must carry the array's precision: a float32 kernel must not contain a float64 literal
  (``0.5 * x`` promotes to double in Numba), which ``tests/cuda/test_ptx.py`` checks in
  the assembled PTX.
* ``PTX_SIGNATURES`` (one list per module): ``(name, python function, signature)`` for
  every kernel, float32 and float64, used by the PTX tests.
"""
#: Threads per block of the one-dimensional kernels.
THREADS = 128
#: Upper bound on the blocks of a grid-stride launch (enough to fill any current GPU).
MAX_BLOCKS = 4096


def grid_1d(n, threads=THREADS):
    """Blocks for ``n`` elements with a grid-stride loop (at least one block)."""
    return max(1, min(MAX_BLOCKS, (n + threads - 1) // threads))


def signatures(template):
    """The float32 and float64 versions of a signature written with ``{t}`` for the
    floating type, e.g. ``"void({t}[:, ::1], {t}[:, ::1])"``."""
    return [template.format(t="float32"), template.format(t="float64")]


def jit_family(functions, dtype):
    """``{name: cuda.jit kernel}`` for kernel functions named ``<name>_kernel`` written
    for one Numba float type; each is renamed ``<name>_<dtype>`` (names in PTX and
    profiles)."""
    from numba import cuda
    kernels = {}
    for fn in functions:
        name = fn.__name__[:-len("_kernel")]
        fn.__name__ = fn.__qualname__ = f"{name}_{dtype}"
        kernels[name] = cuda.jit(fn)
    return kernels


def ptx_entries(kernels, templates):
    """``PTX_SIGNATURES`` entries for ``kernels`` (``{"float32"|"float64": {name:
    kernel}}``) and their signature ``templates`` (``{name: template}``)."""
    return [(f"{name}_{dt}", kernels[dt][name].py_func, sig)
            for name, template in templates.items()
            for dt, sig in zip(("float32", "float64"), signatures(template))]
