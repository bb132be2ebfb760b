"""Losses on probabilities and the model's last layer (issue 12): a final Sigmoid/Softmax
with the Keras loss names trains as in Keras, and pairs that disagree are warned about."""
import warnings

import numpy as np
import pytest

import fastnn as fnn

from conftest import numerical_gradient


def separable(n=569, d=30, seed=0):
    """Breast-cancer-like data: 30 features, two linearly separable classes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x @ rng.normal(size=d) > 0).astype(np.float32)


def keras_habit(seed=0, k=1, head=fnn.Sigmoid, **kw):
    return fnn.Sequential(fnn.Linear(30, 16), fnn.ReLU(), fnn.Linear(16, k), head(), seed=seed,
                          **kw)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=UserWarning, module="fastnn")
        yield


def test_the_keras_habit_trains(no_warnings):
    x, y = separable()
    model = keras_habit()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    assert isinstance(model.loss, fnn.BCELoss)
    history = model.fit(x, y, epochs=30, batch_size=32, seed=0, verbose=0)
    assert history.history["accuracy"][-1] > 0.95
    proba = model.predict_proba(x)
    np.testing.assert_array_equal(proba, model(x))          # the outputs themselves
    labels = model.predict(x)
    np.testing.assert_array_equal(labels, (proba[:, 0] >= 0.5).astype(np.int64))
    assert set(np.unique(labels)) == {0, 1} and (labels == y).mean() > 0.95
    result = model.evaluate(x, y)
    assert result["accuracy"] > 0.95
    # the reported loss is BCE of the probabilities (unclipped: none saturates here)
    p = model(x)[:, 0].astype(np.float64)
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    assert result["loss"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("head, keras_name, logits_loss, k", [
    (fnn.Sigmoid, "binary_crossentropy", "bce_with_logits", 2),
    (fnn.Softmax, "categorical_crossentropy", "cross_entropy", 3),
    (fnn.Softmax, "sparse_categorical_crossentropy", "cross_entropy", 3)])
def test_a_final_activation_is_fused_into_the_loss(backend, head, keras_name, logits_loss, k,
                                                   no_warnings):
    """Training a model that ends in Sigmoid/Softmax with the Keras name is training its
    logits with the fused logits loss: the same steps, to rounding."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 30))
    y = (rng.integers(0, 2, (64, k)).astype(np.float64) if head is fnn.Sigmoid
         else rng.integers(0, k, 64))
    if keras_name == "categorical_crossentropy":
        y = np.eye(k)[y]
    with fnn.use_backend(backend):
        probs = keras_habit(seed=3, k=k, head=head, dtype="float64")
        logits = fnn.Sequential(fnn.Linear(30, 16), fnn.ReLU(), fnn.Linear(16, k), seed=3,
                                dtype="float64")
        for a, b in zip(probs.parameters(), logits.parameters()):
            np.testing.assert_array_equal(a.data, b.data)      # the same start
        probs.compile(optimizer=fnn.SGD(lr=0.5), loss=keras_name, metrics=["accuracy"])
        logits.compile(optimizer=fnn.SGD(lr=0.5), loss=logits_loss, metrics=["accuracy"])
        assert probs.loss.from_logits is False and probs._loss_on_logits
        h1 = probs.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0).history
        h2 = logits.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0).history
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-12)
    np.testing.assert_allclose(h1["accuracy"], h2["accuracy"])
    for a, b in zip(probs.parameters(), logits.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=1e-14)


def test_saturated_outputs_keep_their_loss_and_gradient(no_warnings):
    """Logits of +-40 make the float64 sigmoid exactly 0/1: the fused path still sees the
    true loss (40 for a wrong answer) and a gradient; the probabilities alone cannot."""
    model = fnn.Sequential(fnn.Linear(1, 1), fnn.Sigmoid(), dtype="float64")
    model.load_state_dict({"0.weight": np.array([[40.0]]), "0.bias": np.array([0.0])})
    model.compile(optimizer=fnn.SGD(lr=0.01), loss="binary_crossentropy")
    x, y = np.array([[1.0], [-1.0]]), np.array([0.0, 1.0])     # both wrong
    assert model.evaluate(x, y)["loss"] == pytest.approx(40.0, rel=1e-12)
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    assert model.layers[0].weight.data[0, 0] < 40.0 - 0.009   # gradient -1 per sample
    clipped, _ = fnn.BCELoss()(model(x), y)
    assert clipped < 17.0        # -log(1e-7) = 16.1: the clip caps a direct call


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_on_probabilities_formula_and_gradient(dtype):
    rng = np.random.default_rng(2)
    p = rng.uniform(0.02, 0.98, (7, 3)).astype(dtype)
    t = rng.uniform(0, 1, (7, 3)).astype(dtype)
    loss, grad = fnn.BCELoss()(p, t)
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    expected = -np.mean(t64 * np.log(p64) + (1 - t64) * np.log1p(-p64))
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(expected, rel=rtol)
    assert grad.dtype == dtype and grad.shape == p.shape
    np.testing.assert_allclose(grad, (p64 - t64) / (p64 * (1 - p64)) / p.size, rtol=rtol * 10)
    if dtype == np.float64:
        numeric = numerical_gradient(lambda: fnn.BCELoss()(p, t)[0], p)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    # clipped like Keras: an exact 0 or 1 gives a finite loss and no gradient there
    p[0, 0], t[0, 0] = 0.0, 1.0
    loss, grad = fnn.BCELoss()(p, t)
    assert np.isfinite(loss) and grad[0, 0] == 0
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*BCEWithLogitsLoss"):
        fnn.BCELoss()(p + 1.5, t)


