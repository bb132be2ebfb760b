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
