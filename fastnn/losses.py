"""Losses: each call validates, then runs one fused kernel for the value and the gradient.

``loss, grad = loss_fn(predictions, targets)`` returns the mean loss (a float) and
d(loss)/d(predictions), ready for ``model.backward(grad)``.
"""
import numpy as np

from .backends.memory import backend_for, is_device_array, to_host
from .validation import as_input, as_labels, as_targets, check_choice, check_device_input


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

    def __call__(self, predictions, targets):
        """``(mean loss, gradient)``; the gradient lives where the predictions do (a
        device array for predictions from a "cuda" model)."""
        backend = backend_for(predictions)
        if is_device_array(predictions):
            pred = check_device_input(predictions, "predictions", predictions.dtype)
        else:
            pred = np.asarray(predictions)
            dtype = pred.dtype if pred.dtype in (np.float32, np.float64) else np.float32
            pred = as_input(pred, "predictions", dtype)
        targets = self.check_targets(to_host(targets), pred.shape, pred.dtype)
        if backend.memory != "host":
            pred, targets = backend.asarray(pred, pred.dtype), backend.asarray(targets, targets.dtype)
        return self._compute(pred, targets, backend)

    def _compute(self, pred, targets, backend):
        if self.from_logits is False:
            return self._compute_from_probabilities(pred, targets, backend)
        grad = backend.empty(pred.shape, pred.dtype)
        loss = self._kernel(backend, targets)(pred, targets, grad)
        return float(loss), grad

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

    def _compute_from_probabilities(self, probs, targets, backend):
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
        loss = self._kernel(host, t)(np.ascontiguousarray(z), t, grad_z)
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
        return (f"{type(self).__name__}(from_logits=False)" if self.from_logits is False
                else f"{type(self).__name__}()")


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits, mean over the batch.

    Targets are integer class labels of shape (batch,), or one-hot / soft probability
    targets of shape (batch, classes).  Softmax is fused into the loss: feed raw logits
    (no :class:`fastnn.Softmax` layer before it).

    Parameters
    ----------
    from_logits : bool, default True
        False: the predictions are probabilities (Keras's ``from_logits=False``),
        ``loss = mean_i -sum_j t_ij log(p_ij / sum_k p_ik)`` with ``p`` clipped to
        ``[1e-7, 1 - 1e-7]``.  ``compile`` trains a model ending in Softmax on the
        Softmax's input with the logits kernel instead (exact and stable).
    """

    name = "cross_entropy"
    metrics = ("accuracy",)
    link = "softmax"

    def __init__(self, from_logits=True):
        self.from_logits = _check_from_logits(from_logits)
        if self.from_logits is False:
            self.name = "cross_entropy_probabilities"

    def check_targets(self, targets, shape, dtype):
        arr = np.asarray(targets)
        if arr.ndim == 2 and arr.shape == tuple(shape) and shape[1] > 1:
            soft = as_targets(arr, "targets", shape, dtype)
            if soft.min() < 0:
                raise ValueError("soft targets must be non-negative probabilities, got "
                                 f"a minimum of {soft.min()}")
            return soft
        return as_labels(arr, "targets", shape[0], shape[1])

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
    one output).  :class:`BCELoss` takes probabilities instead."""

    name = "bce_with_logits"
    metrics = ("accuracy",)
    link = "sigmoid"

    def with_logits(self, from_logits):
        return BCEWithLogitsLoss() if from_logits else BCELoss()

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
    ``[1e-7, 1 - 1e-7]``; ``predict`` thresholds at 0.5.

    ``compile`` trains a model ending in ``Sigmoid()`` on the Sigmoid's input with the
    fused logits kernel of :class:`BCEWithLogitsLoss` (exact gradients, stable for any
    logit); called directly, it computes the formula above.
    """

    name = "bce"
    from_logits = False

    def __repr__(self):
        return "BCELoss()"


class MSELoss(Loss):
    """Mean squared error, mean over all elements."""

    name = "mse"
    metrics = ("mae",)

    def _kernel(self, backend, targets):
        return backend.mse


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


def get_loss(loss):
    """A :class:`Loss` from an instance or a name in :data:`LOSSES`."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    return check_choice(loss, "loss", LOSSES)()
