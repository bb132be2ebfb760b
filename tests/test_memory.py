"""Host/device memory helpers on host arrays (their device side runs in tests/cuda)."""
import numpy as np

import fastnn as fnn
from fastnn.backends import memory


def test_host_arrays_are_host_memory():
    a = np.arange(6.0).reshape(2, 3)
    assert not memory.is_device_array(a) and memory.memory_of(a) == "host"
    assert memory.to_host(a) is a
    assert memory.like(a, np.empty(1)) is a


def test_assign_zero_fill_and_astype_work_in_place_on_the_host():
    a = np.ones((2, 3), np.float32)
    memory.assign(a, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(a, np.arange(6).reshape(2, 3))
    memory.zero_fill(a)
    assert not a.any()
    b = memory.astype(a, np.float64)
    assert b.dtype == np.float64 and b.shape == a.shape


def test_place_copies_only_when_needed():
    backend = fnn.get_backend("numba")
    a = np.ones((2, 3), np.float32)
    assert memory.place(a, backend) is a
    b = memory.place(a, backend, np.float64)
    assert b.dtype == np.float64 and b is not a


def test_every_host_backend_says_host():
    assert fnn.get_backend("numba").memory == fnn.get_backend("numpy").memory == "host"


def test_backend_for_host_data_is_the_current_backend():
    assert memory.backend_for(np.ones(3)) is fnn.get_backend()
    with fnn.use_backend("numpy"):
        assert memory.backend_for(np.ones(3)).name == "numpy"
