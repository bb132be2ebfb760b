"""The CUDA activation kernels against the NumPy reference (:mod:`fastnn.backends.numpy_ops`).

Run under the simulator: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda``.  Shapes are
tiny (the simulator runs each GPU thread as a Python thread) but reach the edges: one
element, primes, 2-D arrays and more elements than one block (``THREADS``) holds.
"""
import inspect

import numpy as np
import pytest
from cudatest import assert_close, device_random, needs_cuda

from fastnn.backends import numpy_ops
from fastnn.kernels import activations as cpu
from fastnn.kernels.cuda import activations as gpu
from fastnn.kernels.cuda._common import THREADS

NAMES = sorted(cpu.ACTIVATIONS)
ELEMENTWISE = [name for name in NAMES if name not in cpu.ROW_WISE]
# 300 elements: three blocks, the last one partly idle; (13, 37): a 2-D array.
SIZES = [(1,), (7,), (37,), (13, 37), (300,)]
# Non-default parameters, so a kernel that ignores its parameter is caught.
PARAMS = {"sigmoid": {"beta": 2.5}, "leaky_relu": {"alpha": 0.2}, "elu": {"alpha": 0.7},
          "piecewise_linear": {"x_min": -1.5, "x_max": 0.75}}


def params_for(name):
    return tuple({**cpu.ACTIVATIONS[name], **PARAMS.get(name, {})}.values())


def kernels(module, name):
    return getattr(module, f"{name}_forward"), getattr(module, f"{name}_backward")


def empty_like(device_array):
    from numba import cuda
    return cuda.device_array(device_array.shape, dtype=device_array.dtype)


def public_kernels(module):
    return {name: getattr(module, name) for name in dir(module)
            if not name.startswith("_") and name.endswith(("_forward", "_backward"))}


def test_exposes_exactly_the_cpu_kernels():
    ours, theirs = public_kernels(gpu), public_kernels(cpu)
    assert sorted(ours) == sorted(theirs)
    for name, fn in ours.items():
        expected = inspect.signature(theirs[name].py_func)
        assert list(inspect.signature(fn).parameters) == list(expected.parameters), name
    assert gpu.ACTIVATIONS is cpu.ACTIVATIONS
    assert gpu.NOT_DIFFERENTIABLE is cpu.NOT_DIFFERENTIABLE
    assert gpu.ROW_WISE is cpu.ROW_WISE
    assert gpu.__all__ == cpu.__all__


def test_ptx_signatures_cover_every_kernel_in_both_dtypes():
    names = [name for name, _, _ in gpu.PTX_SIGNATURES]
    assert len(names) == len(set(names)) == 8
    for name, fn, sig in gpu.PTX_SIGNATURES:
        dtype = "float32" if name.endswith("float32") else "float64"
        assert dtype in sig and ("float64" not in sig or dtype == "float64"), name
        assert callable(fn)


@needs_cuda
@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_matches_reference(name, shape, dtype, rng):
    params = params_for(name)
    fwd, bwd = kernels(gpu, name)
    ref_fwd, ref_bwd = kernels(numpy_ops, name)
    x, d_x = device_random(rng, shape, dtype, scale=2.0)
    dy, d_dy = device_random(rng, shape, dtype)
    d_y = empty_like(d_x)
    assert fwd(d_x, d_y, *params) is d_y
    y = d_y.copy_to_host()
    assert y.dtype == dtype
    x64 = x.astype(np.float64)
    y_ref = ref_fwd(x64, np.empty(shape), *params)
    assert_close(y, y_ref, dtype, rtol32=1e-5, atol_scale=1e-1)
    # The backward on the kernel's own y (with y_ref, last-ulp differences of y would be
    # amplified in 1 - y**2 where tanh is near ±1).
    d_g = empty_like(d_x)
    assert bwd(d_dy, d_x, d_y, d_g, *params) is d_g
    g_ref = ref_bwd(dy.astype(np.float64), x64, y.astype(np.float64), np.empty(shape), *params)
    assert_close(d_g, g_ref, dtype, rtol32=1e-5, atol_scale=1e-1)


