"""fastnn.sklearn: FastMLPClassifier / FastMLPRegressor against scikit-learn's own estimator
checks, its MLPClassifier / MLPRegressor (the same training, step for step), and the
tools users combine them with (Pipeline, GridSearchCV, cross_val_score, pandas)."""
import io
import pickle
import subprocess
import sys
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6")

from sklearn.base import clone                                          # noqa: E402
from sklearn.datasets import load_digits, make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning                       # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor          # noqa: E402
from sklearn.pipeline import make_pipeline                              # noqa: E402
from sklearn.preprocessing import StandardScaler                        # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks     # noqa: E402

from fastnn.sklearn import FastMLPClassifier, FastMLPRegressor         # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_FLOAT32_SAMPLE_WEIGHTS = (
    "float32 (the default dtype): fitting with integer weights and fitting on repeated "
    "rows sum the same terms in different orders, which agree to float32 rounding "
    "(~1e-7 relative) but not always within the check's rtol=1e-7; the float64 "
    "instances pass this check")


def _expected_failures(estimator):
    if estimator.dtype == "float32":
        return {"check_sample_weight_equivalence_on_dense_data": _FLOAT32_SAMPLE_WEIGHTS}
    return {}


@parametrize_with_checks([FastMLPClassifier(max_iter=30), FastMLPRegressor(max_iter=30),
                          FastMLPClassifier(max_iter=30, dtype="float64"),
                          FastMLPRegressor(max_iter=30, dtype="float64")],
                         expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- scikit-learn's MLP
def _digits(n=300):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16.0, y[:n]


def _assert_same_training(ours, theirs, X, y, **fit_kw):
    """Both fitted on (X, y): the same weights, losses and iteration counts."""
    ours.fit(X, y, **fit_kw)
    theirs.fit(X, y, **fit_kw)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    for mine, other in zip(ours.coefs_ + ours.intercepts_,
                           theirs.coefs_ + theirs.intercepts_):
        assert mine.shape == other.shape
        np.testing.assert_allclose(mine, other, rtol=1e-9, atol=1e-12)
    for attr in ("n_layers_", "n_outputs_", "out_activation_"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    if theirs.best_loss_ is not None:
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-10)


_COMMON = dict(random_state=0, max_iter=4, shuffle=False, batch_size=64, alpha=0.01,
               hidden_layer_sizes=(20, 15))


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_classifier_trains_as_sklearn(solver, activation):
    """Unshuffled, in float64: scikit-learn's initial weights, loss, L2 penalty and
    Adam / Nesterov SGD updates, step for step (multiclass: softmax)."""
    X, y = _digits()
    params = dict(_COMMON, solver=solver, activation=activation)
    _assert_same_training(FastMLPClassifier(dtype="float64", **params),
                          MLPClassifier(**params), X, y)


@pytest.mark.parametrize("kind", ["binary", "multilabel", "strings"])
def test_classifier_outputs_as_sklearn(kind):
    """Two classes train one logistic output, multilabel targets one per label (their
    losses summed, as scikit-learn does); predictions and probabilities agree."""
    X, y = _digits()
    y = {"binary": y % 2, "strings": np.array(["even", "odd"])[y % 2],
         "multilabel": np.stack([y % 2, y % 3 == 0, y > 4], axis=1).astype(int)}[kind]
    ours, theirs = FastMLPClassifier(dtype="float64", **_COMMON), MLPClassifier(**_COMMON)
    _assert_same_training(ours, theirs, X, y)
    assert ours.out_activation_ == "logistic"
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9)


@pytest.mark.parametrize("n_targets", [1, 3])
@pytest.mark.parametrize("schedule", ["adam", "invscaling", "adaptive"])
def test_regressor_trains_as_sklearn(n_targets, schedule):
    """Half squared error (its gradient summed over the outputs, as scikit-learn), and
    SGD's learning-rate schedules (the velocity rescaled when the rate changes)."""
    X, y = make_regression(200, 10, n_targets=n_targets, random_state=0)
    y = y / 100
    params = dict(_COMMON, solver="sgd", learning_rate=schedule, learning_rate_init=0.01)
    if schedule == "adam":
        params = dict(_COMMON)
    if schedule == "adaptive":       # stalls at once, so the rate drops every 2 epochs
        params.update(max_iter=12, tol=10.0, n_iter_no_change=1)
    _assert_same_training(FastMLPRegressor(dtype="float64", **params),
                          MLPRegressor(**params), X, y)
    assert FastMLPRegressor(**params).fit(X, y).predict(X).shape == y.shape


