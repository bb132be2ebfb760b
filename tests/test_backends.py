"""Backends as a chain of operations modules: the NumPy backend is the base, the Numba
backend replaces its hot paths, and an operation a backend lacks is an error when it is
used, naming the operation, not when the backend is built."""
import types

import numpy as np
import pytest

import fastnn as fnn
from fastnn.backends import OPERATIONS, Backend

# Operations the Numba backend deliberately takes from NumPy: metric sums, once per batch
# on (batch x classes) outputs.  Anything else showing up here lost its kernel.
NUMPY_IN_NUMBA = {"argmax_matches", "argmax_matches_soft", "sign_matches", "abs_error_sum",
                  "squared_error_sum", "top_k_matches", "top_k_matches_soft",
                  # attention heads: a strided copy, as fast in NumPy
                  "split_heads", "merge_heads",
                  "add"}         # one pass over memory: NumPy's is as fast


def test_numpy_backend_provides_every_operation():
    backend = fnn.get_backend("numpy")
    assert set(backend.provided_by) == set(OPERATIONS)
    assert set(backend.provided_by.values()) == {"fastnn.backends.numpy_ops"}


def test_numba_backend_replaces_the_hot_paths_and_inherits_the_rest():
    backend = fnn.get_backend("numba")
    assert set(backend.provided_by) == set(OPERATIONS)
    from_numpy = {op for op, module in backend.provided_by.items() if module.endswith("numpy_ops")}
    assert from_numpy == NUMPY_IN_NUMBA
    reference = fnn.get_backend("numpy")
    assert backend.argmax_matches is reference.argmax_matches
    assert backend.matmul is not reference.matmul


def test_a_missing_operation_is_an_error_when_used_not_when_built():
    calls = []
    toy_ops = types.SimpleNamespace(__name__="toy_ops",
                                    matmul=lambda a, b, out: calls.append("matmul"))
    backend = Backend("toy", [toy_ops])               # builds although it lacks most ops
    backend.matmul(None, None, None)
    assert calls == ["matmul"]
    with pytest.raises(NotImplementedError, match=r"'toy' backend has no 'sgd_update'"):
        backend.sgd_update(np.zeros(3), np.zeros(3), 0.1, 0.0)
    with pytest.raises(AttributeError):
        backend.no_such_thing


def test_a_chain_takes_each_operation_from_the_first_module_that_has_it():
    first = types.SimpleNamespace(__name__="first", matmul="first's")
    second = types.SimpleNamespace(__name__="second", matmul="second's", bias_add="second's")
    backend = Backend("chained", [first, second])
    assert backend.matmul == "first's" and backend.bias_add == "second's"
    assert backend.provided_by == {"matmul": "first", "bias_add": "second"}