@needs_cuda
@pytest.mark.parametrize("name", NAMES)
def test_kernels_work_in_place(name, dtype, rng):
    from numba import cuda
    params = params_for(name)
    fwd, bwd = kernels(gpu, name)
    shape = (3, 11)
    x, d_x = device_random(rng, shape, dtype)
    dy, d_dy = device_random(rng, shape, dtype)
    d_y = fwd(d_x, empty_like(d_x), *params)
    g = bwd(d_dy, d_x, d_y, empty_like(d_x), *params).copy_to_host()
    d_x_in = cuda.to_device(x)
    assert fwd(d_x_in, d_x_in, *params) is d_x_in
    np.testing.assert_array_equal(d_x_in.copy_to_host(), d_y.copy_to_host())
    assert bwd(d_dy, d_x, d_y, d_dy, *params) is d_dy
    np.testing.assert_array_equal(d_dy.copy_to_host(), g)


@needs_cuda
@pytest.mark.parametrize("width", [1, 7, 300])
def test_softmax_rows_match_reference(width, dtype, rng):
    shape = (3, width)          # width 300: more columns than threads in the block
    x, d_x = device_random(rng, shape, dtype, scale=3.0)
    dy, d_dy = device_random(rng, shape, dtype)
    d_y = gpu.softmax_forward(d_x, empty_like(d_x))
    y = d_y.copy_to_host()
    x64 = x.astype(np.float64)
    assert_close(y, numpy_ops.softmax_forward(x64, np.empty(shape)), dtype, rtol32=1e-5,
                 atol_scale=1e-1)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6 if dtype == np.float32 else 1e-14)
    g_ref = numpy_ops.softmax_backward(dy.astype(np.float64), x64, y.astype(np.float64),
                                       np.empty(shape))
    g = gpu.softmax_backward(d_dy, d_x, d_y, empty_like(d_x))
    assert_close(g, g_ref, dtype, rtol32=1e-5, atol_scale=1e-1)


@needs_cuda
def test_wide_softmax_rows_use_full_blocks():
    # THREADS + 1 columns: every thread of the block has one element, one has two.
    rng = np.random.default_rng(3)
    x, d_x = device_random(rng, (1, THREADS + 1), np.float64)
    y = gpu.softmax_forward(d_x, empty_like(d_x)).copy_to_host()
    assert_close(y, numpy_ops.softmax_forward(x, np.empty_like(x)), np.float64)


def special_values(dtype):
    values = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 80.0, -80.0, 1e4, -1e4]
    if dtype == np.float64:
        values += [1000.0, -1000.0]
    return np.array(values, dtype=dtype)


# The simulator computes with NumPy scalars, which warn where the reference does (inf * 0).
@needs_cuda
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_special_values_follow_the_reference(name, dtype):
    """NaN, ±inf and large |x| give what NumPy gives in the same dtype (NaN where it gives
    NaN: a diverging layer stays visible; 0/1 or ±inf where it saturates)."""
    from numba import cuda
    params = params_for(name)
    fwd, bwd = kernels(gpu, name)
    ref_fwd, ref_bwd = kernels(numpy_ops, name)
    x = special_values(dtype)
    d_x = cuda.to_device(x)
    y = fwd(d_x, empty_like(d_x), *params).copy_to_host()
    dy = np.ones_like(x)
    g = bwd(cuda.to_device(dy), d_x, cuda.to_device(y), empty_like(d_x), *params)
    with np.errstate(all="ignore"):
        y_ref = ref_fwd(x, np.empty_like(x), *params)
        g_ref = ref_bwd(dy, x, y, np.empty_like(x), *params)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, y_ref, rtol=rtol, atol=0, equal_nan=True, err_msg=name)
    np.testing.assert_allclose(g.copy_to_host(), g_ref, rtol=rtol, atol=0, equal_nan=True,
                               err_msg=name)


@needs_cuda
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_softmax_special_rows(dtype):
    from numba import cuda
    inf, nan = np.inf, np.nan
    x = np.array([[1000, -1000, 0], [-1000, -1000, -1000], [5, 5, 5], [80, -80, 0],
                  [nan, 1, 2], [inf, 0, 1], [-inf, 0, 1], [-inf, -inf, -inf]], dtype=dtype)
    y = gpu.softmax_forward(cuda.to_device(x), cuda.device_array(x.shape, dtype))
    with np.errstate(all="ignore"):
        y_ref = numpy_ops.softmax_forward(x, np.empty_like(x))
    np.testing.assert_allclose(y.copy_to_host(), y_ref, rtol=1e-6, atol=1e-30,
                               equal_nan=True)
    assert np.isnan(y_ref[4:6]).all() and np.isnan(y_ref[7]).all()
