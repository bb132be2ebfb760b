"""CUDA matmul, bias, loss and optimiser kernels against the NumPy backend.

Shapes are tiny (the simulator runs every GPU thread as a Python thread) but include 1,
primes and sizes that are not multiples of the matmul tile (64), the depth step (16) or the
block (128 threads), and a few that span several blocks.
"""
import numpy as np
import numba
import pytest
from numba.core import sigutils

from cudatest import assert_close, device_random, needs_cuda
from fastnn.backends import numpy_ops

cuda = pytest.importorskip("numba.cuda")
from fastnn.kernels.cuda import _common, bias, losses, matmul, optim  # noqa: E402

#: Module -> its public launchers (the names of the CPU kernels).
LAUNCHERS = {
    matmul: ("matmul", "matmul_nt", "matmul_tn"),
    bias: ("bias_add", "bias_grad"),
    losses: ("softmax_xent", "softmax_xent_soft", "bce_logits", "mse",
             "softmax_xent_weighted", "softmax_xent_soft_weighted", "bce_logits_weighted",
             "mse_weighted"),
    optim: ("sgd_update", "sgd_momentum_update", "sum_of_squares", "scale_inplace",
            "clip_inplace", "adam_update", "rmsprop_update"),
}


def _to_device(host):
    return cuda.to_device(np.ascontiguousarray(host))


# --------------------------------------------------------------------------- matmul
_OPERAND_SHAPES = {
    "matmul": lambda m, k, n: ((m, k), (k, n)),
    "matmul_nt": lambda m, k, n: ((m, k), (n, k)),
    "matmul_tn": lambda m, k, n: ((k, m), (k, n)),
}


@needs_cuda
@pytest.mark.parametrize("name", list(_OPERAND_SHAPES))
@pytest.mark.parametrize("m, k, n, accumulate", [
    (1, 1, 1, False),
    (7, 37, 13, False),         # three depth steps, the last one partial
    (13, 17, 7, True),
    (67, 5, 66, True),          # 2 x 2 blocks, both partial
])
def test_matmul(name, m, k, n, accumulate, dtype, rng):
    a_shape, b_shape = _OPERAND_SHAPES[name](m, k, n)
    a, d_a = device_random(rng, a_shape, dtype)
    b, d_b = device_random(rng, b_shape, dtype)
    out, d_out = device_random(rng, (m, n), dtype)
    result = getattr(matmul, name)(d_a, d_b, d_out, accumulate)
    assert result is d_out
    expected = getattr(numpy_ops, name)(a, b, out.copy(), accumulate)
    assert_close(d_out, expected, dtype)


# --------------------------------------------------------------------------- bias
@needs_cuda
@pytest.mark.parametrize("shape, in_place", [((1, 1), False), ((7, 13), False),
                                             ((37, 7), True)])
def test_bias_add(shape, in_place, dtype, rng):
    x, d_x = device_random(rng, shape, dtype)
    b, d_b = device_random(rng, shape[1], dtype)
    d_out = d_x if in_place else cuda.device_array(shape, dtype)
    assert bias.bias_add(d_x, d_b, d_out) is d_out
    assert_close(d_out, numpy_ops.bias_add(x, b, np.empty_like(x)), dtype)


@needs_cuda
@pytest.mark.parametrize("shape, accumulate", [((1, 1), False), ((37, 13), True),
                                               ((13, 37), False)])
def test_bias_grad(shape, accumulate, dtype, rng):
    dy, d_dy = device_random(rng, shape, dtype)
    out, d_out = device_random(rng, shape[1], dtype)
    assert bias.bias_grad(d_dy, d_out, accumulate) is d_out
    assert_close(d_out, numpy_ops.bias_grad(dy, out.copy(), accumulate), dtype)


# --------------------------------------------------------------------------- losses
def _check_loss(name, logits, target, dtype, d_target=None, rtol32=2e-5):
    grad = np.empty_like(logits)
    expected = getattr(numpy_ops, name)(logits, target, grad)
    d_grad = cuda.device_array(logits.shape, dtype)
    d_target = _to_device(target) if d_target is None else d_target
    loss = getattr(losses, name)(_to_device(logits), d_target, d_grad)
    assert isinstance(loss, float)
    rel = rtol32 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(expected, rel=rel, abs=rel, nan_ok=True)
    assert_close(d_grad, grad, dtype, rtol32=rtol32)


