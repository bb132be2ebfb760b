"""Shared fixtures and helpers for the fastnn test suite."""
import os

import numpy as np
import pytest
from hypothesis import settings

import fastnn as fnn
from fastnn.backends import numpy_ops
from gradcheck import central_differences

# Property tests explore new random examples on every local run; under CI (CI=1, as
# .ci/run and most CI services set) they replay a fixed sequence, so a landing never
# fails on an example no one has seen -- a failure found locally is fixed before it lands.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

DTYPES = (np.float32, np.float64)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def numba_ops():
    return fnn.get_backend("numba")


@pytest.fixture
def reference():
    return numpy_ops


def random(rng, shape, dtype, scale=1.0):
    """Random normal data (never zeros) of ``dtype``."""
    return (rng.standard_normal(shape) * scale).astype(dtype)


def assert_close(actual, expected, dtype, rtol32=2e-5, rtol64=1e-12, atol_scale=1.0):
    """Compare with a tolerance suited to the dtype."""
    rtol = rtol32 if np.dtype(dtype) == np.float32 else rtol64
    atol = rtol * atol_scale
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def numerical_gradient(f, x, eps=1e-6):
    """Central finite differences of the scalar function ``f`` with respect to ``x``
    (float64), perturbing ``x`` in place and restoring it (:mod:`gradcheck`'s)."""
    return central_differences(f, x, eps)