@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy_on_probabilities_formula_and_gradient(soft):
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 1.0, (6, 4))
    p /= p.sum(axis=1, keepdims=True) * 1.1        # rows need not sum to 1 (Keras: rescaled)
    labels = rng.integers(0, 4, 6)
    t = rng.dirichlet(np.ones(4), 6) if soft else labels
    loss_fn = fnn.CrossEntropyLoss(from_logits=False)
    loss, grad = loss_fn(p, t)
    onehot = t if soft else np.eye(4)[labels]
    q = p / p.sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.sum(onehot * np.log(q), axis=1)), rel=1e-12)
    numeric = numerical_gradient(lambda: loss_fn(p, t)[0], p)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    assert repr(loss_fn) == "CrossEntropyLoss(from_logits=False)"
    np.testing.assert_array_equal(loss_fn.predict(p), np.argmax(p, axis=1))


def test_predict_thresholds_follow_the_output_kind(no_warnings):
    outputs = np.array([[-0.2], [0.3], [0.7]])
    np.testing.assert_array_equal(fnn.BCEWithLogitsLoss().predict(outputs), [0, 1, 1])
    np.testing.assert_array_equal(fnn.BCELoss().predict(outputs), [0, 0, 1])
    # a Keras name on a model without a final Sigmoid: logits, as the outputs can only be
    x, y = separable()
    model = fnn.Sequential(fnn.Linear(30, 1), seed=0)
    model.compile(optimizer=fnn.SGD(lr=0.1), loss="binary_crossentropy", metrics=["accuracy"])
    assert type(model.loss) is fnn.BCEWithLogitsLoss and not model._loss_on_logits
    model.fit(x, y, epochs=20, verbose=0, seed=0)
    np.testing.assert_array_equal(model.predict(x), (model(x)[:, 0] >= 0).astype(np.int64))
    assert model.evaluate(x, y)["accuracy"] > 0.9


@pytest.mark.parametrize("make, loss, match", [
    (lambda: keras_habit(), "bce_with_logits", "Sigmoid.*binary_crossentropy"),
    (lambda: keras_habit(), fnn.BCEWithLogitsLoss(), "Sigmoid.*binary_crossentropy"),
    (lambda: keras_habit(k=3, head=fnn.Softmax), "cross_entropy",
     "Softmax.*categorical_crossentropy"),
    (lambda: keras_habit(k=3, head=fnn.Sigmoid), "cross_entropy", "Sigmoid.*applies softmax"),
    (lambda: keras_habit(k=3, head=fnn.Softmax), "bce_with_logits", "Softmax.*applies sigmoid"),
    (lambda: fnn.Sequential(fnn.Linear(30, 1)), fnn.BCELoss(), r"fastnn.Sigmoid\(\)"),
    (lambda: fnn.Sequential(fnn.Linear(30, 3)), fnn.CrossEntropyLoss(from_logits=False),
     r"fastnn.Softmax\(\)")])
def test_pairs_that_disagree_are_warned_about(make, loss, match):
    with pytest.warns(UserWarning, match=match):
        make().compile(loss=loss)


@pytest.mark.parametrize("make, loss", [
    (lambda: keras_habit(), "mse"),
    (lambda: keras_habit(k=3, head=fnn.Softmax), "mse"),
    (lambda: keras_habit(), "bce"),
    (lambda: keras_habit(k=3, head=fnn.Softmax), "sparse_categorical_crossentropy"),
    (lambda: fnn.Sequential(fnn.Linear(30, 3)), "categorical_crossentropy"),
    (lambda: fnn.Sequential(fnn.Linear(30, 1)), "binary_crossentropy")])
def test_pairs_that_agree_are_quiet(make, loss, no_warnings):
    make().compile(loss=loss)


def test_a_sigmoid_with_beta_trains_on_its_probabilities(no_warnings):
    """Sigmoid(beta != 1) is not fused (its input is not the logit): the loss is computed
    from the probabilities, still correct, and predict still thresholds at 0.5."""
    x, y = separable(n=300)
    model = fnn.Sequential(fnn.Linear(30, 8), fnn.ReLU(), fnn.Linear(8, 1),
                           fnn.Sigmoid(beta=2.0), seed=0)
    model.compile(optimizer=fnn.SGD(lr=0.1), loss="binary_crossentropy", metrics=["accuracy"])
    assert model.loss.from_logits is False and not model._loss_on_logits
    model.fit(x, y, epochs=20, verbose=0, seed=0)
    result = model.evaluate(x, y)
    assert result["accuracy"] > 0.9
    np.testing.assert_array_equal(model.predict(x), (model(x)[:, 0] >= 0.5).astype(np.int64))
    assert (model.predict(x) == y).mean() == pytest.approx(result["accuracy"])


def test_save_and_load_keep_the_meaning(tmp_path, no_warnings):
    x, y = separable(n=100)
    model = keras_habit()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0, seed=0)
    model.save(tmp_path / "m.fnn")
    same = fnn.load(tmp_path / "m.fnn")
    assert isinstance(same.loss, fnn.BCELoss) and same._loss_on_logits
    np.testing.assert_array_equal(same.predict(x), model.predict(x))
    assert same.evaluate(x, y) == model.evaluate(x, y)
