"""The shared part of :mod:`fastnn.sklearn`'s estimators: scikit-learn's training rules as
a fastnn callback (:class:`_SklearnRules`) and the base estimator (parameters, network,
fit loop, fitted attributes, pickling).  Imported by :mod:`fastnn.sklearn` after it has
checked that scikit-learn is installed."""
import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .backends import get_backend
from .callbacks import Callback
from .layers import Activation, Linear
from .losses import check_sample_weight
from .model import Sequential
from .optim import SGD, Adam
from .training import TrainingDivergedError
from .validation import as_dtype, check_number

#: scikit-learn's activation names -> fastnn's registry names
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_SOLVERS = ("adam", "sgd")
_SCHEDULES = ("constant", "invscaling", "adaptive")
_BACKENDS = ("numba", "numpy")


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _choice(value, name, options):
    """One of ``options``, spelled exactly (as scikit-learn's parameter checks)."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got "
                         f"{value!r}")


class _SklearnRules(Callback):
    """What scikit-learn's MLP does around each step of fastnn's ``fit``.

    Before each batch: the L2 penalty's gradient ``alpha / sw_sum * W`` as the weights'
    ``weight_decay`` (``sw_sum``: the batch's size, or sum of sample weights), its loss
    ``alpha / (2 sw_sum) * sum ||W||^2`` for ``loss_curve_``, and for Adam the epsilon
    that makes fastnn's update scikit-learn's.
    After each epoch: the estimator's bookkeeping and stopping rule.
    """

    def __init__(self, estimator, n_samples, batch_size, mean_weight, loss_factor,
                 validation):
        self.estimator = estimator
        self.n_samples, self.batch_size = n_samples, batch_size
        self.mean_weight, self.loss_factor = mean_weight, loss_factor
        self.validation = validation
        self.penalty = 0.0
        self.stopped = False

    def on_epoch_begin(self, epoch, logs=None):
        self.penalty = 0.0

    def on_batch_begin(self, batch, logs=None):
        est, opt = self.estimator, self.model.optimizer
        n_batch = min(self.batch_size, self.n_samples - batch * self.batch_size)
        sw_sum = n_batch * self.mean_weight
        weights = opt.param_groups[0]
        # param_groups are the optimiser's public hyperparameters (as a schedule sets lr);
        # set directly, not through opt.<name> = ..., which re-checks every group
        weights["weight_decay"] = est.alpha / sw_sum
        if est.alpha:
            # the backend's kernel, not np.dot: a BLAS call between fastnn's kernels
            # would wake BLAS's thread pool every step (see fastnn.threads)
            backend = get_backend(opt.backend)
            squares = sum(backend.sum_of_squares(p.data.reshape(-1))
                          for p in weights["params"])
            # scikit-learn adds the batch's penalty to its loss, weighted by the batch size
            self.penalty += 0.5 * est.alpha * squares / sw_sum * n_batch
        if est.solver == "adam":
            # fastnn (PyTorch) adds eps to sqrt(v_hat) = sqrt(v) / sqrt(1 - beta2^t),
            # scikit-learn to sqrt(v): the same update with eps / sqrt(1 - beta2^t)
            t = opt.state[0]["step"] + 1
            eps = est.epsilon / math.sqrt(1.0 - est.beta_2 ** t)
            for group in opt.param_groups:
                group["eps"] = eps

    def on_epoch_end(self, epoch, logs=None):
        loss = logs["loss"] * self.loss_factor + self.penalty / self.n_samples
        if self.estimator._end_iteration(loss, self.n_samples, self.validation):
            self.stopped = True
            self.model.stop_training = True


class _BaseFastMLP(BaseEstimator):
    """What the classifier and the regressor share; see :class:`FastMLPClassifier`."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 dtype="float32", backend="numba"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.backend = backend

    # ------------------------------------------------------------------ parameters
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        for size in sizes:
            check_number(size, "each of hidden_layer_sizes", low=1, integer=True)
        return [int(size) for size in sizes]

    def _check_params(self):
        self._hidden_sizes()
        _choice(self.activation, "activation", tuple(_ACTIVATIONS))
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not available in fastnn (a full-batch "
                             "method, not fastnn's mini-batch kernels): use solver='adam' "
                             "or 'sgd', or scikit-learn's own MLP for L-BFGS")
        _choice(self.solver, "solver", _SOLVERS)
        check_number(self.alpha, "alpha", low=0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            check_number(self.batch_size, "batch_size ('auto' or an int)", low=1,
                         integer=True)
        _choice(self.learning_rate, "learning_rate", _SCHEDULES)
        check_number(self.learning_rate_init, "learning_rate_init", low=0, low_open=True)
        check_number(self.power_t, "power_t")
        check_number(self.max_iter, "max_iter", low=1, integer=True)
        check_number(self.tol, "tol", low=0)
        check_number(self.momentum, "momentum", low=0, high=1, high_open=True)
        check_number(self.validation_fraction, "validation_fraction", low=0, high=1,
                     high_open=True)
        for name in ("beta_1", "beta_2"):
            check_number(getattr(self, name), name, low=0, high=1, high_open=True)
        check_number(self.epsilon, "epsilon", low=0, low_open=True)
        if self.n_iter_no_change != np.inf:
            check_number(self.n_iter_no_change, "n_iter_no_change (an int or np.inf)", low=1,
                         integer=True)
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            _flag(getattr(self, name), name)
        as_dtype(self.dtype)
        _choice(self.backend, "backend", _BACKENDS)

    # ------------------------------------------------------------------ the network
    def __sklearn_is_fitted__(self):
        return self.__dict__.get("_model") is not None

    def _linears(self):
        model = self.__dict__.get("_model")
        if model is None:
            raise AttributeError(f"this {type(self).__name__} is not fitted yet")
        return [layer for layer in model.layers if isinstance(layer, Linear)]

    @property
    def coefs_(self):
        """list of arrays (n_in, n_out): the weights of each layer, the network's own
        arrays (in ``dtype``), as scikit-learn lays them out."""
        return [layer.weight.data for layer in self._linears()]

    @coefs_.setter
    def coefs_(self, values):
        self._assign("coefs_", "weight", values)

    @property
    def intercepts_(self):
        """list of arrays (n_out,): the biases of each layer."""
        return [layer.bias.data for layer in self._linears()]

    @intercepts_.setter
    def intercepts_(self, values):
        self._assign("intercepts_", "bias", values)

    def _assign(self, name, kind, values):
        layers = self._linears()
        values = [np.asarray(v) for v in values]
        if len(values) != len(layers) or any(
                v.shape != getattr(layer, kind).shape for v, layer in zip(values, layers)):
            raise ValueError(f"{name} must be {len(layers)} arrays of shapes "
                             f"{[getattr(layer, kind).shape for layer in layers]}, got "
                             f"{[v.shape for v in values]}")
        for value, layer in zip(values, layers):
            getattr(layer, kind).data[...] = value

    def _initialize(self, n_features, rng):
        """A new network, drawn as scikit-learn draws it, and fresh bookkeeping."""
        self._architecture = {"sizes": [n_features, *self._hidden_sizes(), self.n_outputs_],
                              "activation": _ACTIVATIONS[self.activation],
                              "dtype": str(as_dtype(self.dtype)), "backend": self.backend}
        self._build()
        factor = 2.0 if self._architecture["activation"] == "sigmoid" else 6.0
        for layer in self._linears():
            bound = math.sqrt(factor / (layer.in_features + layer.out_features))
            layer.weight.data[...] = rng.uniform(-bound, bound, layer.weight.shape)
            layer.bias.data[...] = rng.uniform(-bound, bound, layer.bias.shape)
        self.n_layers_ = len(self._architecture["sizes"])
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self._best_state = self._model.state_dict()
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _build(self):
        """The network of ``self._architecture`` (Linear layers with the activation
        between them), its weights not yet drawn."""
        arch = self._architecture
        sizes, activation = arch["sizes"], arch["activation"]
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            layers.append(Linear(fan_in, fan_out, dtype=arch["dtype"], seed=0))
            if i < len(sizes) - 2 and activation != "identity":
                layers.append(Activation(activation))
        self._model = Sequential(*layers, dtype=arch["dtype"], backend=arch["backend"])

    def _compile(self, optimizer_type, **hyperparameters):
        """An optimiser compiled into the network: the weights in a group whose weight
        decay is the per-batch L2 term (set by :class:`_SklearnRules`), the biases in
        one without."""
        layers = self._linears()
        groups = [{"params": [layer.weight for layer in layers]},
                  {"params": [layer.bias for layer in layers], "weight_decay": 0.0}]
        optimizer = optimizer_type(groups, **hyperparameters)
        self._model.compile(optimizer=optimizer, loss=self._loss_name())
        return optimizer

    def _new_optimizer(self):
        """scikit-learn's optimiser (its update rule, see :class:`_SklearnRules`)."""
        if self.solver == "sgd":
            self._compile(SGD, lr=self.learning_rate_init, momentum=self.momentum,
                          nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        else:
            self._compile(Adam, lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                          eps=self.epsilon)

    def _set_learning_rate(self, lr):
        """Change the SGD learning rate the way scikit-learn's velocity sees it: its
        velocity holds ``-lr * (fastnn's velocity)``, so fastnn's is rescaled by
        ``old / new`` to continue the same motion."""
        optimizer = self._model.optimizer
        ratio = optimizer.lr / lr
        for state in optimizer.state:
            if "velocity" in state:
                state["velocity"] *= state["velocity"].dtype.type(ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr

    # ------------------------------------------------------------------ training
    def _fit(self, X, y, sample_weight=None, incremental=False, classes=None):
        self._check_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first_pass = self.__dict__.get("_model") is None or not (self.warm_start
                                                                 or incremental)
        X, targets, y = self._validate_input(X, y, incremental, first_pass, classes)
        n_samples = X.shape[0]
        weights = None if sample_weight is None else check_sample_weight(sample_weight,
                                                                          n_samples)
        if weights is not None and not weights.sum() > 0:
            raise ValueError("sample_weight is all zero: at least one sample needs a "
                             "positive weight")
        rng = check_random_state(self.random_state)
        if first_pass:
            self._initialize(X.shape[1], rng)
        if not incremental or self._model.optimizer is None:
            self._new_optimizer()

        validation = None
        if self.early_stopping:
            stratify = y if self._stratify() else None
            train, val = train_test_split(np.arange(n_samples), random_state=rng,
                                          test_size=self.validation_fraction,
                                          stratify=stratify)
            if len(val) < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            validation = (X[val], y[val], None if weights is None else weights[val])
            X, targets = X[train], targets[train]
            weights = None if weights is None else weights[train]
            n_samples = X.shape[0]

        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped", stacklevel=3)
            batch_size = int(np.clip(self.batch_size, 1, n_samples))

        # fastnn's sample weights give a batch the weighted sum over its size; scaled to
        # a mean of 1 they give scikit-learn's weighted mean (exactly for one batch), and
        # they carry the factor between fastnn's loss and scikit-learn's (see _loss_scale)
        train_factor, loss_factor = self._loss_scale()
        mean_weight = 1.0
        fit_weights = None
        if weights is not None:
            mean_weight = float(weights.mean())
            fit_weights = weights * (train_factor / mean_weight)
        elif train_factor != 1.0:
            fit_weights = np.full(n_samples, train_factor)

        rules = _SklearnRules(self, n_samples, batch_size, mean_weight, loss_factor,
                              validation)
        self.n_iter_ = 0
        try:
            self._model.fit(X, targets, epochs=1 if incremental else self.max_iter,
                            batch_size=batch_size, shuffle=self.shuffle,
                            seed=np.random.default_rng(rng.randint(np.iinfo(np.int32).max)),
                            verbose=0, callbacks=[rules], sample_weight=fit_weights)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)
        except TrainingDivergedError as err:
            raise ValueError(f"Solver produced non-finite parameter weights ({err}). The "
                             "input data may contain large values and need to be "
                             "preprocessed, or lower learning_rate_init.") from err
        if (not incremental and not rules.stopped and self.n_iter_ == self.max_iter):
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                          "reached and the optimization hasn't converged yet.",
                          ConvergenceWarning, stacklevel=3)
        if self.early_stopping:
            self._model.load_state_dict(self._best_state)
        return self

    def _end_iteration(self, loss, n_samples, validation):
        """scikit-learn's end of an epoch: record the loss, update the no-improvement
        count (training loss, or the validation score with the best weights kept),
        the learning-rate schedule, and decide whether to stop (returns True)."""
        self.n_iter_ += 1
        self.loss_ = loss
        self.t_ += n_samples
        self.loss_curve_.append(loss)
        if self.verbose:
            print("Iteration %d, loss = %.8f" % (self.n_iter_, loss))
        if validation is not None:
            score = self._score_validated(*validation)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_state = self._model.state_dict()
        else:
            if loss > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if loss < self.best_loss_:
                self.best_loss_ = loss
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            self._set_learning_rate(self.learning_rate_init / (self.t_ + 1) ** self.power_t)
        if self._no_improvement_count > self.n_iter_no_change:
            what = "Validation score" if validation is not None else "Training loss"
            msg = (f"{what} did not improve more than tol={self.tol:f} for "
                   f"{self.n_iter_no_change} consecutive epochs.")
            lr = self._model.optimizer.lr
            if self.solver != "sgd" or self.learning_rate != "adaptive":
                if self.verbose:
                    print(msg + " Stopping.")
                return True
            if lr <= 1e-6:
                if self.verbose:
                    print(msg + " Learning rate too small. Stopping.")
                return True
            self._set_learning_rate(lr / 5.0)
            if self.verbose:
                print(msg + " Setting learning rate to %f" % (lr / 5.0))
            self._no_improvement_count = 0
        return False

    def fit(self, X, y, sample_weight=None):
        """Fit the network to (X, y) for up to ``max_iter`` epochs (scikit-learn's
        stopping rule); returns ``self``.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
        y : array-like (n_samples,) or (n_samples, n_outputs)
            Class labels of any type (classifier; a label indicator matrix for
            multilabel) or real targets (regressor).
        sample_weight : array-like (n_samples,), optional
            Non-negative weights (see the module notes for how batches use them).
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    # ------------------------------------------------------------------ prediction
    def _outputs(self, X):
        """The network's outputs for validated ``X``: probabilities (classifier) or
        values (regressor), (n_samples, n_outputs_)."""
        raise NotImplementedError

    def _validated_X(self, X):
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=self._architecture["dtype"])

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = dict(super().__getstate__())     # (object's is self.__dict__ itself)
        model = state.pop("_model", None)
        if model is not None:      # the arrays, not the network with its last batch
            optimizer = model.optimizer
            state["_network"] = {
                "weights": self.coefs_, "biases": self.intercepts_,
                "optimizer": None if optimizer is None else (type(optimizer).__name__,
                                                             optimizer.state_dict())}
        return state

    def __setstate__(self, state):
        network = state.pop("_network", None)
        super().__setstate__(state)
        if network is None:
            return
        self._build()
        self.coefs_, self.intercepts_ = network["weights"], network["biases"]
        if network["optimizer"] is not None:
            name, optimizer_state = network["optimizer"]
            self._compile({"SGD": SGD, "Adam": Adam}[name]).load_state_dict(optimizer_state)
