"""Same seed -> bit-identical weights; and independent of the Numba thread count."""
import numba
import numpy as np
import pytest

import fastnn as fnn


def train(threads, clip_norm=None, seed=0):
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        rng = np.random.default_rng(1)
        x = rng.normal(size=(700, 40)).astype(np.float32)
        y = (x[:, :5].sum(axis=1) > 0).astype(int) + (x[:, 5] > 0.5)
        model = fnn.Sequential(fnn.Linear(40, 300, init="he_normal"), fnn.ReLU(),
                               fnn.Linear(300, 130), fnn.Tanh(), fnn.Linear(130, 3), seed=seed)
        model.compile(optimizer=fnn.SGD(lr=0.05, momentum=0.9, clip_norm=clip_norm),
                      loss="cross_entropy")
        model.fit(x, y, epochs=2, batch_size=64, seed=seed, verbose=0)
        return model.state_dict()
    finally:
        numba.set_num_threads(previous)


def assert_identical(a, b):
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_same_seed_is_bit_identical():
    assert_identical(train(numba.get_num_threads()), train(numba.get_num_threads()))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
@pytest.mark.parametrize("clip_norm", [None, 1.0])
def test_weights_do_not_depend_on_thread_count(clip_norm):
    assert_identical(train(1, clip_norm), train(2, clip_norm))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
def test_gradient_norm_does_not_depend_on_thread_count():
    from fastnn.kernels.optim import sum_of_squares
    x = np.random.default_rng(0).normal(size=3_000_001).astype(np.float32)
    previous = numba.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            results.append(sum_of_squares(x))
    finally:
        numba.set_num_threads(previous)
    assert results[0] == results[1]
    assert results[0] == pytest.approx(float((x.astype(np.float64) ** 2).sum()), rel=1e-12)
