"""Numba CPU kernels: pure functions on C-contiguous arrays that write into ``out``."""
