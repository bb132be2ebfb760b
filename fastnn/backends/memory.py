"""Where arrays live: host (NumPy) or a CUDA device, and moving them between the two.

The NumPy and Numba backends share host memory; the CUDA backend keeps arrays in device
memory as ``numba.cuda`` device arrays.  These helpers recognise device arrays by their
interface (``copy_to_host``) so that nothing here imports ``numba.cuda``.
"""
import numpy as np


def is_device_array(array):
    """True for a ``numba.cuda`` device array (real or simulated)."""
    return hasattr(array, "copy_to_host") and hasattr(array, "copy_to_device")


def memory_of(array):
    """``"cuda"`` for a device array, ``"host"`` otherwise."""
    return "cuda" if is_device_array(array) else "host"


def to_host(array):
    """A NumPy array with the contents of ``array`` (a copy if it lives on a device)."""
    return array.copy_to_host() if is_device_array(array) else np.asarray(array)


def backend_for(array):
    """The backend that computes where ``array`` lives: "cuda" for a device array, the
    current backend (:func:`fastnn.get_backend`) for host data."""
    from . import get_backend
    return get_backend("cuda") if is_device_array(array) else get_backend()


def assign(target, source):
    """``target[...] = source`` for host or device ``target``; ``source`` is host data."""
    if is_device_array(target):
        target.copy_to_device(np.ascontiguousarray(source, dtype=target.dtype))
    else:
        target[...] = source


def zero_fill(array):
    """Set every element of a host or device array to zero, in place."""
    if is_device_array(array):
        array.copy_to_device(np.zeros(array.shape, array.dtype))
    else:
        array[...] = 0


def astype(array, dtype):
    """``array`` converted to ``dtype`` in the memory it lives in."""
    if not is_device_array(array):
        return array.astype(dtype)
    return backend_for(array).asarray(array.copy_to_host().astype(dtype), dtype)


def like(array, reference):
    """Host data ``array`` placed in the memory ``reference`` lives in."""
    if not is_device_array(reference):
        return array
    return backend_for(reference).asarray(array, array.dtype)


def place(array, backend, dtype=None):
    """``array`` converted to ``dtype`` in ``backend``'s memory: the array itself when it
    is already there with that dtype, else a copy."""
    dtype = np.dtype(dtype or array.dtype)
    if memory_of(array) == backend.memory and array.dtype == dtype:
        return array
    return backend.asarray(to_host(array), dtype)


__all__ = ["assign", "astype", "backend_for", "is_device_array", "like", "memory_of", "place", "to_host",
           "zero_fill"]
