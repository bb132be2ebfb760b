"""Keras-style ``compile``/``fit``/``evaluate``/``predict`` on top of the explicit protocol.

Each training step is exactly what a user would write by hand::

    outputs = model(xb); loss, grad = loss_fn(outputs, yb)
    opt.zero_grad(); model.backward(grad); opt.step()

Inputs are validated once per call (not per batch), so the loop adds no per-batch checks.
"""
import math
import sys
import warnings

import numpy as np

from .callbacks import Callback, CallbackList, check_callbacks
from .data import batches
from .init import make_rng
from .interrupts import DeferredInterrupts
from .layers import Activation
from .losses import check_sample_weight, get_loss
from .metrics import add_batch, check_metrics, results
from .optim import get_optimizer
from .schedules import FitSchedule, attach_schedule
from .progress import COMPILING, CompileWatch, ProgressBar, TrainingClock
from .validation import check_choice, check_number


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite (learning rate too high, bad data...)."""


class History(Callback):
    """What :meth:`TrainingMixin.fit` returns (and keeps as ``model.history``):
    ``history.history["loss"]`` is a list with one value per epoch (also ``accuracy``,
    ``val_loss``, ``val_accuracy``, ``lr``, ``samples_per_second``, ...) and
    ``history.epoch`` the epochs' numbers (0-based, from ``initial_epoch``).  fit calls
    it after the other callbacks, so it records what they added to the logs."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _weighted_batches(x, y, w, batch_size, shuffle, rng):
    """``(x_batch, y_batch, w_batch or None)``: :func:`batches` of (x, y), the sample
    weights ``w`` (or None) following the same order."""
    if w is None:
        for xb, yb in batches(x, y, batch_size, shuffle=shuffle, seed=rng):
            yield xb, yb, None
        return
    for xb, rows in batches(x, np.arange(len(x)), batch_size, shuffle=shuffle, seed=rng):
        yield xb, y[rows], w[rows]


def _to(backend, array):
    """A batch (host data, already validated) in ``backend``'s memory."""
    return array if backend.memory == "host" else backend.asarray(array, array.dtype)


