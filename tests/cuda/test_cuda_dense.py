"""``bias_act`` and ``act_bias_grad`` (:mod:`fastnn.kernels.cuda.dense`) against the NumPy
reference: the activations of :mod:`fastnn.backends.numpy_ops` applied to ``z + b``, and
the ``dz``/``db`` part of ``numpy_ops.dense_backward``.

Shapes are tiny (simulator) but cover one element, narrow and wide rows, a row wider than a
block, several column strips of ``act_bias_grad`` and more rows than a block has threads
per column.
"""
import numpy as np
import pytest
from cudatest import assert_close, device_random, needs_cuda

from fastnn.backends import numpy_ops
from fastnn.kernels.activations import ACTIVATIONS
from fastnn.kernels.cuda import dense
from fastnn.kernels.dense import FROM_OUTPUT
from fastnn.kernels.epilogue import EPILOGUE_CODES

NAMES = list(EPILOGUE_CODES)
GRAD_NAMES = [name for name in NAMES if name in FROM_OUTPUT]
# Non-default parameters in the registry's order, so a kernel ignoring one is caught.
PARAMS = {"sigmoid": (1.7,), "leaky_relu": (0.2,), "elu": (0.7,),
          "piecewise_linear": (-0.3, 0.9)}


def params_for(name):
    return PARAMS.get(name, tuple(ACTIVATIONS[name].values()))


def two(params):
    return (tuple(params) + (0.0, 0.0))[:2]


def no_bias(dtype):
    from numba import cuda
    return cuda.device_array(0, dtype=dtype)


def reference_act(name, z, params):
    """The reference activation of ``z`` (any dtype), in float64."""
    z64 = z.astype(np.float64)
    return getattr(numpy_ops, f"{name}_forward")(z64, np.empty_like(z64), *params)


def test_ptx_signatures_cover_both_kernels_in_both_dtypes():
    names = sorted(name for name, _, _ in dense.PTX_SIGNATURES)
    assert names == sorted(f"{k}_{t}" for k in ("bias_act_kernel", "act_bias_grad_kernel")
                           for t in ("float32", "float64"))


# --------------------------------------------------------------------------- bias_act
@needs_cuda
@pytest.mark.parametrize("shape", [(1, 1), (5, 37), (1, 300), (70, 3)], ids=str)
def test_bias_act_matches_reference(shape, dtype, rng):
    from numba import cuda
    z, d_z = device_random(rng, shape, dtype, scale=2.0)
    b, d_b = device_random(rng, shape[1], dtype)
    for name in NAMES:
        params = params_for(name)
        d_out = cuda.device_array(shape, dtype=dtype)
        assert dense.bias_act(d_z, d_b, d_out, EPILOGUE_CODES[name], *two(params)) is d_out
        # z + b rounded to the dtype, as the kernel adds them, then the reference.
        assert_close(d_out, reference_act(name, z + b, params), dtype, rtol32=1e-5,
                     atol_scale=1e-1)


@needs_cuda
@pytest.mark.parametrize("name", NAMES)
def test_bias_act_without_bias_and_in_place(name, dtype, rng):
    from numba import cuda
    shape = (5, 9)
    params = params_for(name)
    z, d_z = device_random(rng, shape, dtype, scale=2.0)
    out = dense.bias_act(d_z, no_bias(dtype), cuda.device_array(shape, dtype=dtype),
                         EPILOGUE_CODES[name], *two(params)).copy_to_host()
    assert_close(out, reference_act(name, z, params), dtype, rtol32=1e-5, atol_scale=1e-1)
    b, d_b = device_random(rng, shape[1], dtype)
    expected = dense.bias_act(d_z, d_b, cuda.device_array(shape, dtype=dtype),
                              EPILOGUE_CODES[name], *two(params)).copy_to_host()
    assert dense.bias_act(d_z, d_b, d_z, EPILOGUE_CODES[name], *two(params)) is d_z
    np.testing.assert_array_equal(d_z.copy_to_host(), expected)


@needs_cuda
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_bias_act_special_values_follow_the_reference(dtype):
    """NaN, ±inf and large |z| map as in NumPy in the same dtype (NaN stays NaN)."""
    from numba import cuda
    values = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 80.0, -80.0, 1e4, -1e4]
    z = np.tile(np.array(values, dtype=dtype), (2, 1))
    d_z = cuda.to_device(z)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for name in NAMES:
        params = params_for(name)
        out = dense.bias_act(d_z, no_bias(dtype), cuda.device_array(z.shape, dtype=dtype),
                             EPILOGUE_CODES[name], *two(params))
        with np.errstate(all="ignore"):
            expected = getattr(numpy_ops, f"{name}_forward")(z, np.empty_like(z), *params)
        np.testing.assert_allclose(out.copy_to_host(), expected, rtol=rtol, atol=0,
                                   equal_nan=True, err_msg=name)