def test_sample_weight_as_sklearn_in_one_batch():
    """With one batch the weighted loss is scikit-learn's weighted mean exactly."""
    X, y = _digits()
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    params = dict(_COMMON, batch_size=len(y))
    _assert_same_training(FastMLPClassifier(dtype="float64", **params),
                          MLPClassifier(**params), X, y, sample_weight=w)
    Xr, yr = make_regression(200, 10, random_state=0)
    _assert_same_training(FastMLPRegressor(dtype="float64", **params),
                          MLPRegressor(**params), Xr, yr / 100, sample_weight=w[:200])


def test_early_stopping_as_sklearn():
    """The same validation split, scores, stopping epoch and restored best weights."""
    X, y = _digits()
    params = dict(_COMMON, max_iter=40, early_stopping=True, n_iter_no_change=3)
    ours, theirs = FastMLPClassifier(dtype="float64", **params), MLPClassifier(**params)
    _assert_same_training(ours, theirs, X, y)
    assert ours.n_iter_ < 40                          # stopped by the rule
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
    assert ours.best_validation_score_ == max(ours.validation_scores_)
    assert ours.best_loss_ is None


def test_digits_accuracy_matches_sklearn():
    """Default float32, shuffled: the accuracy of scikit-learn's MLP within noise."""
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25,
                                                        random_state=0, stratify=y)
    params = dict(hidden_layer_sizes=(100,), max_iter=100, random_state=0)
    ours = FastMLPClassifier(**params).fit(X_train, y_train).score(X_test, y_test)
    theirs = MLPClassifier(**params).fit(X_train, y_train).score(X_test, y_test)
    assert ours >= 0.95 and abs(ours - theirs) <= 0.02, (ours, theirs)


# --------------------------------------------------------------------------- the API
def test_fitted_attributes_and_shapes():
    X, y = _digits()
    clf = FastMLPClassifier(hidden_layer_sizes=(32, 16), max_iter=3, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(64, 32), (32, 16), (16, 10)]
    assert [b.shape for b in clf.intercepts_] == [(32,), (16,), (10,)]
    assert all(c.dtype == np.float32 for c in clf.coefs_ + clf.intercepts_)
    assert (clf.n_layers_, clf.n_outputs_, clf.n_features_in_) == (4, 10, 64)
    assert clf.out_activation_ == "softmax" and clf.n_iter_ == 3 and clf.t_ == 3 * len(y)
    assert len(clf.loss_curve_) == 3 and clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    # coefs_ are the network's arrays: what is written into them is what predicts
    clf.coefs_[-1][:] = 0.0
    clf.intercepts_[-1][:] = np.arange(10)
    assert (clf.predict(X) == 9).all()
    clf.coefs_ = [np.zeros_like(c) for c in clf.coefs_]
    assert not clf.coefs_[0].any()
    with pytest.raises(ValueError, match="shapes"):
        clf.coefs_ = [np.zeros((3, 3))]


def test_predict_proba_rows_sum_to_one():
    X, y = _digits()
    for labels, n_columns in ((y, 10), (y % 2, 2)):
        clf = FastMLPClassifier(max_iter=5, random_state=0).fit(X, labels)
        proba = clf.predict_proba(X)
        assert proba.shape == (len(X), n_columns) and (proba >= 0).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
        np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))


@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog", "bird"]), np.array([3, 7]), np.array([True, False]),
    np.array([-1.0, 2.0, 10.0])])
def test_any_label_type(labels):
    X, y = make_classification(120, 6, n_informative=4, n_classes=len(labels),
                               n_clusters_per_class=1, class_sep=3.0, random_state=0)
    y = labels[y]
    clf = FastMLPClassifier(max_iter=60, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    assert clf.predict(X).dtype == y.dtype
    assert clf.score(X, y) > 0.9
    assert clf.predict_proba(X).shape == (len(X), len(labels))


def test_pandas_input():
    pd = pytest.importorskip("pandas")
    X, y = make_classification(150, 5, n_informative=3, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    labels = pd.Series(np.where(y == 1, "yes", "no"), name="target")
    clf = FastMLPClassifier(max_iter=50, learning_rate_init=0.01,
                            random_state=0).fit(frame, labels)
    np.testing.assert_array_equal(clf.feature_names_in_, frame.columns)
    assert clf.score(frame, labels) > 0.85
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X)                       # fitted with names, given none
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame[list(reversed(frame.columns))])
    reg = FastMLPRegressor(max_iter=50, random_state=0).fit(
        frame, pd.Series(X @ np.arange(5.0)))
    assert reg.predict(frame).shape == (150,)
    assert "feature_names_in_" in vars(reg)


