"""Linear layer, initialisers, Sequential backward against finite differences."""
import numpy as np
import pytest

import fastnn as fnn

from conftest import numerical_gradient, random

BACKENDS = ["numba", "numpy"]


def test_xavier_variance_matches_formula():
    # n_in = 3, n_out = 2: Var = 2 / (3 + 2) = 0.4, for both the normal and uniform draws.
    for init in ("xavier_normal", "glorot_uniform"):
        draws = np.concatenate([fnn.Linear(3, 2, init=init, dtype="float64", seed=s).weight.data.ravel()
                                for s in range(20000)])
        assert draws.var() == pytest.approx(0.4, rel=0.02), init


@pytest.mark.parametrize("init", ["he_normal", "kaiming_uniform"])
def test_he_variance(init):
    w = fnn.Linear(500, 400, init=init, dtype="float64", seed=1).weight.data
    assert w.var() == pytest.approx(2 / 500, rel=0.02)
    assert abs(w.mean()) < 0.003


def test_bias_initialisation():
    assert np.all(fnn.Linear(4, 3).bias.data == 0)
    assert np.all(fnn.Linear(4, 3, bias_init=0.01).bias.data == np.float32(0.01))
    assert fnn.Linear(4, 3, bias=False).bias is None
    with pytest.raises(ValueError, match="valid names"):
        fnn.Linear(4, 3, init="orthogonal")
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        fnn.Linear(0, 3)


def test_dense_is_linear():
    assert fnn.Dense is fnn.Linear


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_identity_layers_equal_one(backend, rng):
    l1 = fnn.Linear(5, 7, dtype="float64", seed=1, bias_init=0.3)
    l2 = fnn.Linear(7, 3, dtype="float64", seed=2, bias_init=-0.2)
    model = fnn.Sequential(l1, fnn.Identity(), l2, backend=backend)
    # With x @ W storage: W = W1 @ W2 (the math's W2·W1 in column-vector form), b = b1 @ W2 + b2
    single = fnn.Linear(5, 3, dtype="float64")
    single.weight.data[...] = l1.weight.data @ l2.weight.data
    single.bias.data[...] = l1.bias.data @ l2.weight.data + l2.bias.data
    x = random(rng, (9, 5), np.float64)
    np.testing.assert_allclose(model(x), single(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_backward_matches_finite_differences(backend, rng):
    layer = fnn.Linear(5, 3, dtype="float64", seed=0, bias_init=0.1)
    layer.backend = backend
    x = random(rng, (4, 5), np.float64)
    w = random(rng, (4, 3), np.float64)
    loss = lambda: float((w * layer(x)).sum())
    layer(x)
    layer.zero_grad()
    dx = layer.backward(w)
    np.testing.assert_allclose(layer.weight.grad, numerical_gradient(loss, layer.weight.data), rtol=1e-7)
    np.testing.assert_allclose(layer.bias.grad, numerical_gradient(loss, layer.bias.data), rtol=1e-7)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-7)


ACTS = ["sigmoid", "tanh", "elu", "softplus", "gelu", "leaky_relu", "gaussian"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_name", ["cross_entropy", "bce_with_logits", "mse"])
def test_sequential_backward_matches_finite_differences(backend, loss_name, rng):
    layers = [fnn.Linear(6, 5, dtype="float64"), fnn.Activation(ACTS[rng.integers(len(ACTS))]),
              fnn.Linear(5, 7, dtype="float64"), fnn.Tanh(), fnn.Linear(7, 3, dtype="float64")]
    model = fnn.Sequential(*layers, backend=backend, seed=3)
    x = random(rng, (4, 6), np.float64)
    loss_fn = fnn.LOSSES[loss_name]()
    y = {"cross_entropy": rng.integers(0, 3, 4), "bce_with_logits": rng.random((4, 3)),
         "mse": random(rng, (4, 3), np.float64)}[loss_name]
    with fnn.use_backend(backend):
        loss = lambda: loss_fn(model(x), y)[0]
        _, grad = loss_fn(model(x), y)
    model.zero_grad()
    dx = model.backward(grad, input_grad=True)
    with fnn.use_backend(backend):
        for name, p in model.named_parameters():
            np.testing.assert_allclose(p.grad, numerical_gradient(loss, p.data), rtol=1e-6,
                                       atol=1e-8, err_msg=name)
        np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)


def test_gradients_accumulate_until_zero_grad(rng):
    model = fnn.Sequential(fnn.Linear(4, 3, dtype="float64"), fnn.ReLU(), fnn.Linear(3, 2),
                           seed=0)
    x = random(rng, (6, 4), np.float64)
    g = random(rng, (6, 2), np.float64)
    model(x)
    model.zero_grad()
    model.backward(g)
    first = [p.grad.copy() for p in model.parameters()]
    model.backward(g)
    for p, f in zip(model.parameters(), first):
        np.testing.assert_allclose(p.grad, 2 * f)
    model.zero_grad()
    for p in model.parameters():
        assert not p.grad.any()
    model.backward(g)
    for p, f in zip(model.parameters(), first):
        np.testing.assert_allclose(p.grad, f)


def test_sequential_checks_structure():
    with pytest.raises(ValueError, match="outputs 5 features but layer 2 expects 6"):
        fnn.Sequential(fnn.Linear(3, 5), fnn.ReLU(), fnn.Linear(6, 2))
    with pytest.raises(TypeError, match="not a fastnn layer"):
        fnn.Sequential(fnn.Linear(3, 5), "relu")
    model = fnn.Sequential(fnn.Linear(3, 5), fnn.ReLU(), fnn.Linear(5, 2))
    with pytest.raises(RuntimeError, match="before a forward pass"):
        model.backward(np.ones((1, 2)))
    with pytest.raises(ValueError, match="4 features per sample, expected 3"):
        model(np.ones((2, 4)))
    model(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"shape of the last output \(2, 2\)"):
        model.backward(np.ones((3, 2)))


def test_model_dtype_and_input_conversion():
    model = fnn.Sequential(fnn.Linear(3, 4), fnn.ReLU(), fnn.Linear(4, 2), dtype="float64")
    assert all(p.dtype == np.float64 for p in model.parameters())
    out = model(np.arange(6, dtype=np.int64).reshape(2, 3))       # ints converted
    assert out.dtype == np.float64
    f32 = fnn.Sequential(fnn.Linear(3, 2))
    assert f32(np.ones((2, 3))).dtype == np.float32                # float64 input converted
    xf = np.asfortranarray(np.random.default_rng(0).normal(size=(4, 3)))
    np.testing.assert_allclose(model(xf), model(np.ascontiguousarray(xf)))
    with pytest.raises(TypeError, match="real numbers"):
        model(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="empty batch"):
        model(np.ones((0, 3)))


def test_backends_agree_on_a_model(rng):
    model = fnn.Sequential(fnn.Linear(11, 13), fnn.GELU(), fnn.Linear(13, 5), fnn.Softmax(), seed=0)
    x = random(rng, (17, 11), np.float32)
    with fnn.use_backend("numpy"):
        ref = model(x)
    np.testing.assert_allclose(model(x), ref, rtol=1e-5, atol=1e-6)
