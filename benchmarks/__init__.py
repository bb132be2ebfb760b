"""asv suites: fastnn's Numba kernels against the NumPy/BLAS backend.

Every suite is parametrised by backend ("numba", "numpy"), so asv shows the two side by
side; the cases themselves are defined once, in :mod:`fastnn.bench`, and shared with the
``fastnn bench`` command and the pytest-benchmark tests.  JIT compilation happens in
``setup`` (which asv runs in the timed process), never inside a timing.
"""
# No thread-pool settings here: importing fastnn applies its defaults (fastnn/threads.py),
# so the suites measure what users get.
