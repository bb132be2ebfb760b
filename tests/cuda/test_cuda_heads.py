"""The CUDA attention-head shuffles against the NumPy backend."""
import numpy as np
import pytest

import fastnn as fnn
from cudatest import needs_cuda

pytestmark = needs_cuda


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 3])
def test_heads_match_the_numpy_backend(dtype, groups):
    from numba import cuda
    cuda_ops, reference = fnn.get_backend("cuda"), fnn.get_backend("numpy")
    rng = np.random.default_rng(0)
    b, s, h, d = 2, 3, 2, 5
    x = rng.normal(size=(b, s, groups * h * d)).astype(dtype)
    expected = reference.split_heads(x, np.empty((groups, b, h, s, d), dtype))
    out = cuda.device_array((groups, b, h, s, d), dtype)
    np.testing.assert_array_equal(cuda_ops.split_heads(cuda.to_device(x), out).copy_to_host(),
                                  expected)
    back = cuda.device_array(x.shape, dtype)
    np.testing.assert_array_equal(cuda_ops.merge_heads(out, back).copy_to_host(), x)


def test_add_matches_the_numpy_backend():
    from numba import cuda
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    out = cuda.device_array(x.shape, x.dtype)
    np.testing.assert_array_equal(
        fnn.get_backend("cuda").add(cuda.to_device(x), cuda.to_device(y), out).copy_to_host(),
        x + y)
