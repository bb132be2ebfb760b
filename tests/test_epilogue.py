"""Tests for the fused dense forward ``matmul_bias_act`` and for ``bias_act_rows``.

Reference: the product and bias in float64, then the activation of
:mod:`fastnn.backends.numpy_ops` in float64.  The shapes reach every dispatch rule that
``matmul`` can take (4-row tiles, narrow tiles, the micro-kernel with ``b`` in place and
packed, ragged tiles, several k blocks, the parallel driver), since the epilogue is
applied inside each of them.
"""
import math

import numpy as np
import pytest

from fastnn.backends import numpy_ops
from fastnn.kernels.activations import ACTIVATIONS, ROW_WISE
from fastnn.kernels.epilogue import EPILOGUE_CODES, NO_EPILOGUE, bias_act_rows
from fastnn.kernels.matmul import matmul_bias_act

DTYPES = [np.float32, np.float64]
NAMES = list(EPILOGUE_CODES)

# Non-default parameters, in the registry's order (sigmoid beta, leaky_relu/elu alpha,
# piecewise_linear x_min/x_max); the defaults are tested too.
PARAMS = {"sigmoid": (1.7,), "leaky_relu": (0.2,), "elu": (0.7,),
          "piecewise_linear": (-0.3, 0.9)}

# (M, N, K): output M x N, contraction K.
SHAPES = [
    (1, 1, 1),
    (1, 7, 5),          # one row: 4-row tiles
    (5, 300, 40),       # few rows, ragged vector group
    (37, 10, 50),       # narrow output (the 10-class layer)
    (3, 1, 13),
    (33, 70, 29),       # micro-kernel, b in place, ragged tiles
    (131, 67, 257),     # micro-kernel, b packed, two k blocks
    (97, 130, 70),      # primes
    (64, 512, 100),     # parallel, columns split among threads
    (600, 40, 50),      # parallel, rows split
]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


def _params(name, default):
    if default:
        return tuple(ACTIVATIONS[name].values())
    return PARAMS.get(name, tuple(ACTIVATIONS[name].values()))


def _two(params):
    return (params + (0.0, 0.0))[:2]


def _reference(name, z64, params):
    out = np.empty_like(z64)
    with np.errstate(all="ignore"):
        return getattr(numpy_ops, f"{name}_forward")(z64, out, *params)


def _lipschitz(name, params):
    """A bound on |f'|, so that an error of the pre-activation bounds the output error."""
    if name == "sigmoid":
        return abs(params[0]) / 4
    if name in ("leaky_relu", "elu"):
        return max(1.0, abs(params[0]))
    if name == "piecewise_linear":
        return 1.0 / (params[1] - params[0])
    if name in ("gelu",):
        return 1.13
    if name == "gaussian":
        return 0.86
    return 1.0


def _check(name, params, result, z64, z_err, dtype):
    """``result`` (dtype) against f(z64) given a bound ``z_err`` on the error of z."""
    expected = _reference(name, z64, params)
    rtol = 8 * np.finfo(dtype).eps
    bound = _lipschitz(name, params) * z_err + rtol * np.abs(expected) + np.finfo(dtype).tiny
    ok = np.abs(result.astype(np.float64) - expected) <= bound
    if name == "step":
        ok |= np.abs(z64) <= z_err      # the step may flip where z is within rounding of 0
    bad = np.argwhere(~ok)
    assert bad.size == 0, (
        f"{name}{params}: {len(bad)} mismatches, first at {tuple(bad[0])}: "
        f"{result[tuple(bad[0])]!r} vs {expected[tuple(bad[0])]!r}")


def test_codes_are_the_registry_names():
    for name in EPILOGUE_CODES:
        assert name in ACTIVATIONS
    # Every element-wise activation has a code; softmax works on rows.
    assert set(EPILOGUE_CODES) == set(ACTIVATIONS) - set(ROW_WISE)
    codes = list(EPILOGUE_CODES.values())
    assert sorted(codes) == list(range(len(codes)))
    assert NO_EPILOGUE not in codes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_matmul_bias_act_matches_reference(shape, dtype):
    M, N, K = shape
    rng = np.random.default_rng([M, N, K])
    a = rng.standard_normal((M, K)).astype(dtype)
    b = (rng.standard_normal((K, N)) / math.sqrt(K)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    product = a64 @ b64
    scale = np.abs(a64) @ np.abs(b64)
    eps = np.finfo(dtype).eps
    for with_bias in (True, False):
        z64 = product + bias if with_bias else product
        z_err = (2 * math.sqrt(K) * scale + np.abs(z64)) * eps
        for name in NAMES:
            for default in (True, False):
                params = _params(name, default)
                out = np.full((M, N), np.nan, dtype=dtype)
                result = matmul_bias_act(a, b, bias if with_bias else bias[:0], out,
                                         EPILOGUE_CODES[name], *_two(params))
                assert result is out and out.dtype == dtype
                _check(name, params, out, z64, z_err, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 31), (300, 131), (2, 40000)],
                         ids=["1x1", "3x7", "17x31", "parallel", "long-rows"])
