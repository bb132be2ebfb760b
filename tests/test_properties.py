"""Property-based tests (hypothesis): laws the math guarantees, and the public API either
returning a correct result or raising one of its documented exceptions for any input."""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnn as fnn

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DOCUMENTED = (ValueError, TypeError)

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
dims = st.integers(1, 9)


@SETTINGS
@given(st.data(), dims, dims, st.sampled_from(["float32", "float64"]))
def test_softmax_rows_are_distributions(data, rows, cols, dtype):
    x = data.draw(hnp.arrays(dtype, (rows, cols), elements=finite))
    y = fnn.Softmax()(x)
    assert np.isfinite(y).all() and (y >= 0).all()
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-5)


@SETTINGS
@given(st.data(), dims, dims, dims, dims)
def test_stacked_linear_layers_equal_one(data, batch, n_in, n_mid, n_out):
    seed = data.draw(st.integers(0, 2**16))
    l1 = fnn.Linear(n_in, n_mid, dtype="float64", seed=seed, bias_init=0.1)
    l2 = fnn.Linear(n_mid, n_out, dtype="float64", seed=seed + 1, bias_init=-0.3)
    x = data.draw(hnp.arrays(np.float64, (batch, n_in), elements=st.floats(-10, 10)))
    one = fnn.Linear(n_in, n_out, dtype="float64")
    one.weight.data[...] = l1.weight.data @ l2.weight.data
    one.bias.data[...] = l1.bias.data @ l2.weight.data + l2.bias.data
    np.testing.assert_allclose(fnn.Sequential(l1, l2)(x), one(x), rtol=1e-9, atol=1e-9)


def _any_array():
    dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_,
                              np.complex64, np.object_])
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)
    return st.one_of(
        hnp.arrays(st.shared(dtypes, key="d").filter(lambda d: d != np.object_),
                   shapes, elements=None),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
        st.just("not an array"))


@SETTINGS
@given(x=_any_array(), y=st.one_of(_any_array(), hnp.arrays(np.int64, st.integers(0, 6),
                                                          elements=st.integers(-2, 5))))
def test_public_api_returns_or_raises_documented_errors(x, y):
    model = fnn.Sequential(fnn.Linear(4, 5), fnn.Tanh(), fnn.Linear(5, 3), seed=0)
    model.compile(optimizer=fnn.SGD(lr=0.01), loss="cross_entropy", metrics=["accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # no silent overflow/NaN warnings
        calls = (lambda: model(x), lambda: model.predict(x),
                 lambda: model.fit(x, y, epochs=1, batch_size=2, verbose=0),
                 lambda: model.evaluate(x, y), lambda: fnn.CrossEntropyLoss()(x, y))
        for call in calls:
            try:
                result = call()
            except DOCUMENTED:
                continue
            if call is calls[0]:     # a forward result must also be the right one
                with fnn.use_backend("numpy"):
                    np.testing.assert_allclose(result, model(x), rtol=1e-4, atol=1e-5)
            values = result.history["loss"] if hasattr(result, "history") else (
                list(result.values()) if isinstance(result, dict) else
                [result[0]] if isinstance(result, tuple) else [result])
            for v in values:
                assert np.isfinite(np.asarray(v, dtype=np.float64)).all(), "silent NaN/Inf"


@SETTINGS
@given(st.data(), st.sampled_from(sorted(fnn.ACTIVATIONS)), dims, dims,
       st.sampled_from(["float32", "float64"]))
def test_activation_layers_are_finite_and_match_numpy(data, name, rows, cols, dtype):
    x = data.draw(hnp.arrays(dtype, (rows, cols), elements=finite))
    layer = fnn.Activation(name)
    y = layer(x)
    grad = layer.backward(np.ones_like(y))
    assert np.isfinite(y).all() and np.isfinite(grad).all()
    with fnn.use_backend("numpy"):
        ref = fnn.Activation(name)(x)
    np.testing.assert_allclose(y, ref, rtol=2e-5 if dtype == "float32" else 1e-10, atol=1e-6)
