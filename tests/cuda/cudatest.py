"""Helpers of the CUDA tests (``from cudatest import needs_cuda, ...``).

CUDA tests run on a real GPU, or on any machine under Numba's CUDA simulator::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda

The variable must be set before numba is imported, hence a separate pytest invocation
(see ``.ci/run``).  Without a GPU or the simulator every test here is skipped, except the
PTX compilation tests, which need only NVVM (see ``test_ptx.py``).
"""
import os

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _cuda_usable():
    try:
        from numba import cuda
    except ImportError:           # pragma: no cover - numba always ships numba.cuda
        return False, "numba.cuda cannot be imported"
    try:
        if cuda.is_available():
            return True, ""
    except Exception as exc:      # a broken driver install raises here
        return False, f"CUDA is not usable: {exc}"
    return False, "no CUDA GPU; run with NUMBA_ENABLE_CUDASIM=1 to use the simulator"


CUDA_OK, CUDA_WHY = _cuda_usable()

#: Mark for tests that launch kernels (they need a GPU or the simulator).
needs_cuda = pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)


def device_random(rng, shape, dtype, scale=1.0):
    """(host array, device copy) of random normal data, never zeros."""
    from numba import cuda
    host = (rng.standard_normal(shape) * scale).astype(dtype)
    return host, cuda.to_device(host)


def assert_close(actual, expected, dtype, rtol32=2e-5, rtol64=1e-12, atol_scale=1.0):
    """Compare a device result (copied to the host) with a NumPy reference."""
    if hasattr(actual, "copy_to_host"):
        actual = actual.copy_to_host()
    rtol = rtol32 if np.dtype(dtype) == np.float32 else rtol64
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * atol_scale)
