"""Callbacks for ``fit``, with Keras's shape.

``model.fit(..., callbacks=[...])`` calls, on each callback, in the order given::

    set_model(model), set_params(params)
    on_train_begin(logs)
      on_epoch_begin(epoch, logs)               # epoch: 0-based, counts from initial_epoch
        on_batch_begin(batch, logs)             # training batches only
        on_batch_end(batch, logs)               # logs: running means of the epoch so far
      on_epoch_end(epoch, logs)                 # logs: loss, metrics, val_*, lr, ...
    on_train_end(logs)                          # not called when fit raises

A callback stops training by setting ``model.stop_training = True`` (checked after
every batch and every epoch; the epoch in progress is still validated and recorded, as
in Keras).  ``on_epoch_end`` may add entries to ``logs``; the :class:`fastnn.History`
that fit returns records the logs after every callback has seen them.

``params``: ``{"epochs", "initial_epoch", "steps" (batches per epoch), "samples",
"verbose", "do_validation", "metrics" (the names fit logs every epoch)}``.

A NaN or infinite batch loss raises :class:`fastnn.TrainingDivergedError` before that
batch's update (Keras's ``TerminateOnNaN``, always on); Ctrl-C raises
``KeyboardInterrupt`` between whole steps (:mod:`fastnn.interrupts`).  In both cases
``model.history`` keeps the epochs completed before.
"""
import csv
import math
import os

from .schedules import FitSchedule, LRSchedule, attach_schedule
from .validation import check_choice, check_number


class Callback:
    """Base class: every hook does nothing; ``self.model`` and ``self.params`` are set by
    ``fit`` before ``on_train_begin``."""

    model = None
    params = None

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        """Before the first epoch."""

    def on_train_end(self, logs=None):
        """After the last epoch (``logs``: those of the last epoch)."""

    def on_epoch_begin(self, epoch, logs=None):
        """Before the first batch of ``epoch``."""

    def on_epoch_end(self, epoch, logs=None):
        """After ``epoch`` was trained and validated; entries added to ``logs`` go to
        the history."""

    def on_batch_begin(self, batch, logs=None):
        """Before training batch ``batch`` (0-based within the epoch)."""

    def on_batch_end(self, batch, logs=None):
        """After the optimiser step of batch ``batch``."""


def _overrides(callback, hook):
    return getattr(type(callback), hook) is not getattr(Callback, hook)