def test_pipeline_grid_search_cross_val_score():
    X, y = make_classification(200, 8, n_informative=5, random_state=0)
    pipe = make_pipeline(StandardScaler(), FastMLPClassifier(
        max_iter=50, learning_rate_init=0.01, random_state=0))
    assert pipe.fit(X, y).score(X, y) > 0.9
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
    search = GridSearchCV(pipe, {"fastmlpclassifier__hidden_layer_sizes": [(8,), (32,)],
                                 "fastmlpclassifier__alpha": [1e-4, 1e-2]}, cv=3)
    search.fit(X, y)
    assert set(search.best_params_) == {"fastmlpclassifier__hidden_layer_sizes",
                                        "fastmlpclassifier__alpha"}
    assert search.best_estimator_.score(X, y) > 0.9
    Xr, yr = make_regression(200, 5, noise=1.0, random_state=0)
    r2 = cross_val_score(make_pipeline(StandardScaler(), FastMLPRegressor(
        hidden_layer_sizes=(32,), learning_rate_init=0.01, max_iter=200, random_state=0)),
        Xr, yr / yr.std(), cv=3)
    assert r2.mean() > 0.9


def test_partial_fit():
    X, y = _digits(600)
    clf = FastMLPClassifier(learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X[:50], y[:50])
    losses = []
    for epoch in range(8):
        for start in range(0, 600, 150):
            clf.partial_fit(X[start:start + 150], y[start:start + 150],
                            classes=np.arange(10) if epoch == start == 0 else None)
            losses.append(clf.loss_)
    assert clf.n_iter_ == 1 and clf.t_ == 8 * 600 and len(clf.loss_curve_) == 32
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    assert clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="not the same"):
        clf.partial_fit(X[:10], y[:10], classes=np.arange(5))
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X[:10], np.full(10, 42))
    with pytest.raises(ValueError, match="early_stopping"):
        FastMLPClassifier(early_stopping=True).partial_fit(X, y, classes=np.arange(10))
    reg = FastMLPRegressor(random_state=0, learning_rate_init=0.01)
    Xr, yr = make_regression(300, 5, random_state=0)
    for _ in range(30):
        reg.partial_fit(Xr, yr / yr.std())
    assert reg.score(Xr, yr / yr.std()) > 0.9


def test_partial_fit_continues_the_optimizer():
    """Two partial_fit calls on halves of a full batch equal scikit-learn's two calls
    (Adam's moments and step count carry over)."""
    X, y = _digits()
    params = dict(_COMMON, max_iter=1)
    ours, theirs = FastMLPClassifier(dtype="float64", **params), MLPClassifier(**params)
    for part in (slice(0, 150), slice(150, 300)):
        ours.partial_fit(X[part], y[part], classes=np.arange(10))
        theirs.partial_fit(X[part], y[part], classes=np.arange(10))
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    np.testing.assert_allclose(ours.coefs_[0], theirs.coefs_[0], rtol=1e-9, atol=1e-12)


def test_warm_start():
    X, y = _digits()
    clf = FastMLPClassifier(max_iter=5, warm_start=True, random_state=0).fit(X, y)
    first = [c.copy() for c in clf.coefs_]
    clf.fit(X, y)
    assert len(clf.loss_curve_) == 10 and clf.n_iter_ == 5 and clf.t_ == 10 * len(y)
    assert clf.loss_curve_[5] < clf.loss_curve_[0]          # went on, not restarted
    assert not np.array_equal(clf.coefs_[0], first[0])
    with pytest.raises(ValueError, match="warm_start"):
        clf.fit(X, y % 2)
    cold = FastMLPClassifier(max_iter=5, random_state=0).fit(X, y)
    cold.fit(X, y)
    assert len(cold.loss_curve_) == 5 and np.array_equal(cold.coefs_[0], first[0])
    # as scikit-learn: the second fit starts from the weights with a new optimiser
    params = dict(_COMMON, warm_start=True)
    ours, theirs = FastMLPClassifier(dtype="float64", **params), MLPClassifier(**params)
    ours.fit(X, y)
    theirs.fit(X, y)
    _assert_same_training(ours, theirs, X, y)
    assert len(ours.loss_curve_) == 2 * _COMMON["max_iter"]


