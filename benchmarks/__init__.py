"""asv suites: fastnn's Numba kernels against the NumPy/BLAS backend.

Every suite is parametrised by backend ("numba", "numpy"), so asv shows the two side by
side; the cases themselves are defined once, in :mod:`fastnn.bench`, and shared with the
``fastnn bench`` command and the pytest-benchmark tests.  JIT compilation happens in
``setup`` (which asv runs in the timed process), never inside a timing.
"""
import os

# OpenBLAS threads spin for a long time after each call and starve Numba's threads on a
# 2-core machine when the two backends alternate; let them sleep quickly.  (Set before
# NumPy is imported by the suites.)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
