"""CUDA twins of the CPU kernels, written with ``numba.cuda``.

Importing this package imports ``numba.cuda``; nothing in fastnn imports it unless the
``"cuda"`` backend is requested (see :mod:`fastnn.backends.cuda_ops`).  Every public
function has the name and signature of its CPU twin in :mod:`fastnn.kernels` and works on
``numba.cuda`` device arrays; each module lists its ``@cuda.jit`` kernels and their
float32/float64 signatures in ``PTX_SIGNATURES`` so the tests can compile them for real
hardware (``tests/cuda/test_ptx.py``).
"""
