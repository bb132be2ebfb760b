"""scikit-learn estimators trained by fastnn: :class:`FastMLPClassifier` and
:class:`FastMLPRegressor`, drop-in replacements for scikit-learn's ``MLPClassifier`` and
``MLPRegressor`` with the stochastic solvers ("adam", "sgd").

They take the same constructor parameters with the same defaults, expose the same fitted
attributes (``classes_``, ``coefs_``, ``intercepts_`` in scikit-learn's (n_in, n_out)
layout, ``loss_curve_``, ``n_iter_``, ``best_loss_``, ...) and train by the same rules:
scikit-learn's initialisation (uniform in +-sqrt(6 / (fan_in + fan_out)), +-sqrt(2 / ...)
for "logistic"; biases too), its losses (softmax cross-entropy; one logistic output for two
classes, independent ones for multilabel targets; half squared error), the L2 penalty
``alpha / (2 n_batch) * sum ||W||^2`` on the weights (not the biases), its Adam (``epsilon``
added to the uncorrected ``sqrt(v)``) and SGD (velocity ``v = momentum v - lr g``) updates,
the learning-rate schedules of "sgd", and the stopping rule: stop once the training loss
(with ``early_stopping``, the validation score) has not improved by ``tol`` for more than
``n_iter_no_change`` epochs, else warn with a ``ConvergenceWarning`` after ``max_iter``.
Without shuffling, and in float64, a fit follows scikit-learn's to rounding.

The network is a :class:`fastnn.Sequential` (Linear layers and the activation) trained by
its own ``fit``; ``_SklearnRules`` (in ``fastnn/_sklearn_base.py``, with the base
estimator), a callback, applies scikit-learn's per-batch L2 penalty and Adam epsilon and
its end-of-epoch rules.

What differs: computation in float32 by default (``dtype="float64"`` for scikit-learn's
precision); no "lbfgs" solver and no sparse input (densify with ``X.toarray()``); with
``sample_weight``, each batch's loss is the weighted sum over the batch size with the
weights scaled to a mean of 1 over the whole data (scikit-learn divides each batch by its
own sum of weights; the two agree when one batch holds all samples); shuffled batches
come from fastnn's generator, so a shuffled run is not scikit-learn's sample for sample.

scikit-learn is an optional dependency: ``pip install fastnn[sklearn]``.
"""
try:
    import sklearn  # (absolute import: this module is fastnn.sklearn)
except ImportError as err:      # pragma: no cover - exercised without scikit-learn
    raise ImportError("fastnn.sklearn needs scikit-learn, an optional dependency of "
                      "fastnn: pip install fastnn[sklearn]") from err
if tuple(int(part) for part in sklearn.__version__.split(".")[:2]) < (1, 6):
    # validate_data and __sklearn_tags__ are scikit-learn 1.6's
    raise ImportError(f"fastnn.sklearn needs scikit-learn >= 1.6, found "
                      f"{sklearn.__version__}: pip install -U 'fastnn[sklearn]' "
                      "'scikit-learn>=1.6'")

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import column_or_1d, validate_data

from ._sklearn_base import _BaseFastMLP, _choice
from .validation import as_dtype

__all__ = ["FastMLPClassifier", "FastMLPRegressor"]