class TrainingMixin:
    """Adds compile/fit/evaluate/predict to a model with ``__call__``/``backward``."""

    loss = None
    optimizer = None
    metrics = ()
    _metrics = {}          # name -> fastnn.metrics.Metric, as ``metrics``
    #: the loss of a training step and the outputs it sees: ``loss`` itself on the
    #: model's outputs, or (a final Sigmoid/Softmax fused into a loss on its
    #: probabilities) the logits version of ``loss`` on the last layer's input
    _step_loss = None
    _loss_on_logits = False
    lr_schedule = None
    schedule_interval = "epoch"

    def compile(self, optimizer="sgd", loss="cross_entropy", metrics=None, lr_schedule=None,
                schedule_interval="epoch"):
        """Choose the optimiser, the loss and the metrics reported by fit/evaluate.

        Parameters
        ----------
        optimizer : str or Optimizer
            ``"sgd"`` (lr 0.01), ``"adam"``, ``"adamw"``, ``"rmsprop"`` (PyTorch's defaults)
            or an instance such as ``fastnn.SGD(lr=0.1, momentum=0.9)``.  An instance built
            for this model's parameters (or parameter groups, or only some parameters)
            keeps them and its state; one without parameters is bound to all of them.
        loss : str or Loss
            ``"cross_entropy"`` (softmax fused; integer labels or one-hot targets) and
            ``"bce_with_logits"`` take *logits*; ``"bce"`` takes probabilities; ``"mse"``;
            or a Loss instance.  The Keras names ``"binary_crossentropy"``,
            ``"categorical_crossentropy"`` and ``"sparse_categorical_crossentropy"``
            follow the model: after a final ``Sigmoid()`` / ``Softmax()`` they take its
            probabilities (Keras's ``from_logits=False``), otherwise logits.
        metrics : list of str or Metric, optional
            Reported by fit/evaluate as means over the epoch's samples (see
            :mod:`fastnn.metrics`): ``"accuracy"`` (cross-entropy, BCE),
            ``"top_k_accuracy"`` (cross-entropy; k = 5, or ``"top_3_accuracy"``,
            ``fastnn.metrics.TopKAccuracy(3)``), ``"mse"``, ``"mae"``, ``"rmse"`` (MSE);
            Keras's long names are accepted too.
        lr_schedule : LRSchedule, optional
            A learning-rate schedule (:mod:`fastnn.schedules`) that ``fit`` steps after
            every epoch; ReduceLROnPlateau on ``val_loss`` with validation data, else on
            ``loss`` (or on its ``monitor``).  Saved with the model.
        schedule_interval : "epoch" or "batch", default "epoch"
            Step the schedule after every epoch or after every batch (e.g. a warm-up).
        """
        self.loss = get_loss(loss)
        self.optimizer = get_optimizer(optimizer).bind(self.parameters(), keep=True)
        self.lr_schedule = attach_schedule(lr_schedule, self.optimizer, schedule_interval)
        self.schedule_interval = schedule_interval.lower()
        self._metrics = check_metrics(metrics, self.loss)
        self.metrics = tuple(self._metrics)
        self._match_head()
        return self

    def _match_head(self):
        """Reconcile the loss with what the last layer outputs.

        A final Sigmoid/Softmax outputs probabilities.  A loss on probabilities after its
        own activation (``binary_crossentropy`` after Sigmoid, as Keras users write it)
        trains on that activation's *input*, the logits, with the fused logits kernel:
        the same loss, exact gradients, stable for saturated outputs (Keras computes from
        the sigmoid's logits the same way); ``model(x)``/``predict_proba`` still give
        probabilities and ``predict`` thresholds them at 0.5.  A loss that applies the
        activation itself (``bce_with_logits``, ``cross_entropy``) after that activation
        would apply it twice: warned, with the fix.
        """
        loss = self.loss
        last = self.layers[-1] if getattr(self, "layers", None) else None
        head = last if isinstance(last, Activation) and last.name in ("sigmoid",
                                                                      "softmax") else None
        if loss.from_logits is None:      # a Keras name: follow the model
            self.loss = loss = loss.with_logits(head is None)
        self._loss_on_logits = (loss.from_logits is False and head is not None
                                and head.name == loss.link
                                and all(v == 1.0 for v in head.params.values()))
        self._step_loss = loss.with_logits(True) if self._loss_on_logits else loss
        layer = head.name.title() if head is not None else type(last).__name__
        keras = {"sigmoid": "binary_crossentropy",
                 "softmax": "categorical_crossentropy"}.get(loss.link)
        if loss.link is not None and loss.from_logits and head is not None:
            warnings.warn(f"the last layer is {layer} but {loss!r} applies {loss.link} "
                          f"itself (it takes logits), so the outputs would be squashed "
                          f"twice: remove the {layer} layer and train on logits, or compile "
                          f"with loss={keras!r} to train on the {layer}'s probabilities "
                          "(Keras's meaning)", stacklevel=3)
        elif loss.from_logits is False and head is None and loss.link is not None:
            warnings.warn(f"{loss!r} takes probabilities but the last layer is {layer}, "
                          f"not Sigmoid/Softmax: add fastnn.{loss.link.title()}() as the "
                          f"last layer, or use {loss.with_logits(True)!r} on logits",
                          stacklevel=3)

    def _require_compiled(self, what):
        if self.loss is None:
            raise RuntimeError(f"call model.compile(optimizer=..., loss=...) before {what}()")

    def _prepare(self, x, y, name="x"):
        x = self._host_input(x, name)
        if not self.n_outputs:
            raise ValueError("the model has no Linear layer, so its output width is unknown")
        shape = self.output_shape(x.shape)
        if len(shape) != 2:
            raise ValueError(f"fit/evaluate need (batch, outputs) model outputs; for inputs "
                             f"of shape {x.shape} this model gives {shape} (reduce the "
                             "sequence axis first, or train with the explicit loop)")
        y = self.loss.check_targets(y, shape, self.dtype)
        return x, y

    def _batch_metrics(self, outputs, y, sums, backend):
        """Add a batch's metric sums, computed where the outputs live (on a GPU one
        scalar per metric comes back, not the outputs)."""
        add_batch(self._metrics, self._step_loss, outputs, y, backend, sums)

    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, shuffle=True,
            seed=None, verbose=1, callbacks=None, validation_split=0.0, initial_epoch=0,
            class_weight=None, sample_weight=None):
        """Train until epoch ``epochs`` (Keras's meaning: with ``initial_epoch=0``, that
        many passes over (x, y)); returns a :class:`History`, also kept as
        ``model.history``.

        Parameters
        ----------
        x : array (n_samples, n_features)
        y : targets for the compiled loss (integer labels for cross-entropy, ...)
        epochs, batch_size : int
        validation_data : (x_val, y_val), optional
            Evaluated after every epoch (``val_loss``, ``val_<metric>``).
        shuffle : bool
            Visit samples in a new random order every epoch.
        seed : int, optional
            Makes the shuffling, and so the whole run, reproducible.
        verbose : 0, 1 or 2
            0 silent; 1 a live progress bar (loss, metrics, samples/s) on a terminal and in
            Jupyter (one line per epoch when the output goes to a file or pipe); 2 one
            line per epoch.  The samples/s figure counts the training batches alone (not
            validation, nor Numba compiling or loading kernels), and a fit that compiles
            kernels says so in one line when it starts to.
        callbacks : list of Callback, optional
            Called in order at the stages of training (:mod:`fastnn.callbacks`):
            ``EarlyStopping``, ``ModelCheckpoint``, ``CSVLogger``,
            ``LearningRateScheduler`` or your own.
        validation_split : float in [0, 1), default 0
            Hold out the *last* fraction of (x, y) (before any shuffling, as Keras does)
            as validation data; not together with ``validation_data``.
        initial_epoch : int, default 0
            The epoch to start from, to continue an earlier fit: its epochs are
            numbered on (history, callbacks, progress) and training ends at ``epochs``,
            e.g. ``fit(..., epochs=10)`` then ``fit(..., initial_epoch=10, epochs=15)``.
        class_weight : dict {class index: weight}, optional
            Keras's meaning: each training sample's loss is scaled by its class's
            weight (classes left out weigh 1); one label per sample (cross-entropy, or
            BCE with one output).  Validation losses are not weighted.
        sample_weight : array (n_samples,), optional
            Each training sample's loss is scaled by its weight (times its class
            weight); a batch's loss is the weighted sum over the batch size, as in Keras.

        Raises
        ------
        TrainingDivergedError
            As soon as a batch loss is NaN or infinite; the update for that batch is not
            applied.
        KeyboardInterrupt
            On Ctrl-C, once the batch in progress is finished (its optimiser step whole)
            or, during validation, before its next batch; ``model.history`` then holds
            the epochs completed before.

        Notes
        -----
        The model trains in training mode (Dropout active, BatchNorm on batch
        statistics), is evaluated on ``validation_data`` in evaluation mode, and is left
        in evaluation mode, ready for ``predict``; call ``model.train()`` before
        continuing in an explicit loop.  ``evaluate``, ``predict`` and ``model(x)``
        follow the mode the model is in, as in PyTorch.
        """
        self._require_compiled("fit")
        check_number(epochs, "epochs", low=1, integer=True)
        check_number(batch_size, "batch_size", low=1, integer=True)
        check_choice(verbose, "verbose", {0: 0, 1: 1, 2: 2})
        check_number(initial_epoch, "initial_epoch", low=0, integer=True)
        if initial_epoch >= epochs:
            raise ValueError(f"initial_epoch={initial_epoch} must be below epochs={epochs}: "
                             "epochs is the number of the last epoch, not a count (to train "
                             f"5 more, pass epochs={initial_epoch + 5})")
        callbacks = check_callbacks(callbacks)
        x, y, w, x_val, y_val = self._fit_data(x, y, validation_data, validation_split,
                                               class_weight, sample_weight)
        backend = self._resolve_backend()
        self._last_backend = backend
        self.optimizer.backend = backend.name   # parameters live where the model runs
        rng = make_rng(seed) if seed is not None else np.random.default_rng()
        logged = ["loss", *self.metrics]
        logged += [f"val_{name}" for name in logged] if x_val is not None else []
        params = {"epochs": epochs, "initial_epoch": initial_epoch,
                  "steps": -(-x.shape[0] // batch_size), "samples": x.shape[0],
                  "verbose": verbose, "do_validation": x_val is not None, "metrics": logged}
        self.history = history = History()     # the epochs done so far, even after Ctrl-C
        callbacks = CallbackList([*callbacks, history], self, params)
        self.stop_training = False
        try:
            with DeferredInterrupts() as interrupts, CompileWatch() as compiling:
                callbacks.on_train_begin()
                logs = self._train_epochs(x, y, w, initial_epoch, epochs, batch_size, shuffle,
                                          rng, verbose, backend, callbacks, x_val, y_val,
                                          interrupts, compiling)
                callbacks.on_train_end(logs)
        except KeyboardInterrupt:
            if verbose and sys.stdout.isatty():
                sys.stdout.write("\n")         # end the live progress line
            raise
        finally:
            self.eval()
        return history

    def _fit_data(self, x, y, validation_data, validation_split, class_weight=None,
                  sample_weight=None):
        """(x, y, sample weights or None, x_val, y_val) for fit, validated;
        ``validation_split`` takes the last rows of (x, y)."""
        check_number(validation_split, "validation_split", low=0, high=1, high_open=True)
        x, y = self._prepare(x, y)
        w = self._sample_weights(y, class_weight, sample_weight)
        if validation_split and validation_data is not None:
            raise ValueError("pass validation_data or validation_split, not both")
        if validation_split:
            split_at = int(math.floor(x.shape[0] * (1.0 - validation_split)))
            if not 0 < split_at < x.shape[0]:
                raise ValueError(f"validation_split={validation_split} of {x.shape[0]} samples "
                                 "leaves no training or no validation samples")
            return (x[:split_at], y[:split_at], None if w is None else w[:split_at],
                    x[split_at:], y[split_at:])
        if validation_data is None:
            return x, y, w, None, None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (x_val, y_val)")
        return (x, y, w, *self._prepare(*validation_data, name="validation x"))

    def _sample_weights(self, y, class_weight, sample_weight):
        """The (n,) weights of the training samples from ``sample_weight`` and
        ``class_weight`` (validated targets ``y``), or None for none."""
        w = None if sample_weight is None else check_sample_weight(sample_weight, len(y))
        if class_weight is None:
            return w
        if not isinstance(class_weight, dict):
            raise TypeError("class_weight must be a dict {class index: weight}, got "
                            f"{type(class_weight).__name__}")
        if self.loss.link is None or (y.ndim == 2 and self.loss.link == "sigmoid"
                                      and y.shape[1] != 1):
            raise ValueError(f"class_weight needs one class label per sample (cross-entropy, "
                             f"or BCE with one output), not {self.loss!r} on targets of shape "
                             f"{y.shape}; pass sample_weight (or BCEWithLogitsLoss(pos_weight="
                             "...) for several binary outputs)")
        if y.ndim == 1:
            labels = y.astype(np.int64)
        elif self.loss.link == "sigmoid":
            labels = (y[:, 0] >= 0.5).astype(np.int64)
        else:
            labels = np.argmax(y, axis=1)
        n_classes = 2 if self.loss.link == "sigmoid" else self.n_outputs
        table = np.ones(n_classes)
        for key, value in class_weight.items():
            if not isinstance(key, (int, np.integer)) or not 0 <= key < n_classes:
                raise ValueError(f"class_weight key {key!r} is not a class index in "
                                 f"[0, {n_classes})")
            table[key] = check_number(value, f"class_weight[{key}]", low=0)
        weights = table[labels]
        return weights if w is None else w * weights

    def _train_epochs(self, x, y, w, initial_epoch, epochs, batch_size, shuffle, rng, verbose,
                      backend, callbacks, x_val, y_val, interrupts, compiling):
        """The epochs of fit; returns the last epoch's logs.  ``compiling``: the
        :class:`CompileWatch` of the fit."""
        n, logs = x.shape[0], None
        schedule = FitSchedule(self.lr_schedule, self.schedule_interval, x_val is not None,
                               self.metrics)
        batch_logs = bool(callbacks.batch_end)
        for epoch in range(initial_epoch, epochs):
            callbacks.on_epoch_begin(epoch)
            self.train()
            bar = ProgressBar(n, epoch + 1, epochs, verbose) if verbose else None
            if bar:
                note = COMPILING.get(backend.name, COMPILING["cpu"])
                compiling.announce = lambda bar=bar, note=note: bar.note(note)
            clock = TrainingClock(compiling)
            loss_sum, seen, sums = 0.0, 0, {}
            for batch, (xb, yb, wb) in enumerate(_weighted_batches(x, y, w, batch_size,
                                                                   shuffle, rng)):
                interrupts.check()     # Ctrl-C stops here: the last step is whole
                callbacks.on_batch_begin(batch)
                outputs = self._forward(_to(backend, xb), backend, self._loss_on_logits)
                yb = _to(backend, yb)
                loss, grad = self._step_loss._compute(outputs, yb, backend, wb)
                if not math.isfinite(loss):
                    raise TrainingDivergedError(
                        f"loss became {loss} at epoch {epoch + 1}, sample {seen}; lower the "
                        "learning rate, clip gradients (clip_norm=...) or check the data")
                self.optimizer.zero_grad()
                self._backward(grad, backend, False, self._loss_on_logits)
                self.optimizer.step()
                schedule.after_batch()
                loss_sum += loss * xb.shape[0]
                seen += xb.shape[0]
                self._batch_metrics(outputs, yb, sums, backend)
                if bar or batch_logs:
                    running = {"loss": loss_sum / seen, **results(self._metrics, sums, seen)}
                    callbacks.on_batch_end(batch, running)
                    if bar:
                        bar.update(seen, seen / clock.seconds(), **running)
                if self.stop_training:
                    break
            # the epoch's means over the samples it saw (all of them unless stopped early)
            logs = {"loss": loss_sum / seen, **results(self._metrics, sums, seen)}
            samples_per_second = seen / clock.seconds()     # training batches alone
            if x_val is not None:
                self.eval()
                val = self._evaluate(x_val, y_val, max(batch_size, 1024), backend,
                                     interrupts.check)
                logs.update({f"val_{k}": v for k, v in val.items()})
            if bar:
                bar.finish(samples_per_second, **logs)
            logs.update(schedule.after_epoch(logs))
            logs["samples_per_second"] = samples_per_second
            callbacks.on_epoch_end(epoch, logs)
            interrupts.check()
            if self.stop_training:
                break
        return logs

    def _evaluate(self, x, y, batch_size, backend, before_batch=None):
        loss_sum, sums = 0.0, {}
        for xb, yb in batches(x, y, batch_size):
            if before_batch is not None:
                before_batch()
            outputs = self._forward(_to(backend, xb), backend, self._loss_on_logits)
            yb = _to(backend, yb)
            loss, _ = self._step_loss._compute(outputs, yb, backend)
            loss_sum += loss * xb.shape[0]
            self._batch_metrics(outputs, yb, sums, backend)
        n = x.shape[0]
        return {"loss": loss_sum / n, **results(self._metrics, sums, n)}

    def evaluate(self, x, y, batch_size=1024):
        """Mean loss and metrics on (x, y), as a dict such as
        ``{"loss": 0.07, "accuracy": 0.98}``."""
        self._require_compiled("evaluate")
        x, y = self._prepare(x, y)
        return self._evaluate(x, y, check_number(batch_size, "batch_size", low=1, integer=True),
                              self._resolve_backend())

    def _outputs(self, x, batch_size, then=None):
        """Host array of the model outputs on ``x``, batch by batch, each passed through
        ``then(outputs, backend)`` first if given (on the backend, before the copy)."""
        x = self._host_input(x, "x")
        check_number(batch_size, "batch_size", low=1, integer=True)
        backend = self._resolve_backend()
        parts = []
        for xb in batches(x, None, batch_size):
            out = self._forward(_to(backend, xb), backend)
            parts.append(backend.to_numpy(out if then is None else then(out, backend)))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def predict(self, x, batch_size=1024):
        """Predictions for x (a NumPy array on every backend): class labels for
        classification losses (the argmax for cross-entropy; for BCE ``output >= 0`` on
        logits, ``output >= 0.5`` on probabilities, i.e. after a final Sigmoid), raw
        outputs otherwise (and before compile).  ``model(x)`` always gives the raw
        outputs."""
        outputs = self._outputs(x, batch_size)
        return outputs if self.loss is None else self.loss.predict(outputs)

    def predict_proba(self, x, batch_size=1024):
        """Class probabilities: softmax of the logits (cross-entropy) or sigmoid (BCE);
        the outputs themselves when the model ends in Softmax/Sigmoid."""
        self._require_compiled("predict_proba")
        return self._outputs(x, batch_size, self.loss.predict_proba)