def test_pickle_and_clone():
    X, y = _digits()
    clf = FastMLPClassifier(max_iter=3, random_state=0, shuffle=False).fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    assert copy.loss_curve_ == clf.loss_curve_ and copy.coefs_[0] is not clf.coefs_[0]
    copy.partial_fit(X, y)                       # the optimiser state came along
    clf.partial_fit(X, y)
    np.testing.assert_array_equal(copy.coefs_[0], clf.coefs_[0])
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params() and not hasattr(fresh, "coefs_")
    reg = FastMLPRegressor(max_iter=3, random_state=0).fit(X, y.astype(float))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(X), reg.predict(X))


def test_stopping_rule_and_convergence_warning():
    X, y = _digits()
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\)"):
        FastMLPClassifier(max_iter=3, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = FastMLPClassifier(max_iter=200, tol=1.0, n_iter_no_change=2,
                                random_state=0).fit(X, y)
    # epoch 1 sets best_loss_; epochs 2, 3, 4 are not better by tol=1: the count
    # reaches 3 > n_iter_no_change after epoch 4
    assert clf.n_iter_ == 4 and clf.best_loss_ == min(clf.loss_curve_)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        FastMLPClassifier(max_iter=200, tol=1.0, n_iter_no_change=2, verbose=True,
                          random_state=0).fit(X, y)
    assert "Iteration 1, loss = " in buffer.getvalue()
    assert "Training loss did not improve more than tol=1.000000" in buffer.getvalue()


@pytest.mark.parametrize("params, error, match", [
    ({"solver": "lbfgs"}, ValueError, "lbfgs"),
    ({"activation": "softmax"}, ValueError, "activation"),
    ({"hidden_layer_sizes": (10, 0)}, ValueError, "hidden_layer_sizes"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"dtype": "float16"}, TypeError, "dtype"),
    ({"backend": "cuda"}, ValueError, "backend"),
    ({"learning_rate_init": 0.0}, ValueError, "learning_rate_init"),
])
def test_invalid_parameters(params, error, match):
    X, y = _digits(50)
    with pytest.raises(error, match=match):
        FastMLPClassifier(**params).fit(X, y)


def test_parameters_in_sklearns_order():
    """scikit-learn's parameters, names, order and defaults (MLPRegressor takes
    ``loss`` first), but L-BFGS's max_fun; then dtype and backend.  "poisson" is not
    available."""
    import inspect
    for ours, theirs in ((FastMLPClassifier, MLPClassifier), (FastMLPRegressor, MLPRegressor)):
        mine = inspect.signature(ours).parameters
        other = {k: p for k, p in inspect.signature(theirs).parameters.items()
                 if k != "max_fun"}
        if ours is FastMLPRegressor and "loss" not in other:     # scikit-learn < 1.7
            other = {"loss": mine["loss"], **other}
        assert list(mine) == [*other, "dtype", "backend"]
        assert all(mine[k].default == p.default and mine[k].kind == p.kind
                   for k, p in other.items())
    X, y = make_regression(50, 4, random_state=0)
    with pytest.raises(ValueError, match="poisson"):
        FastMLPRegressor(loss="poisson").fit(X, y)


def test_numpy_backend_gives_the_same_network():
    X, y = _digits()
    params = dict(_COMMON, dtype="float64")
    numba = FastMLPClassifier(**params).fit(X, y)
    numpy = FastMLPClassifier(backend="numpy", **params).fit(X, y)
    np.testing.assert_allclose(numpy.coefs_[0], numba.coefs_[0], rtol=1e-9, atol=1e-12)


def test_optional_dependency():
    """``import fastnn`` does not import scikit-learn; without it, fastnn.sklearn says
    how to install it."""
    code = ("import sys, fastnn; assert 'sklearn' not in sys.modules\n"
            "sys.modules['sklearn'] = None\n"
            "try:\n    import fastnn.sklearn\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install fastnn[sklearn]" in out
