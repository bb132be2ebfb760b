"""The Adam and RMSprop kernels against the NumPy reference: float32 and float64, sizes 1,
primes, around the serial/parallel switch and not multiples of the chunk; several steps;
independence of the thread count; subnormal state stored as zero; NaN propagation."""
import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn.kernels import optim as K

from conftest import assert_close, random

# --------------------------------------------------------------------------- kernels
ADAM_VARIANTS = {            # name: (amsgrad, L2 weight decay, param_decay)
    "adam": (False, 0.0, 1.0),
    "adam_l2": (False, 0.05, 1.0),
    "adamw": (False, 0.0, 1 - 1e-2 * 0.1),
    "amsgrad": (True, 0.05, 1.0),
}
RMSPROP_VARIANTS = {         # name: (centered, momentum, weight decay)
    "plain": (False, 0.0, 0.0),
    "centered": (True, 0.0, 0.01),
    "momentum": (False, 0.9, 0.0),
    "centered_momentum": (True, 0.5, 0.01),
}


def _threshold_sizes():
    """Sizes around the serial/parallel switch of a kernel with 3, 4 or 5 arrays, and
    sizes that are not multiples of the chunk."""
    sizes = {1, 7, 1031}
    for n_arrays in (3, 4, 5):
        for itemsize in (4, 8):
            t = K.SERIAL_MAX_BYTES // (n_arrays * itemsize)
            sizes |= {t - 1, t, t + 1, t + K.CHUNK + 1}
    sizes.add(3 * K.CHUNK + 5)
    return sorted(sizes)


SIZES = _threshold_sizes()


def _adam_state(rng, size, dtype, amsgrad):
    m = random(rng, size, dtype, scale=0.1)
    v = (rng.random(size) * 0.01).astype(dtype)
    v_max = (rng.random(size) * 0.01).astype(dtype) if amsgrad else np.empty(0, dtype)
    return m, v, v_max


@pytest.mark.parametrize("variant", list(ADAM_VARIANTS))
def test_adam_kernel_matches_reference(variant, dtype, rng, numba_ops, reference):
    amsgrad, l2, param_decay = ADAM_VARIANTS[variant]
    for size in SIZES:
        p, g = random(rng, size, dtype), random(rng, size, dtype)
        m, v, v_max = _adam_state(rng, size, dtype, amsgrad)
        ref = [a.astype(np.float64) for a in (p, g, m, v, v_max)]
        for t in (1, 2, 3):          # three steps, each with its bias corrections
            args = (1e-2 / (1 - 0.9 ** t), 0.9, 0.999, 1e-8, l2, param_decay,
                    np.sqrt(1 - 0.999 ** t))
            assert numba_ops.adam_update(p, g, m, v, v_max, *args) is p
            reference.adam_update(*ref, *args)
        for got, want in zip((p, m, v, v_max), (ref[0], ref[2], ref[3], ref[4])):
            assert got.dtype == dtype
            # absolute error floor: a few ulps of |param| ~ 1 (float32 without FMA: 3e-7)
            assert_close(got, want, dtype, atol_scale=0.1)


@pytest.mark.parametrize("variant", list(RMSPROP_VARIANTS))
def test_rmsprop_kernel_matches_reference(variant, dtype, rng, numba_ops, reference):
    centered, momentum, wd = RMSPROP_VARIANTS[variant]
    for size in SIZES:
        p, g = random(rng, size, dtype), random(rng, size, dtype)
        sq = (rng.random(size) + 0.5).astype(dtype)
        ga = random(rng, size, dtype, scale=0.1) if centered else np.empty(0, dtype)
        buf = random(rng, size, dtype) if momentum else np.empty(0, dtype)
        ref = [a.astype(np.float64) for a in (p, g, sq, ga, buf)]
        for _ in range(3):
            args = (1e-2, 0.99, 1e-8, wd, momentum)
            assert numba_ops.rmsprop_update(p, g, sq, ga, buf, *args) is p
            reference.rmsprop_update(*ref, *args)
        for got, want in zip((p, sq, ga, buf), (ref[0], ref[2], ref[3], ref[4])):
            assert got.dtype == dtype
            # absolute error floor: a few ulps of |param| ~ 1 (float32 without FMA: 3e-7)
            assert_close(got, want, dtype, atol_scale=0.1)


