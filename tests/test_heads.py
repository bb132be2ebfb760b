"""The attention-head shuffles: split_heads and merge_heads are inverses and move each
element where the formula says."""
import numpy as np
import pytest

import fastnn as fnn


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("groups", [1, 3])
def test_split_and_merge_heads(backend, groups, rng):
    ops = fnn.get_backend(backend)
    b, s, h, d = 2, 5, 3, 4
    x = rng.normal(size=(b, s, groups * h * d))
    out = np.empty((groups, b, h, s, d))
    assert ops.split_heads(x, out) is out
    for g, bi, hi, si in np.ndindex(groups, b, h, s):
        np.testing.assert_array_equal(out[g, bi, hi, si], x[bi, si, (g * h + hi) * d:(g * h + hi + 1) * d])
    back = np.empty_like(x)
    assert ops.merge_heads(out, back) is back
    np.testing.assert_array_equal(back, x)
