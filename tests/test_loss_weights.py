"""Class and sample weights (issue 12): CrossEntropyLoss(weight=), BCEWithLogitsLoss(
pos_weight=) against PyTorch and the formulas, fit(class_weight=, sample_weight=)."""
import numpy as np
import pytest

import fastnn as fnn

from conftest import numerical_gradient

BACKENDS = ["numba", "numpy"]


def torch_loss(fn, pred, *args, **kw):
    torch = pytest.importorskip("torch")
    z = torch.tensor(pred, requires_grad=True)
    loss = fn(torch, z, *args, **kw)
    loss.backward()
    return loss.item(), z.grad.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy_class_weights_match_pytorch(backend, dtype, soft):
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(13, 5)) * 3).astype(dtype)
    labels = rng.integers(0, 5, 13)
    y = rng.dirichlet(np.ones(5), 13).astype(dtype) if soft else labels
    weight = rng.uniform(0.2, 3.0, 5)
    with fnn.use_backend(backend):
        loss, grad = fnn.CrossEntropyLoss(weight=weight)(z, y)
    torch = pytest.importorskip("torch")
    expected, expected_grad = torch_loss(
        lambda t, zz: t.nn.functional.cross_entropy(zz, t.tensor(y), weight=t.tensor(
            weight.astype(dtype))), z)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(expected, rel=rtol)
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol * 10, atol=rtol * 1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_pos_weight_matches_pytorch(backend, dtype):
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(11, 3)) * 4).astype(dtype)
    z[0] = [60, -60, 0]                               # stable for any logit
    t = rng.uniform(0, 1, (11, 3)).astype(dtype)
    pos_weight = np.array([0.5, 2.0, 7.0])
    with fnn.use_backend(backend):
        loss, grad = fnn.BCEWithLogitsLoss(pos_weight=pos_weight)(z, t)
    expected, expected_grad = torch_loss(
        lambda tt, zz: tt.nn.functional.binary_cross_entropy_with_logits(
            zz, tt.tensor(t), pos_weight=tt.tensor(pos_weight.astype(dtype))), z)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(expected, rel=rtol)
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol * 10, atol=rtol * 1e-2)
    # one number weighs every output
    one = fnn.BCEWithLogitsLoss(pos_weight=3.0)(z, t)[0]
    assert one == pytest.approx(fnn.BCEWithLogitsLoss(pos_weight=[3.0] * 3)(z, t)[0], rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make, targets", [
    (lambda: fnn.CrossEntropyLoss(), "labels"),
    (lambda: fnn.CrossEntropyLoss(weight=[1.0, 2.0, 0.5, 3.0]), "labels"),
    (lambda: fnn.CrossEntropyLoss(weight=[1.0, 2.0, 0.5, 3.0]), "soft"),
    (lambda: fnn.BCEWithLogitsLoss(), "binary"),
    (lambda: fnn.BCEWithLogitsLoss(pos_weight=[1.0, 2.0, 0.5, 3.0]), "binary"),
    (lambda: fnn.MSELoss(), "real"),
    (lambda: fnn.BCELoss(), "binary")])
def test_sample_weights_formula_and_gradient(backend, make, targets):
    """sum_i s_i loss_i / n (divided by sum w[y_i] instead of n for class-weighted
    cross-entropy on labels), and its gradient by central differences."""
    rng = np.random.default_rng(2)
    n, k = 7, 4
    z = rng.normal(size=(n, k))
    if isinstance(make(), fnn.BCELoss):
        z = rng.uniform(0.05, 0.95, (n, k))
    y = {"labels": rng.integers(0, k, n), "soft": rng.dirichlet(np.ones(k), n),
         "binary": rng.uniform(0, 1, (n, k)), "real": rng.normal(size=(n, k))}[targets]
    s = rng.uniform(0, 2, n)
    loss_fn = make()
    with fnn.use_backend(backend):
        loss, grad = loss_fn(z, y, sample_weight=s)
        per_sample = np.array([loss_fn(z[i:i + 1], y[i:i + 1])[0] for i in range(n)])
        numeric = numerical_gradient(lambda: loss_fn(z, y, sample_weight=s)[0], z)
        unweighted = loss_fn(z, y)
        ones = loss_fn(z, y, sample_weight=np.ones(n))
    weight = getattr(loss_fn, "weight", None)
    denominator = weight[y].sum() if weight is not None and targets == "labels" else n
    if weight is not None and targets == "labels":
        per_sample = per_sample * weight[y]            # one-row losses are means over w
    assert loss == pytest.approx((s * per_sample).sum() / denominator, rel=1e-12)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    assert ones[0] == pytest.approx(unweighted[0], rel=1e-12)
    np.testing.assert_allclose(ones[1], unweighted[1], rtol=1e-12, atol=1e-15)