class CallbackList:
    """The callbacks of one ``fit`` call, called in order.  Batch hooks are only called
    (and batch logs only built) when some callback defines them."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for i, callback in enumerate(self.callbacks):
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks[{i}] is a {type(callback).__name__}, not a "
                                "fastnn.Callback (subclass it and override its on_* methods)")
            callback.set_model(model)
            callback.set_params(params)
        self.batch_begin = [c for c in self.callbacks if _overrides(c, "on_batch_begin")]
        self.batch_end = [c for c in self.callbacks if _overrides(c, "on_batch_end")]

    def on_train_begin(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_train_end(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs):
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def on_batch_begin(self, batch):
        for callback in self.batch_begin:
            callback.on_batch_begin(batch, None)

    def on_batch_end(self, batch, logs):
        for callback in self.batch_end:
            callback.on_batch_end(batch, logs)


# --------------------------------------------------------------------------- monitoring
_MODES = {"auto": "auto", "min": "min", "max": "max"}


class _Monitor:
    """The one rule of "better" that EarlyStopping and ModelCheckpoint share: ``mode``
    "min" or "max" ("auto": max for accuracies, min otherwise), by more than
    ``min_delta``."""

    def __init__(self, monitor, mode, min_delta, owner):
        if not isinstance(monitor, str):
            raise TypeError(f"{owner}: monitor must be a logged name such as 'val_loss', "
                            f"got {monitor!r}")
        self.monitor, self.owner = monitor, owner
        mode = check_choice(mode, "mode", _MODES)
        if mode == "auto":
            mode = "max" if monitor.endswith(("accuracy", "acc")) else "min"
        self.mode = mode
        self.min_delta = abs(check_number(min_delta, "min_delta"))

    def check_logged(self, params):
        """At train begin: the monitored name must be one that fit logs."""
        logged = params["metrics"]
        if self.monitor not in logged:
            hint = (" (pass validation_data=... or validation_split=...)"
                    if self.monitor.startswith("val_") and not params["do_validation"]
                    else "")
            raise ValueError(f"{self.owner} monitors {self.monitor!r}, which this fit does "
                             f"not log{hint}; it logs {', '.join(logged)}")

    def value(self, logs):
        return logs[self.monitor]

    def better(self, current, best):
        if best is None:
            return not math.isnan(current)
        if self.mode == "min":
            return current < best - self.min_delta
        return current > best + self.min_delta


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A name fit logs: ``loss``, a metric, or their ``val_`` versions.
    min_delta : float, default 0
        An improvement must beat the best value by more than this.
    patience : int, default 0
        Epochs without improvement before stopping (0: the first one stops).
    mode : "auto", "min" or "max"
        "auto": "max" for accuracies, "min" otherwise.
    restore_best_weights : bool, default False
        When training ends (stopped early or not), put back the parameters and buffers
        of the best epoch.
    verbose : 0 or 1

    Attributes
    ----------
    best, best_epoch : the best monitored value and its epoch
    stopped_epoch : the epoch after which training stopped (0: it did not stop early)
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False, verbose=0):
        self._monitor = _Monitor(monitor, mode, min_delta, "EarlyStopping")
        self.monitor = monitor
        self.patience = check_number(patience, "patience", low=0, integer=True)
        self.restore_best_weights = bool(restore_best_weights)
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        self._monitor.check_logged(self.params)
        self.wait, self.stopped_epoch = 0, 0
        self.best, self.best_epoch, self.best_weights = None, None, None
        self._first = self.params["initial_epoch"]

    def on_epoch_end(self, epoch, logs=None):
        current = self._monitor.value(logs)
        self.wait += 1
        if self._monitor.better(current, self.best):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
        elif self.wait >= self.patience and epoch > self._first:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.best_weights is not None:
            if self.verbose:
                print(f"Restoring the weights of epoch {self.best_epoch + 1} "
                      f"({self.monitor} {self.best:.4f})")
            self.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (:meth:`Sequential.save`: the safe, atomic ``.npz`` format) after
    every epoch, or only when ``monitor`` improved.

    Parameters
    ----------
    filepath : str or path
        May hold ``str.format`` fields: ``{epoch}`` (1-based) and any logged name, e.g.
        ``"ckpt/model-{epoch:03d}-{val_loss:.3f}.fnn"``.  Load with :func:`fastnn.load`.
    monitor : str, default "val_loss"
    save_best_only : bool, default False
        Save only when ``monitor`` beats the best value so far.
    mode : "auto", "min" or "max"
    include_optimizer : bool, default True
        Also save the optimiser state (and schedule), to resume training.
    verbose : 0 or 1
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto",
                 include_optimizer=True, verbose=0):
        self.filepath = os.fspath(filepath)
        self._monitor = _Monitor(monitor, mode, 0.0, "ModelCheckpoint")
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.include_optimizer = bool(include_optimizer)
        self.verbose = verbose
        self.best = None

    def on_train_begin(self, logs=None):
        if self.save_best_only:
            self._monitor.check_logged(self.params)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only:
            current = self._monitor.value(logs)
            if not self._monitor.better(current, self.best):
                return
            self.best = current
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"ModelCheckpoint: cannot fill in {self.filepath!r} ({error!r}); "
                             f"its fields may be {{epoch}} and {', '.join(logs)}") from None
        if self.verbose:
            print(f"Epoch {epoch + 1}: saving the model to {path}")
        self.model.save(path, include_optimizer=self.include_optimizer)


class CSVLogger(Callback):
    """Write one CSV row per epoch: ``epoch`` (0-based, as ``History.epoch``) and the
    epoch's logs, in sorted column order (Keras's layout).

    Parameters
    ----------
    filename : str or path
    separator : str, default ","
    append : bool, default False
        Add to an existing file (no second header) instead of replacing it.

    The file is opened and closed for every row, so it is complete after Ctrl-C.
    """

    def __init__(self, filename, separator=",", append=False):
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = bool(append)

    def on_train_begin(self, logs=None):
        self.keys = None
        exists = os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._header = not (self.append and exists)
        if not self.append:
            open(self.filename, "w").close()

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None:
            self.keys = sorted(logs)
        with open(self.filename, "a", newline="") as file:
            writer = csv.writer(file, delimiter=self.separator)
            if self._header:
                writer.writerow(["epoch", *self.keys])
                self._header = False
            writer.writerow([epoch, *(logs.get(k, "NA") for k in self.keys)])


class LearningRateScheduler(Callback):
    """Set the learning rate at every epoch.

    Parameters
    ----------
    schedule : callable or LRSchedule
        Keras's form: ``schedule(epoch, lr) -> new lr`` (epoch 0-based), applied to every
        parameter group at the start of each epoch; or a schedule of
        :mod:`fastnn.schedules` (``StepLR(step_size=10)``, ``ReduceLROnPlateau()``, ...),
        bound to the model's optimiser when training begins and stepped after each epoch,
        as ``compile(lr_schedule=...)`` does.
    verbose : 0 or 1

    The epoch's learning rate (the first group's) is logged as ``lr``.
    """

    def __init__(self, schedule, verbose=0):
        if not (isinstance(schedule, LRSchedule) or callable(schedule)):
            raise TypeError("schedule must be a function (epoch, lr) -> lr or a schedule "
                            f"such as fastnn.StepLR(step_size=10), got {schedule!r}")
        self.schedule = schedule
        self.verbose = verbose
        self._fit = None

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        if isinstance(self.schedule, LRSchedule):
            if self.schedule is self.model.lr_schedule:
                raise ValueError("this schedule is already stepped by compile(lr_schedule=...)"
                                 "; pass it in one place only")
            attach_schedule(self.schedule, optimizer, "epoch")
            self._fit = FitSchedule(self.schedule, "epoch", self.params["do_validation"],
                                    self.model.metrics)

    def on_epoch_begin(self, epoch, logs=None):
        if self._fit is not None:
            return
        for group in self.model.optimizer.param_groups:
            lr = self.schedule(epoch, group["lr"])
            group["lr"] = check_number(lr, "the learning rate the schedule returned", low=0)
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {self.model.optimizer.param_groups[0]['lr']}")

    def on_epoch_end(self, epoch, logs=None):
        if self._fit is not None:
            logs.update(self._fit.after_epoch(logs))
        else:
            logs["lr"] = self.model.optimizer.param_groups[0]["lr"]


def check_callbacks(callbacks):
    """``fit``'s ``callbacks`` argument as a list (one callback alone is accepted)."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list of fastnn.Callback, got "
                        f"{type(callbacks).__name__}")
    return list(callbacks)