LOSS_SHAPES = [(1, 1), (7, 13), (37, 7)]


@needs_cuda
@pytest.mark.parametrize("shape", LOSS_SHAPES + [(130, 3)])     # 130 rows: 2 blocks
def test_softmax_xent(shape, dtype, rng):
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0]).astype(np.int64)
    _check_loss("softmax_xent", logits, labels, dtype)


@needs_cuda
@pytest.mark.parametrize("shape", LOSS_SHAPES)
def test_softmax_xent_soft(shape, dtype, rng):
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    targets = rng.uniform(0, 1, shape).astype(dtype)
    targets[targets < 0.3] = 0          # zero targets, rows not summing to 1
    _check_loss("softmax_xent_soft", logits, targets, dtype)


@needs_cuda
@pytest.mark.parametrize("shape", LOSS_SHAPES)
def test_bce_logits(shape, dtype, rng):
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    targets = rng.uniform(0, 1, shape).astype(dtype)
    _check_loss("bce_logits", logits, targets, dtype)


@needs_cuda
@pytest.mark.parametrize("shape", LOSS_SHAPES)
def test_mse(shape, dtype, rng):
    pred = rng.standard_normal(shape).astype(dtype)
    targets = rng.standard_normal(shape).astype(dtype)
    _check_loss("mse", pred, targets, dtype)


@needs_cuda
@pytest.mark.parametrize("shape", LOSS_SHAPES + [(130, 3)])     # 130 rows: 2 blocks
@pytest.mark.parametrize("name", ["softmax_xent", "softmax_xent_soft", "bce_logits", "mse"])
def test_weighted_losses(name, shape, dtype, rng):
    """The class/sample-weighted twins (each row's share given; BCE also pos_weight)
    against the NumPy backend, on random shares that differ row to row."""
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    target = (rng.integers(0, shape[1], shape[0]).astype(np.int64) if name == "softmax_xent"
              else rng.uniform(0, 1, shape).astype(dtype))
    extra = (((rng.random(shape[1]) * 3).astype(dtype),) if name == "bce_logits" else ()) + (
        ((rng.random(shape[0]) + 0.1) / shape[0]).astype(dtype),)
    grad = np.empty_like(logits)
    expected = getattr(numpy_ops, f"{name}_weighted")(logits, target, *extra, grad)
    d_grad = cuda.device_array(shape, dtype)
    loss = getattr(losses, f"{name}_weighted")(
        _to_device(logits), _to_device(target), *map(_to_device, extra), d_grad)
    rel = 2e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(expected, rel=rel)
    assert_close(d_grad, grad, dtype)


@needs_cuda
def test_losses_edge_values(dtype):
    """Logits of +-1e4 (no overflow), all-equal rows, and a NaN that poisons the loss
    (and its row, for the softmax losses) as in the reference."""
    big = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [0.0, 1e4, 1e4]], dtype)
    labels = np.array([1, 2, 0], np.int64)
    onehot = np.eye(3, dtype=dtype)[labels]
    with np.errstate(all="ignore"):
        _check_loss("softmax_xent", big, labels, dtype)
        _check_loss("softmax_xent_soft", big, onehot, dtype)
        _check_loss("bce_logits", big, onehot, dtype)
        nan = big.copy()
        nan[1, 1] = np.nan
        for name, target in [("softmax_xent", labels), ("softmax_xent_soft", onehot),
                             ("bce_logits", onehot), ("mse", onehot)]:
            _check_loss(name, nan, target, dtype)


# --------------------------------------------------------------------------- optimisers
OPTIM_SIZES = [1, 7, 300]           # 300: three blocks of 128


@needs_cuda
@pytest.mark.parametrize("size", OPTIM_SIZES)
def test_sgd_update(size, dtype, rng):
    param, d_param = device_random(rng, size, dtype)
    grad, d_grad = device_random(rng, size, dtype)
    assert optim.sgd_update(d_param, d_grad, 0.1, 0.01) is d_param
    assert_close(d_param, numpy_ops.sgd_update(param, grad, 0.1, 0.01), dtype)


