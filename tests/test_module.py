"""The module protocol: training/evaluation mode, buffers, children, inputs of any rank
(batch, ..., features), shape inference and summaries."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn.module import Module, Parameter
from gradcheck import central_differences


class Probe(Module):
    """Records the mode of every forward; a float and an integer buffer."""

    def __init__(self, width):
        super().__init__()
        self.n_features = width
        self.modes = []
        self.register_buffer("running", np.arange(width, dtype=np.float32))
        self.register_buffer("count", np.zeros(1, np.int64))

    def _forward(self, x, backend):
        self.modes.append(self.training)
        self.count[0] += 1
        return x

    def _backward(self, grad, backend, need_input_grad):
        return grad


class Block(Module):
    """A composite layer: children assigned as attributes, its own parameter."""

    def __init__(self):
        super().__init__()
        self.inner = fnn.Linear(4, 4, seed=0)
        self.act = fnn.Tanh()
        self.scale = Parameter(np.ones(4, np.float32))


def test_modes_are_set_recursively_and_fit_leaves_evaluation_mode():
    probe = Probe(3)
    model = fnn.Sequential(fnn.Linear(3, 3), probe, fnn.Linear(3, 2), seed=0)
    assert model.training and probe.training          # PyTorch's default
    assert model.eval() is model and not probe.training
    model.train()
    assert probe.training
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = (x[:, 0] > 0).astype(int)
    model.compile(optimizer=fnn.SGD(lr=0.1), loss="cross_entropy", metrics=["accuracy"])
    probe.modes.clear()
    model.fit(x, y, epochs=2, batch_size=10, validation_data=(x, y), verbose=0)
    # per epoch: two training batches, then the validation pass in evaluation mode
    assert probe.modes == [True, True, False, True, True, False]
    assert not model.training and not probe.training   # ready for predict
    probe.modes.clear()
    model.predict(x)
    model.train()
    model.evaluate(x, y)
    model(x)
    assert probe.modes == [False, True, True]          # they follow the flag


def test_buffers_move_convert_save_and_load(tmp_path):
    probe = Probe(3)
    model = fnn.Sequential(fnn.Linear(3, 3), probe, seed=0)
    assert [name for name, _ in model.named_buffers()] == ["1.running", "1.count"]
    model.astype("float64")
    assert probe.running.dtype == np.float64 and probe.count.dtype == np.int64
    state = model.state_dict()
    assert set(state) == {"0.weight", "0.bias", "1.running", "1.count"}
    state["1.running"] = np.array([5.0, 6.0, 7.0])
    model.load_state_dict(state)
    np.testing.assert_array_equal(probe.running, [5.0, 6.0, 7.0])
    with pytest.raises(ValueError, match="shape"):
        model.load_state_dict({**state, "1.running": np.zeros(4)})
    np.testing.assert_array_equal(probe.running, [5.0, 6.0, 7.0])   # untouched


def test_children_are_found_recursively():
    block = Block()
    assert [n for n, _ in block.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    model = fnn.Sequential(block, fnn.Linear(4, 2))
    assert [n for n, _ in model.named_parameters()] == [
        "0.scale", "0.inner.weight", "0.inner.bias", "1.weight", "1.bias"]
    assert [n for n, _ in model.named_modules()] == ["", "0", "0.inner", "0.act", "1"]
    assert model.count_parameters() == 4 + 16 + 4 + 8 + 2
    model.eval()
    assert not block.act.training
    block.inner = fnn.Linear(4, 4, bias=False, seed=1)       # reassigning replaces it
    assert [n for n, _ in block.named_parameters()] == ["scale", "inner.weight"]
    with pytest.raises(TypeError, match="registered as a parameter"):
        block.scale = np.ones(4)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_inputs_of_any_rank_act_on_the_last_axis(backend, rng):
    model = fnn.Sequential(fnn.Linear(5, 7, init="he_normal"), fnn.ReLU(),
                           fnn.Linear(7, 3), fnn.Tanh(), dtype="float64", seed=2).to(backend)
    x3 = rng.normal(size=(4, 6, 5))
    y3 = model(x3)
    assert y3.shape == (4, 6, 3) and model.output_shape(x3.shape) == (4, 6, 3)
    np.testing.assert_allclose(y3.reshape(-1, 3), model(x3.reshape(-1, 5)), rtol=1e-12)
    # the backward of a 3-D batch equals the backward of its rows
    g = rng.normal(size=y3.shape)
    model(x3)
    model.zero_grad()
    dx3 = model.backward(g, input_grad=True)
    grads3 = [p.grad.copy() for p in model.parameters()]
    model(x3.reshape(-1, 5))
    model.zero_grad()
    dx2 = model.backward(g.reshape(-1, 3), input_grad=True)
    assert dx3.shape == x3.shape
    np.testing.assert_allclose(dx3.reshape(-1, 5), dx2, rtol=1e-12)
    for a, b in zip(grads3, [p.grad for p in model.parameters()]):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_a_3d_backward_matches_finite_differences(rng):
    model = fnn.Sequential(fnn.Linear(3, 4), fnn.Sigmoid(beta=1.5), fnn.Linear(4, 2),
                           dtype="float64", seed=3)
    x = rng.normal(size=(2, 5, 3))
    w = rng.normal(size=(2, 5, 2))
    model(x)
    model.zero_grad()
    model.backward(w)
    weight = model[0].weight
    numeric = central_differences(lambda: np.sum(w * model(x)), weight.data)
    analytic = weight.grad
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_shapes_are_checked_on_the_last_axis():
    model = fnn.Sequential(fnn.Linear(3, 2))
    with pytest.raises(ValueError, match="4 features per sample, expected 3"):
        model(np.ones((2, 5, 4)))
    with pytest.raises(ValueError, match="at least 2-D"):
        model(np.ones(3))
    with pytest.raises(ValueError, match="empty axis"):
        model(np.ones((2, 0, 3)))


def test_fit_refuses_outputs_that_are_not_2d_with_a_clear_message():
    model = fnn.Sequential(fnn.Linear(3, 2))
    model.compile(loss="cross_entropy")
    with pytest.raises(ValueError, match=r"gives \(4, 5, 2\)"):
        model.fit(np.ones((4, 5, 3)), np.zeros(4, int), verbose=0)


def test_summary_lists_layers_shapes_and_parameters():
    model = fnn.Sequential(fnn.Linear(784, 256), fnn.ReLU(), fnn.Linear(256, 10))
    text = model.summary(file=open("/dev/null", "w"))
    assert "(None, 256)" in text and "(None, 10)" in text
    assert "200,960" in text and "2,570" in text and "total parameters: 203,530" in text
    assert "(8, 20, 10)" in model.summary(input_shape=(8, 20, 784), file=open("/dev/null", "w"))


def test_fusion_uses_the_activation_record():
    assert fnn.LeakyReLU(0.1).fusable and not fnn.LeakyReLU(-0.1).fusable
    assert fnn.ReLU().fusable and not fnn.GELU().fusable and not fnn.Softmax().fusable
    with pytest.raises(ValueError, match="elu needs alpha >= 0"):
        fnn.ELU(alpha=-1.0)
    with pytest.raises(ValueError, match="x_min < x_max"):
        fnn.PiecewiseLinear(x_min=1.0, x_max=0.0)