_PARAMETERS_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        The width of each hidden layer.
    activation : {"relu", "tanh", "logistic", "identity"}, default "relu"
        The hidden layers' activation (fused into the preceding layer's kernel).
    solver : {"adam", "sgd"}, default "adam"
        scikit-learn's Adam or SGD update; "lbfgs" raises a ValueError.
    alpha : float, default 1e-4
        L2 penalty: ``alpha / (2 n_batch) * sum ||W||^2`` added to each batch's loss
        (gradient ``alpha W / n_batch``), biases excluded.
    batch_size : int or "auto", default "auto"
        ``min(200, n_samples)`` for "auto"; clipped to the number of samples.
    learning_rate : {"constant", "invscaling", "adaptive"}, default "constant"
        "sgd" only: ``learning_rate_init / (t + 1) ** power_t`` after each epoch (t:
        samples seen), or divided by 5 instead of stopping when the loss stalls.
    learning_rate_init : float, default 0.001
    power_t : float, default 0.5
    max_iter : int, default 200
        Epochs (passes over the data) at most; a ``ConvergenceWarning`` when reached.
    shuffle : bool, default True
        A new sample order every epoch.
    random_state : int, RandomState or None
        Seeds the initial weights (drawn as scikit-learn draws them), the validation
        split and the shuffling.
    tol : float, default 1e-4
    verbose : bool, default False
        Print the loss (and validation score) after every epoch.
    warm_start : bool, default False
        ``fit`` continues from the fitted weights (with a new optimiser, as
        scikit-learn).
    momentum : float, default 0.9
    nesterovs_momentum : bool, default True
        "sgd" only.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data, stop when its score (accuracy,
        R^2) has not improved by ``tol`` for more than ``n_iter_no_change`` epochs, and
        keep the best epoch's weights.
    validation_fraction : float, default 0.1
    beta_1, beta_2, epsilon : float, default 0.9, 0.999, 1e-8
        "adam" only.
    n_iter_no_change : int, default 10
    dtype : "float32" or "float64", default "float32"
        The precision the network computes in (and of ``coefs_``); "float64" for
        scikit-learn's.
    backend : "numba" or "numpy", default "numba"
        fastnn's kernels, or its NumPy reference backend.

    Attributes
    ----------
    coefs_, intercepts_ : lists of arrays
        Weights (n_in, n_out) and biases (n_out,) of each layer: the network's own
        arrays, so writing into them changes the model.
    loss_, loss_curve_ : float, list of float
        The training loss (with the L2 term) of the last epoch, of every epoch.
    best_loss_ : float or None
        The lowest loss (None with ``early_stopping``).
    validation_scores_, best_validation_score_ : list, float, or None
        With ``early_stopping``: the score after every epoch, and the best.
    n_iter_ : int
        Epochs run by the last ``fit`` (1 after ``partial_fit``).
    t_ : int
        Training samples seen, over all calls.
    n_features_in_, feature_names_in_ : int, array of str
        As every scikit-learn estimator (names when fitted on a DataFrame).
    n_layers_, n_outputs_ : int
    out_activation_ : str
        "softmax", "logistic" (two classes, multilabel) or "identity" (regression).
