"""Losses: each call validates, then runs one fused kernel for the value and the gradient.

``loss, grad = loss_fn(predictions, targets)`` returns the mean loss (a float) and
d(loss)/d(predictions), ready for ``model.backward(grad)``.
"""
import numpy as np

from .backends.memory import backend_for, is_device_array, to_host
from .validation import (as_input, as_labels, as_numbers, as_targets, check_choice,
                         check_device_input, shape_of)


class Loss:
    """Base class.  Subclasses say how targets are checked and which kernel runs."""

    name = None
    #: metrics this loss can report besides itself
    metrics = ()
    #: the activation the loss applies to logits ("softmax", "sigmoid"), None if none
    link = None
    #: True: the predictions are logits; False: probabilities (the outputs of ``link``);
    #: None: not decided yet (a Keras name, decided by ``compile`` from the last layer)
    from_logits = True

    def __call__(self, predictions, targets, sample_weight=None):
        """``(mean loss, gradient)``; the gradient lives where the predictions do (a
        device array for predictions from a "cuda" model).  ``sample_weight`` (batch,)
        scales each sample's loss (Keras's meaning: the weighted sum divided by the
        batch size, or by the sum of the class weights for a class-weighted
        cross-entropy)."""
        backend = backend_for(predictions)
        if is_device_array(predictions):
            pred = check_device_input(predictions, "predictions", predictions.dtype)
        else:
            pred = as_input(predictions, "predictions", None)   # float32/64 kept
        if len(pred.shape) != 2:
            raise ValueError(f"predictions must be 2-D (batch, outputs), got shape "
                             f"{tuple(pred.shape)}; for one prediction per position, "
                             "flatten the leading axes: predictions.reshape(-1, outputs) "
                             "with the targets flattened the same way")
        targets = self.check_targets(_host_data(targets), pred.shape, pred.dtype)
        if sample_weight is not None:
            sample_weight = check_sample_weight(_host_data(sample_weight), pred.shape[0])
        if backend.memory != "host":
            pred, targets = backend.asarray(pred, pred.dtype), backend.asarray(targets, targets.dtype)
        return self._compute(pred, targets, backend, sample_weight)

    def _compute(self, pred, targets, backend, sample_weight=None):
        """``(loss, grad)`` on arrays already checked; ``sample_weight``: host (batch,)."""
        if self.from_logits is False:
            return self._compute_from_probabilities(pred, targets, backend, sample_weight)
        grad = backend.empty(pred.shape, pred.dtype)
        return float(self._run(backend, pred, targets, grad, sample_weight)), grad

    def _run(self, backend, pred, targets, grad, sample_weight):
        """The loss, its gradient written to ``grad``: the fused kernel, or its weighted
        twin when there are class or sample weights."""
        if sample_weight is None and not self.weighted:
            return self._kernel(backend, targets)(pred, targets, grad)
        return self._run_weighted(backend, pred, targets, grad, sample_weight)

    #: True when the loss itself weights classes (``weight``, ``pos_weight``)
    weighted = False

    def _run_weighted(self, backend, pred, targets, grad, sample_weight):
        # a mean over all elements: each row's share is s_i / (batch * outputs)
        share = _sample_share(sample_weight, pred.shape[0], pred.dtype) / pred.shape[1]
        return backend.mse_weighted(pred, targets, _on(backend, share), grad)

    def get_config(self):
        """Constructor arguments, JSON-serialisable (saved with the model)."""
        return {}

    def check_targets(self, targets, shape, dtype):
        """Validated targets for predictions of ``shape``/``dtype``."""
        return as_targets(targets, "targets", shape, dtype)

    # ---- probabilities in (from_logits=False)
    #: probabilities are clipped to [EPSILON, 1 - EPSILON] before the logarithm, as
    #: Keras does (its ``backend.epsilon()``); the gradient is 0 where they were clipped
    EPSILON = 1e-7

    def with_logits(self, from_logits):
        """This loss taking logits (True) or probabilities (False)."""
        return type(self)(from_logits=from_logits)

    def _compute_from_probabilities(self, probs, targets, backend, sample_weight=None):
        """The loss of probabilities ``p`` (outputs of ``link``): the fused logits kernel
        on ``z = link^-1(clip(p))`` and the chain rule ``dL/dp = dL/dz * dz/dp``.

        Runs on the host (a model that ends in its link trains on the logits instead, see
        ``compile``); exact up to the clipping, which loses the gradient of saturated
        probabilities -- the reason ``compile`` fuses the last layer into the loss."""
        p = backend.to_numpy(probs) if backend.memory != "host" else probs
        t = backend.to_numpy(targets) if backend.memory != "host" else targets
        if np.any((p < 0) | (p > 1)):      # (a NaN passes: the loss shows it)
            raise ValueError(f"{self!r} takes probabilities in [0, 1] (from_logits=False), "
                             f"got values in [{np.nanmin(p)}, {np.nanmax(p)}]; for logits use "
                             f"{self.with_logits(True)!r}")
        eps = p.dtype.type(self.EPSILON)
        one = p.dtype.type(1)
        clipped = np.clip(p, eps, one - eps)
        if self.link == "sigmoid":
            z = np.log(clipped) - np.log1p(-clipped)
            dz_dp = one / (clipped * (one - clipped))
        else:   # softmax: softmax(log p) = p / sum(p), Keras's normalisation
            z = np.log(clipped)
            dz_dp = one / clipped
        host = backend_for(z)
        grad_z = host.empty(z.shape, z.dtype)
        loss = self._run(host, np.ascontiguousarray(z), t, grad_z, sample_weight)
        grad = np.where(clipped == p, grad_z * dz_dp, p.dtype.type(0)).astype(p.dtype)
        if backend.memory != "host":
            grad = backend.asarray(grad, grad.dtype)
        return float(loss), grad

    # ---- what a trained model's outputs mean under this loss
    def predict(self, outputs):
        return outputs

    def predict_proba(self, outputs, backend):
        raise TypeError(f"{type(self).__name__} does not produce probabilities")

    def correct(self, outputs, targets, backend):
        """Number of correct predictions in a batch (for the accuracy metric), computed
        where the outputs live."""
        raise TypeError(f"accuracy is not defined for {type(self).__name__}")

    def __repr__(self):
        config = self.get_config()
        if self.from_logits is not type(self).from_logits:   # not the class's default
            config.setdefault("from_logits", self.from_logits)
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{type(self).__name__}({args})"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits, mean over the batch.

    Targets are integer class labels of shape (batch,), or one-hot / soft probability
    targets of shape (batch, classes).  Softmax is fused into the loss: feed raw logits
    (no :class:`fastnn.Softmax` layer before it).

    Parameters
    ----------
    weight : array (classes,), optional
        Class weights, PyTorch's meaning: with labels, the weighted mean
        ``sum_i w[y_i] loss_i / sum_i w[y_i]``; with probability targets, each term
        ``t_ij log p_ij`` is scaled by ``w_j`` and the mean is over the batch.
    from_logits : bool, default True
        False: the predictions are probabilities (Keras's ``from_logits=False``),
        ``loss = mean_i -sum_j t_ij log(p_ij / sum_k p_ik)`` with ``p`` clipped to
        ``[1e-7, 1 - 1e-7]``.  ``compile`` trains a model ending in Softmax on the
        Softmax's input with the logits kernel instead (exact and stable).
    """

    name = "cross_entropy"
    metrics = ("accuracy",)
    link = "softmax"

    def __init__(self, weight=None, from_logits=True):
        self.weight = _check_class_weights(weight, "weight")
        self.weighted = self.weight is not None
        self.from_logits = _check_from_logits(from_logits)
        if self.from_logits is False:
            self.name = "cross_entropy_probabilities"

    def with_logits(self, from_logits):
        return CrossEntropyLoss(weight=self.weight, from_logits=from_logits)

    def get_config(self):
        config = {} if self.weight is None else {"weight": self.weight.tolist()}
        return {**config, "from_logits": False} if self.from_logits is False else config

    def _run_weighted(self, backend, pred, targets, grad, sample_weight):
        n, k = pred.shape
        share = _sample_share(sample_weight, n, pred.dtype)
        w = None if self.weight is None else _class_weights_for(self.weight, k, pred.dtype)
        if targets.ndim == 1:
            if w is not None:      # PyTorch: divided by the sum of the rows' class weights
                labels = _host(backend, targets)
                share = share * (n * w[labels] / max(float(w[labels].sum()), _TINY))
            return backend.softmax_xent_weighted(pred, targets, _on(backend, share), grad)
        if w is not None:
            targets = targets * _on(backend, w)[None, :]
        return backend.softmax_xent_soft_weighted(pred, targets, _on(backend, share), grad)

    def check_targets(self, targets, shape, dtype):
        if shape_of(targets) == tuple(shape) and shape[1] > 1:
            soft = as_targets(targets, "targets", shape, dtype)
            if soft.min() < 0:
                raise ValueError("soft targets must be non-negative probabilities, got "
                                 f"a minimum of {soft.min()}")
            return soft
        return as_labels(targets, "targets", shape[0], shape[1])

    def _kernel(self, backend, targets):
        return backend.softmax_xent if targets.ndim == 1 else backend.softmax_xent_soft

    def predict(self, outputs):
        return np.argmax(outputs, axis=1)

    def predict_proba(self, outputs, backend):
        if self.from_logits is False:
            return outputs
        return backend.softmax_forward(outputs, backend.empty(outputs.shape, outputs.dtype))

    def correct(self, outputs, targets, backend):
        # the argmax of probabilities is that of their logits: one rule for both
        if targets.ndim == 1:
            return backend.argmax_matches(outputs, targets)
        return backend.argmax_matches_soft(outputs, targets)


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits (sigmoid fused in, stable for any logit), mean over
    all elements.  Targets in [0, 1] of the predictions' shape ((batch,) is accepted for
    one output).  :class:`BCELoss` takes probabilities instead.

    Parameters
    ----------
    pos_weight : array (outputs,) or float, optional
        PyTorch's weight of the positive targets, per output:
        ``loss = mean(-(pw t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))))``
        (``pw = n_negative / n_positive`` balances a rare class).
    """

    name = "bce_with_logits"
    metrics = ("accuracy",)
    link = "sigmoid"

    def __init__(self, pos_weight=None):
        self.pos_weight = _check_class_weights(pos_weight, "pos_weight")
        self.weighted = self.pos_weight is not None

    def with_logits(self, from_logits):
        return BCEWithLogitsLoss(self.pos_weight) if from_logits else BCELoss(self.pos_weight)

    def get_config(self):
        return {} if self.pos_weight is None else {"pos_weight": self.pos_weight.tolist()}

    def _run_weighted(self, backend, pred, targets, grad, sample_weight):
        n, k = pred.shape
        share = _sample_share(sample_weight, n, pred.dtype) / k
        pw = (np.ones(k, pred.dtype) if self.pos_weight is None
              else _class_weights_for(self.pos_weight, k, pred.dtype))
        return backend.bce_logits_weighted(pred, targets, _on(backend, pw), _on(backend, share),
                                           grad)

    def check_targets(self, targets, shape, dtype):
        return as_targets(targets, "targets", shape, dtype, low=0, high=1)

    def _kernel(self, backend, targets):
        return backend.bce_logits

    def predict(self, outputs):
        # the output kind decides the threshold: sigmoid(0) = 0.5
        labels = (outputs >= (0.5 if self.from_logits is False else 0)).astype(np.int64)
        return labels[:, 0] if labels.shape[1] == 1 else labels

    def predict_proba(self, outputs, backend):
        if self.from_logits is False:
            return outputs
        return backend.sigmoid_forward(outputs, backend.empty(outputs.shape, outputs.dtype), 1.0)

    def correct(self, outputs, targets, backend):
        if self.from_logits is False:     # probabilities: on the host (not a training path)
            p = backend.to_numpy(outputs) if backend.memory != "host" else outputs
            t = backend.to_numpy(targets) if backend.memory != "host" else targets
            return int(np.count_nonzero((p >= 0.5) == (t.reshape(p.shape) >= 0.5))) / p.shape[1]
        return backend.sign_matches(outputs, targets) / outputs.shape[1]


class BCELoss(BCEWithLogitsLoss):
    """Binary cross-entropy on probabilities (PyTorch's ``BCELoss``, Keras's
    ``binary_crossentropy`` with ``from_logits=False``), mean over all elements:
    ``loss = mean(-(t log p + (1 - t) log(1 - p)))`` with ``p`` clipped to
    ``[1e-7, 1 - 1e-7]``; ``predict`` thresholds at 0.5.  ``pos_weight`` as for
    :class:`BCEWithLogitsLoss`.

    ``compile`` trains a model ending in ``Sigmoid()`` on the Sigmoid's input with the
    fused logits kernel of :class:`BCEWithLogitsLoss` (exact gradients, stable for any
    logit); called directly, it computes the formula above.
    """

    name = "bce"
    from_logits = False



class MSELoss(Loss):
    """Mean squared error, mean over all elements."""

    name = "mse"
    metrics = ("mae",)

    def _kernel(self, backend, targets):
        return backend.mse


_TINY = 1e-300


def _host_data(data):
    """Device arrays copied to the host; host data (NumPy, pandas, lists) as it is,
    for validation to convert."""
    return to_host(data) if is_device_array(data) else data


def _host(backend, array):
    return array if backend.memory == "host" else backend.to_numpy(array)


def _on(backend, array):
    return array if backend.memory == "host" else backend.asarray(array, array.dtype)


def _check_weights(values, name, ndim):
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != ndim or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array of non-negative numbers, "
                         f"got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0:
        raise ValueError(f"{name} must hold finite non-negative numbers, got a minimum of "
                         f"{np.nanmin(arr)}" + (" and NaN/Inf" if not np.all(np.isfinite(arr))
                                                 else ""))
    return arr


def _check_class_weights(weight, name):
    """None, or a float64 (classes,) array (a number: one weight for every output)."""
    if weight is None:
        return None
    return _check_weights(np.atleast_1d(np.asarray(weight, dtype=np.float64)), name, 1)


def check_sample_weight(sample_weight, n):
    """A float64 (n,) array of finite non-negative sample weights (an array, a pandas
    Series or a list)."""
    arr = _check_weights(as_numbers(sample_weight, "sample_weight"), "sample_weight", 1)
    if arr.shape[0] != n:
        raise ValueError(f"sample_weight has {arr.shape[0]} values but there are {n} samples")
    return arr


def _class_weights_for(weight, k, dtype):
    """``weight`` as (k,) of ``dtype``; a single value applies to every output."""
    if weight.size == 1:
        return np.full(k, weight[0], dtype)
    if weight.size != k:
        raise ValueError(f"{weight.size} class weights for {k} outputs")
    return weight.astype(dtype)


def _sample_share(sample_weight, n, dtype):
    """Each row's share of a mean over the batch: ``s_i / n`` (``1/n`` without weights)."""
    if sample_weight is None:
        return np.full(n, 1.0 / n, dtype)
    return (sample_weight / n).astype(dtype)


def _check_from_logits(value):
    if value not in (True, False, None):
        raise TypeError(f"from_logits must be True, False or None, got {value!r}")
    return value


def _follow_model(cls):
    """A Keras name: logits or probabilities is decided by ``compile`` from the model's
    last layer (probabilities after Softmax/Sigmoid, as in Keras; logits otherwise)."""
    def make():
        loss = cls()
        loss.from_logits = None
        return loss
    return make


#: Names accepted by ``compile(loss=...)``.  The Keras spellings follow the model: after
#: a final Sigmoid/Softmax they take its probabilities (Keras's ``from_logits=False``),
#: otherwise logits.
LOSSES = {
    "cross_entropy": CrossEntropyLoss,
    "crossentropy": CrossEntropyLoss,
    "cross_entropy_probabilities": lambda: CrossEntropyLoss(from_logits=False),
    "categorical_crossentropy": _follow_model(CrossEntropyLoss),
    "sparse_categorical_crossentropy": _follow_model(CrossEntropyLoss),
    "bce_with_logits": BCEWithLogitsLoss,
    "bce": BCELoss,
    "binary_crossentropy": _follow_model(BCEWithLogitsLoss),
    "mse": MSELoss,
    "mean_squared_error": MSELoss,
}


def get_loss(loss, config=None):
    """A :class:`Loss` from an instance or a name in :data:`LOSSES` (with the
    constructor arguments ``config``, as :meth:`Loss.get_config` gives them)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss(**(config or {}))
    made = check_choice(loss, "loss", LOSSES)()
    return made if not config else type(made)(**config)