def test_weight_arguments_are_checked():
    with pytest.raises(ValueError, match="non-negative"):
        fnn.CrossEntropyLoss(weight=[1.0, -1.0])
    with pytest.raises(ValueError, match="2 class weights for 3 outputs"):
        fnn.CrossEntropyLoss(weight=[1.0, 2.0])(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="sample_weight has 3 values but there are 2"):
        fnn.MSELoss()(np.zeros((2, 1)), np.zeros(2), sample_weight=[1, 2, 3])
    assert repr(fnn.CrossEntropyLoss(weight=[1, 2])) == "CrossEntropyLoss(weight=[1.0, 2.0])"


def imbalanced(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 1.2).astype(np.int64)     # ~13% positive
    return x, y


@pytest.mark.parametrize("loss, k", [("cross_entropy", 2), ("binary_crossentropy", 1)])
def test_fit_class_weight_is_sample_weight_by_class(loss, k):
    x, y = imbalanced()
    table = {0: 0.5, 1: 4.0}
    runs = []
    for kw in ({"class_weight": table}, {"sample_weight": np.where(y == 1, 4.0, 0.5)},
               {"sample_weight": np.full(len(y), 2.0), "class_weight": {0: 0.25, 1: 2.0}}):
        model = fnn.Sequential(fnn.Linear(6, 8), fnn.ReLU(), fnn.Linear(8, k), seed=0,
                               dtype="float64")
        model.compile(optimizer=fnn.SGD(lr=0.1), loss=loss, metrics=["accuracy"])
        runs.append(model.fit(x, y, epochs=3, batch_size=32, seed=0, verbose=0, **kw))
        runs[-1] = (runs[-1].history["loss"], [p.data.copy() for p in model.parameters()])
    for other in runs[1:]:
        np.testing.assert_allclose(other[0], runs[0][0], rtol=1e-12)
        for a, b in zip(other[1], runs[0][1]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_class_weight_raises_recall_of_the_rare_class():
    x, y = imbalanced()
    recalls = []
    for class_weight in (None, {0: 1.0, 1: 6.0}):
        model = fnn.Sequential(fnn.Linear(6, 1), fnn.Sigmoid(), seed=0)
        model.compile(optimizer=fnn.SGD(lr=0.2), loss="binary_crossentropy")
        model.fit(x, y, epochs=10, seed=0, verbose=0, class_weight=class_weight)
        recalls.append(model.predict(x)[y == 1].mean())
    assert recalls[1] > recalls[0] + 0.1


def test_fit_weights_are_checked_and_split():
    x, y = imbalanced(n=100)
    model = fnn.Sequential(fnn.Linear(6, 2), seed=0)
    model.compile(loss="cross_entropy")
    with pytest.raises(ValueError, match="class_weight key 2"):
        model.fit(x, y, class_weight={2: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="sample_weight has 99 values but there are 100"):
        model.fit(x, y, sample_weight=np.ones(99), verbose=0)
    model.fit(x, y, sample_weight=np.ones(100), validation_split=0.2, verbose=0)
    regression = fnn.Sequential(fnn.Linear(6, 1), seed=0).compile(loss="mse")
    with pytest.raises(ValueError, match="class_weight needs one class label per sample"):
        regression.fit(x, y.astype(np.float32), class_weight={0: 1.0}, verbose=0)


def test_save_and_load_keep_the_weights(tmp_path):
    x, y = imbalanced(n=64)
    model = fnn.Sequential(fnn.Linear(6, 2), seed=0)
    model.compile(loss=fnn.CrossEntropyLoss(weight=[1.0, 5.0]))
    model.save(tmp_path / "w.fnn")
    same = fnn.load(tmp_path / "w.fnn")
    np.testing.assert_array_equal(same.loss.weight, [1.0, 5.0])
    assert same.evaluate(x, y) == model.evaluate(x, y)