@needs_cuda
@pytest.mark.parametrize("size, nesterov", [(1, False), (37, True), (300, False)])
def test_sgd_momentum_update(size, nesterov, dtype, rng):
    param, d_param = device_random(rng, size, dtype)
    grad, d_grad = device_random(rng, size, dtype)
    velocity, d_velocity = device_random(rng, size, dtype)
    result = optim.sgd_momentum_update(d_param, d_grad, d_velocity, 0.1, 0.9, 0.01,
                                       nesterov)
    assert result is d_param
    numpy_ops.sgd_momentum_update(param, grad, velocity, 0.1, 0.9, 0.01, nesterov)
    assert_close(d_param, param, dtype)
    assert_close(d_velocity, velocity, dtype)


@needs_cuda
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("size", [1, 7])
def test_momentum_stores_subnormal_velocities_as_zero(size, nesterov, dtype, rng):
    """As the CPU kernel (tests/test_kernels_misc.py): a velocity that decays below the
    smallest normal float becomes exactly zero, normal ones and NaN are kept, and the
    result equals the NumPy reference's."""
    tiny = np.finfo(dtype).tiny
    velocity = rng.standard_normal(size).astype(dtype)
    velocity[::3] = tiny * 1.05          # * 0.9 -> subnormal
    velocity[1::3] = tiny * 4            # * 0.9 -> still normal
    velocity[-1] = np.nan
    grad = np.zeros(size, dtype)         # a dead unit: no gradient
    param = rng.standard_normal(size).astype(dtype)
    d_param, d_grad, d_velocity = (_to_device(a) for a in (param, grad, velocity))
    expected = velocity.astype(np.float64) * 0.9
    optim.sgd_momentum_update(d_param, d_grad, d_velocity, 0.1, 0.9, 0.0, nesterov)
    numpy_ops.sgd_momentum_update(param, grad, velocity, 0.1, 0.9, 0.0, nesterov)
    got = d_velocity.copy_to_host()
    finite = got[:-1]
    assert np.all(finite[::3] == 0)
    assert not np.any((finite != 0) & (np.abs(finite) < tiny))      # no subnormal left
    np.testing.assert_allclose(finite[1::3], expected[:-1][1::3], rtol=1e-6)
    assert np.isnan(got[-1]) and np.isnan(d_param.copy_to_host()[-1])
    np.testing.assert_array_equal(got, velocity)                     # the reference's zeros
    assert_close(d_param, param, dtype)


@needs_cuda
@pytest.mark.parametrize("size", OPTIM_SIZES)
def test_sum_of_squares(size, dtype, rng):
    x, d_x = device_random(rng, size, dtype)
    total = optim.sum_of_squares(d_x)
    assert isinstance(total, float)
    rel = 2e-5 if dtype == np.float32 else 1e-12
    assert total == pytest.approx(numpy_ops.sum_of_squares(x), rel=rel)


@needs_cuda
@pytest.mark.parametrize("size", [7, 300])
def test_scale_and_clip_inplace(size, dtype, rng):
    x, d_x = device_random(rng, size, dtype)
    x[3] = np.nan
    d_x = _to_device(x)
    assert optim.scale_inplace(d_x, 1.7) is d_x
    assert optim.clip_inplace(d_x, 0.5) is d_x
    expected = numpy_ops.clip_inplace(numpy_ops.scale_inplace(x, 1.7), 0.5)
    assert_close(d_x, expected, dtype)          # NaN in the same place


# --------------------------------------------------------------------------- grid stride
@needs_cuda
def test_grid_stride_loops_cover_more_than_the_grid(monkeypatch, rng):
    """With the grid capped at one block, each thread handles several elements/rows."""
    monkeypatch.setattr(_common, "MAX_BLOCKS", 1)
    dtype = np.float32
    x, d_x = device_random(rng, (37, 13), dtype)
    b, d_b = device_random(rng, 13, dtype)
    d_out = cuda.device_array((37, 13), dtype)
    assert_close(bias.bias_add(d_x, d_b, d_out), x + b, dtype)
    t = rng.standard_normal((37, 13)).astype(dtype)
    _check_loss("mse", x, t, dtype)
    labels = rng.integers(0, 2, 300).astype(np.int64)
    _check_loss("softmax_xent", rng.standard_normal((300, 2)).astype(dtype), labels, dtype)
    v, d_v = device_random(rng, 300, dtype)
    assert optim.sum_of_squares(d_v) == pytest.approx(float(np.sum(v.astype(float) ** 2)),
                                                      rel=2e-5)
    g, d_g = device_random(rng, 300, dtype)
    assert_close(optim.sgd_update(d_v, d_g, 0.1, 0.0), v - dtype(0.1) * g, dtype)