def test_updates_do_not_depend_on_the_thread_count(rng, numba_ops):
    size = 5 * K.CHUNK + 77          # parallel path, ragged last chunk
    results = []
    for n_threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(n_threads)
        try:
            r = np.random.default_rng(7)
            p, g = random(r, size, np.float32), random(r, size, np.float32)
            m, v, v_max = _adam_state(r, size, np.float32, True)
            numba_ops.adam_update(p, g, m, v, v_max, 0.01, 0.9, 0.999, 1e-8, 0.0, 1.0, 0.5)
            sq, buf = np.abs(random(r, size, np.float32)), random(r, size, np.float32)
            ga = random(r, size, np.float32, scale=0.01)
            q = p.copy()
            numba_ops.rmsprop_update(q, g, sq, ga, buf, 0.01, 0.99, 1e-8, 0.0, 0.9)
            results.append((p, m, v, v_max, q, sq, ga, buf))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", [7, 1031, 100_003])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_decaying_state_below_the_smallest_normal_is_stored_as_zero(size, backend, dtype,
                                                                    rng):
    """A parameter whose gradient stays zero (a dead unit) decays its moments by beta1 /
    beta2 (alpha, momentum); once one would become subnormal it is stored as zero, in
    both backends.  Normal values and NaN are kept."""
    ops = fnn.get_backend(backend)
    tiny = np.finfo(dtype).tiny
    g = np.zeros(size, dtype)

    def decaying(factor, positive=False):
        s = random(rng, size, dtype)
        s = np.abs(s) if positive else s
        s[::3] = tiny * (1 + (1 - factor) / 2)      # * factor -> subnormal
        s[1::3] = tiny * 4                          # * factor -> still normal
        s[-1] = np.nan
        return s

    def check(state, before, factor):
        finite = state[:-1]
        assert np.all(finite[::3] == 0)
        assert not np.any((finite != 0) & (np.abs(finite) < tiny))     # no subnormal left
        np.testing.assert_allclose(finite[1::3], before[:-1][1::3] * factor, rtol=1e-6)
        assert np.isnan(state[-1])

    m, v = decaying(0.9), decaying(0.999, positive=True)
    before = m.astype(np.float64), v.astype(np.float64)
    p = random(rng, size, dtype)
    ops.adam_update(p, g, m, v, np.empty(0, dtype), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0, 1.0)
    check(m, before[0], 0.9)
    check(v, before[1], 0.999)
    assert np.isnan(p[-1]) and np.isfinite(p[:-1]).all()

    sq, ga, buf = decaying(0.99, positive=True), decaying(0.99), decaying(0.9)
    before = [a.astype(np.float64) for a in (sq, ga, buf)]
    p = random(rng, size, dtype)
    ops.rmsprop_update(p, g, sq, ga, buf, 1e-2, 0.99, 1e-8, 0.0, 0.9)
    for state, old, factor in zip((sq, ga, buf), before, (0.99, 0.99, 0.9)):
        check(state, old, factor)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_nan_gradient_reaches_parameter_and_state(backend, dtype, rng):
    ops = fnn.get_backend(backend)
    p, g = random(rng, 9, dtype), random(rng, 9, dtype)
    g[4] = np.nan
    m, v, v_max = _adam_state(rng, 9, dtype, True)
    ops.adam_update(p, g, m, v, v_max, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0, 0.1)
    for a in (p, m, v, v_max):
        assert np.isnan(a[4]) and np.isnan(a).sum() == 1
    p, sq = random(rng, 9, dtype), np.abs(random(rng, 9, dtype))
    ops.rmsprop_update(p, g, sq, np.zeros(9, dtype), np.zeros(9, dtype), 1e-2, 0.99, 1e-8,
                       0.0, 0.9)
    assert np.isnan(p[4]) and np.isnan(p).sum() == 1


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_centered_rmsprop_negative_variance_counts_as_zero(backend, dtype):
    """``square_avg - grad_avg**2`` is >= 0 in exact arithmetic but rounding can make it
    slightly negative (a constant gradient, FMA); the update then uses a variance of 0,
    where PyTorch would take the square root of a negative number (NaN)."""
    ops = fnn.get_backend(backend)
    p = np.array([1.0, -2.0], dtype)
    sq = np.array([1e-4, 1e-6], dtype)
    ga = np.array([0.1, 0.01], dtype)          # sq < ga**2 after the decay
    buf = np.zeros(2, dtype)
    ops.rmsprop_update(p, np.zeros(2, dtype), sq, ga, buf, 1e-2, 0.5, 1e-8, 0.0, 0.9)
    np.testing.assert_array_equal(p, [1.0, -2.0])
    np.testing.assert_array_equal(buf, [0.0, 0.0])