# --------------------------------------------------------------------------- act_bias_grad
def grad_case(rng, shape, dtype, name, params):
    """(dy, y, db0) with ``y`` an output of the activation, all of ``dtype``."""
    dy = rng.standard_normal(shape).astype(dtype)
    y = reference_act(name, 2 * rng.standard_normal(shape), params).astype(dtype)
    db0 = rng.standard_normal(shape[1]).astype(dtype)
    return dy, y, db0


def reference_grad(dy, y, db0, name, params, accumulate):
    """``dz`` and ``db`` from ``numpy_ops.dense_backward`` (in float64)."""
    n_rows, n_cols = dy.shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_rows, 2))
    w = rng.standard_normal((2, n_cols))
    dz = np.empty((n_rows, n_cols))
    db = db0.astype(np.float64)
    numpy_ops.dense_backward(dy.astype(np.float64), x, w, y.astype(np.float64), dz,
                             np.empty((2, n_cols)), db, None, False, accumulate, name,
                             *params)
    return dz, db


def assert_db_close(db, db_ref, dz_ref, db0, accumulate, dtype):
    # Summation error: a few ulps of the sum of magnitudes.
    magnitude = np.abs(dz_ref).sum(axis=0) + (np.abs(db0) if accumulate else 0)
    bound = 4 * np.finfo(dtype).eps * magnitude + np.finfo(dtype).tiny
    assert (np.abs(db.astype(np.float64) - db_ref) <= bound).all(), (db, db_ref)


@needs_cuda
# (3, 7): fewer rows than threads per column, a partial strip; (70, 33): two column
# strips (the second with one column), rows not a multiple of the threads per column.
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (70, 33)], ids=str)
def test_act_bias_grad_matches_dense_backward(shape, dtype, rng):
    from numba import cuda
    for i, name in enumerate(GRAD_NAMES + GRAD_NAMES[:1]):
        accumulate = bool(i % 2)            # both ways for every shape (and the first name)
        params = params_for(name)
        dy, y, db0 = grad_case(rng, shape, dtype, name, params)
        d_dz = cuda.device_array(shape, dtype=dtype)
        d_db = cuda.to_device(db0)
        result = dense.act_bias_grad(cuda.to_device(dy), cuda.to_device(y), d_dz, d_db,
                                     EPILOGUE_CODES[name], *two(params), accumulate)
        assert result is d_dz
        dz_ref, db_ref = reference_grad(dy, y, db0, name, params, accumulate)
        assert_close(d_dz, dz_ref, dtype, rtol32=1e-5, atol_scale=1e-1)
        assert_db_close(d_db.copy_to_host(), db_ref, dz_ref, db0, accumulate, dtype)


@needs_cuda
@pytest.mark.parametrize("name", ["relu", "sigmoid", "piecewise_linear"])
def test_act_bias_grad_without_bias_and_in_place(name, dtype, rng):
    from numba import cuda
    shape = (9, 40)
    params = params_for(name)
    dy, y, db0 = grad_case(rng, shape, dtype, name, params)
    dz_ref, db_ref = reference_grad(dy, y, db0, name, params, False)
    d_y = cuda.to_device(y)
    d_dz = dense.act_bias_grad(cuda.to_device(dy), d_y, cuda.device_array(shape, dtype=dtype),
                               no_bias(dtype), EPILOGUE_CODES[name], *two(params), False)
    assert_close(d_dz, dz_ref, dtype, rtol32=1e-5, atol_scale=1e-1)
    d_dy = cuda.to_device(dy)
    d_db = cuda.to_device(db0)
    assert dense.act_bias_grad(d_dy, d_y, d_dy, d_db, EPILOGUE_CODES[name], *two(params),
                               False) is d_dy
    np.testing.assert_array_equal(d_dy.copy_to_host(), d_dz.copy_to_host())
    assert_db_close(d_db.copy_to_host(), db_ref, dz_ref, db0, False, dtype)


@needs_cuda
def test_act_bias_grad_with_no_rows_zeroes_or_keeps_db(dtype):
    from numba import cuda
    empty = cuda.device_array((0, 5), dtype=dtype)
    d_db = cuda.to_device(np.arange(5, dtype=dtype))
    dense.act_bias_grad(empty, empty, empty, d_db, EPILOGUE_CODES["relu"], 0.0, 0.0, True)
    np.testing.assert_array_equal(d_db.copy_to_host(), np.arange(5))
    dense.act_bias_grad(empty, empty, empty, d_db, EPILOGUE_CODES["relu"], 0.0, 0.0, False)
    np.testing.assert_array_equal(d_db.copy_to_host(), 0)