# --------------------------------------------------------------------------- PTX coverage
def _numba_type(value):
    if isinstance(value, (bool, np.generic)):
        return numba.typeof(value)
    assert value.flags["C_CONTIGUOUS"]
    return numba.types.Array(numba.from_dtype(value.dtype), value.ndim, "C")


def _launcher_inputs(name, dtype, rng):
    """Host arguments of a launcher; the losses and sum_of_squares get more than one
    block of work so that their final reduction is launched too."""
    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)
    return {
        "matmul": lambda: (r(3, 2), r(2, 4), r(3, 4)),
        "matmul_nt": lambda: (r(3, 2), r(4, 2), r(3, 4)),
        "matmul_tn": lambda: (r(2, 3), r(2, 4), r(3, 4)),
        "bias_add": lambda: (r(3, 4), r(4), r(3, 4)),
        "bias_grad": lambda: (r(3, 4), r(4)),
        "softmax_xent": lambda: (r(200, 2), np.zeros(200, np.int64), r(200, 2)),
        "softmax_xent_soft": lambda: (r(200, 2), r(200, 2), r(200, 2)),
        "bce_logits": lambda: (r(200, 2), r(200, 2), r(200, 2)),
        "mse": lambda: (r(200, 2), r(200, 2), r(200, 2)),
        "softmax_xent_weighted": lambda: (r(200, 2), np.zeros(200, np.int64), r(200), r(200, 2)),
        "softmax_xent_soft_weighted": lambda: (r(200, 2), r(200, 2), r(200), r(200, 2)),
        "bce_logits_weighted": lambda: (r(200, 2), r(200, 2), r(2), r(200), r(200, 2)),
        "mse_weighted": lambda: (r(200, 2), r(200, 2), r(200), r(200, 2)),
        "sgd_update": lambda: (r(5), r(5), 0.1, 0.0),
        "sgd_momentum_update": lambda: (r(5), r(5), r(5), 0.1, 0.9, 0.0, True),
        "adam_update": lambda: (r(5), r(5), r(5), r(5), r(5), 0.1, 0.9, 0.999, 1e-8, 0.0, 1.0,
                                0.5),
        "rmsprop_update": lambda: (r(5), r(5), r(5), r(5), r(5), 0.01, 0.99, 1e-8, 0.0, 0.9),
        "sum_of_squares": lambda: (r(300),),
        "scale_inplace": lambda: (r(5), 2.0),
        "clip_inplace": lambda: (r(5), 1.0),
    }[name]()


@needs_cuda
def test_ptx_signatures_name_every_launched_kernel(monkeypatch, rng):
    """Every kernel a public launcher starts, with the argument types it passes, is an
    entry of some module's PTX_SIGNATURES (so tests/cuda/test_ptx.py compiles exactly
    what runs), and every entry is launched by some launcher (no stale entries).  The
    launches are recorded, not run."""
    listed = {}
    for module in LAUNCHERS:
        for name, fn, sig in module.PTX_SIGNATURES:
            args, _ = sigutils.normalize_signature(sig)
            key = (fn, tuple(args))
            assert key not in listed, f"{module.__name__}: {name} {sig} listed twice"
            listed[key] = f"{module.__name__}.{name}"

    launched = []
    dispatcher_type = type(optim._sgd_kernel)

    def record(kernel, config):
        return lambda *args: launched.append(
            (kernel.py_func, tuple(_numba_type(a) for a in args)))

    monkeypatch.setattr(dispatcher_type, "__getitem__", record)
    for module, names in LAUNCHERS.items():
        for name in names:
            for dtype in (np.float32, np.float64):
                start = len(launched)
                args = [_to_device(a) if isinstance(a, np.ndarray) else a
                        for a in _launcher_inputs(name, dtype, rng)]
                getattr(module, name)(*args)
                assert len(launched) > start, f"{name} launched nothing"
                for fn, types in launched[start:]:
                    assert (fn, types) in listed, (
                        f"{module.__name__}.{name} launches {fn.__name__}{types}, "
                        "which no PTX_SIGNATURES entry lists")
    stale = sorted(f"{listed[key]}{key[1]}" for key in set(listed) - set(launched))
    assert not stale, f"PTX_SIGNATURES entries no launcher uses: {stale}"