"""


class FastMLPClassifier(ClassifierMixin, _BaseFastMLP):
    """Multi-layer perceptron classifier trained by fastnn, a drop-in replacement for
    scikit-learn's ``MLPClassifier`` (solvers "adam" and "sgd").

    Labels may be of any type scikit-learn accepts (strings, {3, 7}, bools, a pandas
    Series) or a label indicator matrix (multilabel); ``classes_`` holds them sorted.
    Several classes train a softmax output with cross-entropy, two classes one
    logistic output (as scikit-learn: ``coefs_[-1]`` has one column, ``predict_proba``
    two), multilabel targets one logistic output per label.
    """ + _PARAMETERS_DOC + """
    classes_ : array (n_classes,)

    Examples
    --------
    >>> from fastnn.sklearn import FastMLPClassifier
    >>> clf = FastMLPClassifier(hidden_layer_sizes=(100,), random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]), clf.score(X_test, y_test)
    """

    def _loss_name(self):
        return "cross_entropy" if self.out_activation_ == "softmax" else "bce_with_logits"

    def _loss_scale(self):
        """(factor on the training loss, factor from fastnn's loss to scikit-learn's):
        scikit-learn sums the logistic outputs' losses, fastnn's BCE averages them."""
        return (float(self.n_outputs_), 1.0) if self.out_activation_ == "logistic" else (
            1.0, 1.0)

    def _stratify(self):
        # scikit-learn stratifies its validation split on one-column targets only
        return self.n_outputs_ == 1

    def _validate_input(self, X, y, incremental, reset, classes):
        X, y = validate_data(self, X, y, multi_output=True, dtype=as_dtype(self.dtype),
                             reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if incremental and self._first_partial_fit_call(classes):
            self._label_binarizer = LabelBinarizer().fit(
                y if type_of_target(y).startswith("multilabel") else classes)
            self.classes_ = self._label_binarizer.classes_
        elif not hasattr(self, "classes_") or not (self.warm_start or incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            present = unique_labels(y)
            if self.warm_start:
                if set(present) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same "
                                     "classes as in the previous call to fit. Previously "
                                     f"got {self.classes_}, `y` has {present}")
            elif len(np.setdiff1d(present, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {present}.")
        binary = self._label_binarizer.transform(y)
        if reset:
            self.n_outputs_ = binary.shape[1]
            self.out_activation_ = ("softmax" if self._label_binarizer.y_type_ == "multiclass"
                                    else "logistic")
        if self.out_activation_ == "softmax":
            targets = np.argmax(binary, axis=1)       # class indices: the fused kernel's
        else:
            targets = binary.astype(as_dtype(self.dtype))
        return X, targets, y

    def _first_partial_fit_call(self, classes):
        """scikit-learn's rule: ``classes`` is required on the first ``partial_fit`` and
        must not change afterwards; True when this call defines ``classes_``."""
        if getattr(self, "classes_", None) is None and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is None:
            return False
        if getattr(self, "classes_", None) is not None:
            if not np.array_equal(self.classes_, unique_labels(classes)):
                raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                                 f"partial_fit, was: {self.classes_!r}")
            return False
        return True

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing from the current weights and optimiser
        state; ``classes`` (every label of the whole data set) is required on the first
        call.  Returns ``self``."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True,
                         classes=classes)

    def _predict_validated(self, X):
        proba = self._model.predict_proba(X)
        if self.n_outputs_ == 1:
            proba = proba.ravel()
        return self._label_binarizer.inverse_transform(proba)

    def _score_validated(self, X, y, sample_weight):
        return accuracy_score(y, self._predict_validated(X), sample_weight=sample_weight)

    def predict(self, X):
        """Class labels (n_samples,), or a label indicator matrix for multilabel."""
        return self._predict_validated(self._validated_X(X))

    def predict_proba(self, X):
        """Probabilities (n_samples, n_classes), columns in the order of ``classes_``
        (two columns for two classes); for multilabel, each label's probability."""
        X = self._validated_X(X)
        proba = self._model.predict_proba(X)
        if self.n_outputs_ == 1:
            return np.column_stack([1 - proba[:, 0], proba[:, 0]])
        return proba

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class FastMLPRegressor(RegressorMixin, _BaseFastMLP):
    """Multi-layer perceptron regressor trained by fastnn, a drop-in replacement for
    scikit-learn's ``MLPRegressor`` (solvers "adam" and "sgd"; ``loss="squared_error"``,
    its default, the only loss: "poisson" raises a ValueError).

    Targets of shape (n_samples,) or (n_samples, n_outputs); the loss is scikit-learn's
    half squared error, ``0.5 * mean((y - prediction) ** 2)``, with its gradient.
    """ + _PARAMETERS_DOC + """
    Examples
    --------
    >>> from fastnn.sklearn import FastMLPRegressor
    >>> reg = FastMLPRegressor(hidden_layer_sizes=(64, 64), random_state=0).fit(X, y)
    >>> reg.predict(X_test), reg.score(X_test, y_test)
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 dtype="float32", backend="numba"):
        # scikit-learn's MLPRegressor takes ``loss`` first (since 1.7); the parameters
        # keep its order
        self.loss = loss
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha,
            batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            dtype=dtype, backend=backend)

    def _check_params(self):
        if self.loss == "poisson":
            raise ValueError("loss='poisson' is not available in fastnn.sklearn; use "
                             "loss='squared_error' or scikit-learn's MLPRegressor")
        _choice(self.loss, "loss", ("squared_error",))
        super()._check_params()

    def _loss_name(self):
        return "mse"

    def _loss_scale(self):
        """fastnn's MSE is the mean over all elements, gradient 2 (p - y) / (n k);
        scikit-learn's gradient is (p - y) / n, its reported loss half fastnn's."""
        return self.n_outputs_ / 2.0, 1.0 / self.n_outputs_

    def _stratify(self):
        return False

    def _validate_input(self, X, y, incremental, reset, classes):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=as_dtype(self.dtype), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if reset:
            self.n_outputs_ = n_outputs
            self.out_activation_ = "identity"
        elif n_outputs != self.n_outputs_:
            raise ValueError(f"y has {n_outputs} outputs but the network was fitted with "
                             f"{self.n_outputs_}")
        return X, y.reshape(len(y), n_outputs).astype(as_dtype(self.dtype)), y

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights and optimiser
        state.  Returns ``self``."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _predict_validated(self, X):
        out = self._model.predict(X)
        return out.ravel() if out.shape[1] == 1 else out

    def _score_validated(self, X, y, sample_weight):
        pred = self._predict_validated(X)
        if not np.isfinite(pred).all():
            return np.nan
        return r2_score(y, pred, sample_weight=sample_weight)

    def predict(self, X):
        """Predicted values, (n_samples,) or (n_samples, n_outputs)."""
        return self._predict_validated(self._validated_X(X))
