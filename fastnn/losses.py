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
        grad = backend.empty(pred.shape, pred.dtype)
        loss = self._kernel(backend, targets)(pred, targets, grad)
        return float(loss), grad

    def check_targets(self, targets, shape, dtype):
        """Validated targets for predictions of ``shape``/``dtype``."""
        return as_targets(targets, "targets", shape, dtype)

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
        return f"{type(self).__name__}()"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits, mean over the batch.

    Targets are integer class labels of shape (batch,), or one-hot / soft probability
    targets of shape (batch, classes).  Softmax is fused into the loss: feed raw logits
    (no :class:`fastnn.Softmax` layer before it).
    """

    name = "cross_entropy"
    metrics = ("accuracy",)

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
        return backend.softmax_forward(outputs, backend.empty(outputs.shape, outputs.dtype))

    def correct(self, outputs, targets, backend):
        if targets.ndim == 1:
            return backend.argmax_matches(outputs, targets)
        return backend.argmax_matches_soft(outputs, targets)


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits (sigmoid fused in, stable for any logit), mean over
    all elements.  Targets in [0, 1] of the predictions' shape ((batch,) is accepted for
    one output)."""

    name = "bce_with_logits"
    metrics = ("accuracy",)

    def check_targets(self, targets, shape, dtype):
        return as_targets(targets, "targets", shape, dtype, low=0, high=1)

    def _kernel(self, backend, targets):
        return backend.bce_logits

    def predict(self, outputs):
        labels = (outputs >= 0).astype(np.int64)
        return labels[:, 0] if labels.shape[1] == 1 else labels

    def predict_proba(self, outputs, backend):
        return backend.sigmoid_forward(outputs, backend.empty(outputs.shape, outputs.dtype), 1.0)

    def correct(self, outputs, targets, backend):
        return backend.sign_matches(outputs, targets) / outputs.shape[1]


class MSELoss(Loss):
    """Mean squared error, mean over all elements."""

    name = "mse"
    metrics = ("mae",)

    def _kernel(self, backend, targets):
        return backend.mse


#: Names accepted by ``compile(loss=...)`` (Keras spellings included).
LOSSES = {
    "cross_entropy": CrossEntropyLoss,
    "crossentropy": CrossEntropyLoss,
    "categorical_crossentropy": CrossEntropyLoss,
    "sparse_categorical_crossentropy": CrossEntropyLoss,
    "bce_with_logits": BCEWithLogitsLoss,
    "binary_crossentropy": BCEWithLogitsLoss,
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