def test_bias_act_rows_matches_reference(shape, dtype):
    rng = np.random.default_rng(list(shape))
    z = (3 * rng.standard_normal(shape)).astype(dtype)
    bias = rng.standard_normal(shape[1]).astype(dtype)
    eps = np.finfo(dtype).eps
    for with_bias in (True, False):
        z64 = z.astype(np.float64) + bias if with_bias else z.astype(np.float64)
        z_err = np.abs(z64) * eps
        for name in NAMES:
            for default in (True, False):
                params = _params(name, default)
                out = np.full(shape, np.nan, dtype=dtype)
                result = bias_act_rows(z, bias if with_bias else bias[:0], out,
                                       EPILOGUE_CODES[name], *_two(params))
                assert result is out
                _check(name, params, out, z64, z_err, dtype)
                # In place.
                inplace = z.copy()
                bias_act_rows(inplace, bias if with_bias else bias[:0], inplace,
                              EPILOGUE_CODES[name], *_two(params))
                np.testing.assert_array_equal(inplace, out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_follow_the_reference(dtype):
    # NaN must reach the output wherever the NumPy reference gives NaN (a fused forward
    # must not hide a diverging layer), and infinities must map as in the reference.
    big = np.finfo(dtype).max
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, big, -big, 1e-30],
                      dtype=dtype)
    z = np.tile(values, (3, 1))
    for name in NAMES:
        params = _params(name, False)
        out = bias_act_rows(z, z[0, :0], np.empty_like(z), EPILOGUE_CODES[name],
                            *_two(params))
        expected = _reference(name, z.astype(np.float64), params).astype(dtype)
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=0, equal_nan=True,
                                   err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 9, 6), (40, 10, 70), (130, 300, 70), (2, 50, 30)],
                         ids=["rows", "narrow", "packed", "one-row"])
def test_nan_in_the_product_propagates(shape, dtype):
    M, N, K = shape
    rng = np.random.default_rng(8)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    a[M // 2, K // 2] = np.nan
    bias = rng.standard_normal(N).astype(dtype)
    for name in NAMES:
        out = matmul_bias_act(a, b, bias, np.empty((M, N), dtype), EPILOGUE_CODES[name],
                              *_two(_params(name, True)))
        if name == "step":                         # the reference maps NaN to 0 too
            assert not np.any(np.isnan(out)), name
            continue
        assert np.all(np.isnan(out[M // 2])), name
        assert not np.any(np.isnan(np.delete(out, M // 2, axis=0))), name


def test_empty_contraction_applies_the_epilogue_to_the_bias():
    a = np.empty((3, 0), np.float32)
    b = np.empty((0, 4), np.float32)
    bias = np.array([-1.0, 0.5, 2.0, -3.0], np.float32)
    out = matmul_bias_act(a, b, bias, np.full((3, 4), np.nan, np.float32),
                          EPILOGUE_CODES["relu"])
    np.testing.assert_array_equal(out, np.tile(np.maximum(bias, 0), (3, 1)))


def test_epilogue_matches_the_activation_kernels():
    # Same formulas as kernels/activations.py (finite inputs; see epilogue.py for NaN).
    from fastnn.kernels import activations
    rng = np.random.default_rng(9)
    z = (3 * rng.standard_normal((7, 33))).astype(np.float32)
    for name in NAMES:
        params = _params(name, False)
        ours = bias_act_rows(z, z[0, :0], np.empty_like(z), EPILOGUE_CODES[name],
                             *_two(params))
        theirs = getattr(activations, f"{name}_forward")(z, np.empty_like(z), *params)
        np.testing.assert_allclose(ours, theirs, rtol=4e-7, atol=1e-37, err_msg=name)
