"""Learning-rate schedules: PyTorch's semantics, for the explicit loop and for ``fit``.

A schedule changes the ``"lr"`` of every parameter group of an optimiser::

    opt = fnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = fnn.StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(100):
        for xb, yb in fnn.batches(...):
            ...; opt.step()
        sched.step()                     # ReduceLROnPlateau: sched.step(val_loss)

or, with ``fit`` (one step per epoch by default; ReduceLROnPlateau watches ``val_loss``
when there is validation data, else ``loss``)::

    model.compile(optimizer="adam", loss="cross_entropy",
                  lr_schedule=fnn.LinearWarmup(warmup_steps=2,
                                               then=fnn.CosineAnnealingLR(T_max=18)))

As in PyTorch, creating (or binding) a schedule sets the learning rate of step 0 and
each ``step()`` moves to the next one; the base learning rate of each group is its lr
when the schedule was bound.  ``StepLR``, ``CosineAnnealingLR`` and ``LinearWarmup`` are
closed forms of the step count (``lr_at(base_lr, step)``); ``ReduceLROnPlateau`` reacts to
a metric.  ``state_dict()`` / ``load_state_dict()`` (and ``model.save``) keep the step
count and the plateau counters, so a resumed run continues the schedule.
"""
import math
import numbers

from .optim import Optimizer
from .validation import check_choice, check_number


class LRSchedule:
    """Base class: binding to an optimiser, the step count, state_dict.

    Attributes
    ----------
    optimizer : Optimizer or None
    last_step : int
        How many times :meth:`step` was called since binding (PyTorch's ``last_epoch``).
    base_lrs : list of float
        Each parameter group's lr when the schedule was bound.
    """

    def __init__(self, optimizer=None):
        self.optimizer = None
        self.last_step = 0
        self.base_lrs = []
        if optimizer is not None:
            self.bind(optimizer)

    @staticmethod
    def _check_optimizer(optimizer, cls):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{cls}'s first argument is the optimizer, got "
                            f"{type(optimizer).__name__} {optimizer!r}; without an optimizer "
                            "pass the settings by keyword, e.g. StepLR(step_size=10)")
        if not optimizer.param_groups:
            raise ValueError(f"{cls}: the optimizer has no parameters yet; bind it first "
                             "(or let model.compile(optimizer=..., lr_schedule=...) do both)")

    def bind(self, optimizer):
        """Drive ``optimizer``'s learning rates from now on (step 0); returns ``self``."""
        self._check_optimizer(optimizer, type(self).__name__)
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()
        return self

    def _require_bound(self):
        if self.optimizer is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to an optimizer: create "
                               "it with one, or pass it to model.compile(lr_schedule=...)")

    def step(self):
        """Advance one step (an epoch, or a batch if you step per batch)."""
        self._require_bound()
        self.last_step += 1
        self._apply()

    def _apply(self):
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(base, self.last_step)

    def lr_at(self, base_lr, step):
        """The learning rate at ``step`` for a group whose base lr is ``base_lr``."""
        raise NotImplementedError

    def get_last_lr(self):
        """The current learning rate of every parameter group."""
        self._require_bound()
        return [group["lr"] for group in self.optimizer.param_groups]

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """``{"last_step": int, "base_lrs": [...]}`` (JSON-compatible)."""
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state):
        """Continue from a :meth:`state_dict`: the step count and base lrs, and the
        learning rates they give."""
        self._require_bound()
        base_lrs = [check_number(v, "base_lrs", low=0) for v in state["base_lrs"]]
        if len(base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"schedule state has {len(base_lrs)} base learning rates, the "
                             f"optimizer {len(self.optimizer.param_groups)} parameter groups")
        self.last_step = check_number(state["last_step"], "last_step", low=0, integer=True)
        self.base_lrs = base_lrs
        self._apply()

    def get_config(self):
        """The constructor's arguments (without the optimizer), JSON-compatible."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _optimizer_or_none(optimizer, cls):
    if optimizer is not None:
        LRSchedule._check_optimizer(optimizer, cls)
    return optimizer


class StepLR(LRSchedule):
    """Step decay: ``lr = base_lr * gamma ** (step // step_size)``.

    Parameters
    ----------
    optimizer : Optimizer, optional
        None: bound later, e.g. by ``model.compile(lr_schedule=...)``.
    step_size : int
        Steps (epochs) between two decays, >= 1.
    gamma : float, default 0.1
        Factor of each decay, > 0.
    """

    def __init__(self, optimizer=None, step_size=None, gamma=0.1):
        optimizer = _optimizer_or_none(optimizer, "StepLR")
        if step_size is None:
            raise TypeError("StepLR needs step_size (steps between two decays)")
        self.step_size = check_number(step_size, "step_size", low=1, integer=True)
        self.gamma = check_number(gamma, "gamma", low=0, low_open=True)
        super().__init__(optimizer)

    def lr_at(self, base_lr, step):
        return base_lr * self.gamma ** (step // self.step_size)

    def get_config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}


class CosineAnnealingLR(LRSchedule):
    """Cosine annealing from the base lr to ``eta_min`` over ``T_max`` steps::

        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2

    the closed form of PyTorch's schedule.  Past ``T_max`` the cosine goes on (the lr
    rises again, period ``2 T_max``), as in PyTorch: choose ``T_max`` = the steps you train.

    Parameters
    ----------
    optimizer : Optimizer, optional
    T_max : int
        Steps (epochs) of the half period, >= 1.
    eta_min : float, default 0.0
        The lowest learning rate, >= 0.
    """

    def __init__(self, optimizer=None, T_max=None, eta_min=0.0):
        optimizer = _optimizer_or_none(optimizer, "CosineAnnealingLR")
        if T_max is None:
            raise TypeError("CosineAnnealingLR needs T_max (steps from the base lr to eta_min)")
        self.T_max = check_number(T_max, "T_max", low=1, integer=True)
        self.eta_min = check_number(eta_min, "eta_min", low=0)
        super().__init__(optimizer)

    def lr_at(self, base_lr, step):
        return self.eta_min + (base_lr - self.eta_min) * (
            1 + math.cos(math.pi * step / self.T_max)) / 2

    def get_config(self):
        return {"T_max": self.T_max, "eta_min": self.eta_min}


class LinearWarmup(LRSchedule):
    """Linear warm-up over ``warmup_steps`` steps, then constant or another schedule::

        step < warmup_steps:  lr = base_lr * (start_factor + (1 - start_factor) * step / warmup_steps)
        otherwise:            lr = then.lr_at(base_lr, step - warmup_steps)   (base_lr without then)

    With the default ``start_factor = 1 / (warmup_steps + 1)`` this is
    ``base_lr * (step + 1) / (warmup_steps + 1)``: no step runs at lr 0 and the base lr is
    reached at ``step = warmup_steps``, where ``then`` starts from its own step 0.

    Parameters
    ----------
    optimizer : Optimizer, optional
    warmup_steps : int
        >= 1.
    start_factor : float, optional
        Fraction of the base lr at step 0, in [0, 1].
    then : LRSchedule, optional
        A closed-form schedule (StepLR, CosineAnnealingLR, LinearWarmup) that takes over
        after the warm-up; give it no optimizer (only its formula is used).
    """

    def __init__(self, optimizer=None, warmup_steps=None, start_factor=None, then=None):
        optimizer = _optimizer_or_none(optimizer, "LinearWarmup")
        if warmup_steps is None:
            raise TypeError("LinearWarmup needs warmup_steps")
        self.warmup_steps = check_number(warmup_steps, "warmup_steps", low=1, integer=True)
        self.start_factor = (1.0 / (self.warmup_steps + 1) if start_factor is None else
                             check_number(start_factor, "start_factor", low=0, high=1))
        if then is not None and (not isinstance(then, LRSchedule)
                                 or isinstance(then, ReduceLROnPlateau)):
            raise TypeError("then must be a closed-form schedule (StepLR, CosineAnnealingLR, "
                            f"LinearWarmup), got {type(then).__name__}")
        if then is not None and then.optimizer is not None:
            raise ValueError("the schedule after the warm-up must not have an optimizer of "
                             "its own (LinearWarmup drives the optimizer)")
        self.then = then
        super().__init__(optimizer)

    def lr_at(self, base_lr, step):
        if step < self.warmup_steps:
            return base_lr * (self.start_factor
                              + (1 - self.start_factor) * step / self.warmup_steps)
        if self.then is None:
            return base_lr
        return self.then.lr_at(base_lr, step - self.warmup_steps)

    def get_config(self):
        return {"warmup_steps": self.warmup_steps, "start_factor": self.start_factor,
                "then": None if self.then is None else schedule_spec(self.then)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("then") is not None:
            config["then"] = schedule_from_spec(config["then"])
        return cls(**config)


class ReduceLROnPlateau(LRSchedule):
    """Multiply the learning rate by ``factor`` when a metric stops improving (PyTorch's
    ReduceLROnPlateau).

    ``step(metric)``, once per epoch: the metric improves when it is below
    ``best * (1 - threshold)`` (mode "min", threshold_mode "rel"; "abs":
    ``best - threshold``; mode "max" the other way round).  After more than ``patience``
    steps without improvement every group's lr becomes ``max(lr * factor, min_lr)``
    (changes smaller than ``eps`` are skipped), then ``cooldown`` steps pass before
    counting resumes.

    Parameters
    ----------
    optimizer : Optimizer, optional
    mode : "min" or "max", default "min"
    factor : float, default 0.1
        In (0, 1).
    patience : int, default 10
    threshold : float, default 1e-4
    threshold_mode : "rel" or "abs", default "rel"
    cooldown : int, default 0
    min_lr : float or list of float, default 0.0
        Lower bound of the lr, one for all groups or one per group.
    eps : float, default 1e-8
    monitor : str, optional
        Under ``fit``: the logged value to watch (``"val_loss"``, ``"val_accuracy"``,
        ...); default ``val_loss`` with validation data, else ``loss``.
    """

    def __init__(self, optimizer=None, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8, monitor=None):
        optimizer = _optimizer_or_none(optimizer, "ReduceLROnPlateau")
        self.mode = check_choice(mode, "mode", {"min": "min", "max": "max"})
        self.factor = check_number(factor, "factor", low=0, high=1, low_open=True,
                                   high_open=True)
        self.patience = check_number(patience, "patience", low=0, integer=True)
        self.threshold = check_number(threshold, "threshold", low=0)
        self.threshold_mode = check_choice(threshold_mode, "threshold_mode",
                                           {"rel": "rel", "abs": "abs"})
        self.cooldown = check_number(cooldown, "cooldown", low=0, integer=True)
        if isinstance(min_lr, (list, tuple)):
            self.min_lr = [check_number(v, "min_lr", low=0) for v in min_lr]
        else:
            self.min_lr = check_number(min_lr, "min_lr", low=0)
        self.eps = check_number(eps, "eps", low=0)
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a logged value, got {monitor!r}")
        self.monitor = monitor
        self._reset()
        super().__init__(optimizer)

    def _reset(self):
        self.best = None                 # no metric seen yet (PyTorch: +-inf)
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def bind(self, optimizer):
        self._check_optimizer(optimizer, "ReduceLROnPlateau")
        if isinstance(self.min_lr, list) and len(self.min_lr) != len(optimizer.param_groups):
            raise ValueError(f"min_lr has {len(self.min_lr)} values, the optimizer "
                             f"{len(optimizer.param_groups)} parameter groups")
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self._reset()
        return self

    def is_better(self, current, best):
        """Whether ``current`` improves on ``best`` by more than the threshold."""
        if best is None:
            return not math.isnan(current)
        if self.threshold_mode == "rel":
            scale = 1 - self.threshold if self.mode == "min" else 1 + self.threshold
            return current < best * scale if self.mode == "min" else current > best * scale
        if self.mode == "min":
            return current < best - self.threshold
        return current > best + self.threshold

    def step(self, metric=None):
        """Record ``metric`` (a number: the epoch's validation loss, ...) and reduce the
        learning rate if it has not improved for more than ``patience`` steps."""
        self._require_bound()
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
            raise TypeError("ReduceLROnPlateau.step needs the monitored metric, e.g. "
                            f"sched.step(val_loss); got {metric!r}")
        current = float(metric)
        self.last_step += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _reduce(self):
        groups = self.optimizer.param_groups
        floors = self.min_lr if isinstance(self.min_lr, list) else [self.min_lr] * len(groups)
        for group, floor in zip(groups, floors):
            new = max(group["lr"] * self.factor, floor)
            if group["lr"] - new > self.eps:
                group["lr"] = new

    def lr_at(self, base_lr, step):
        raise TypeError("ReduceLROnPlateau's learning rate depends on the metric, not only "
                        "on the step count")

    def state_dict(self):
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs),
                "best": self.best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state):
        """The counters and best metric (the learning rates are the optimizer's)."""
        self._require_bound()
        best = state["best"]
        self.best = None if best is None else check_number(best, "best")
        self.num_bad_epochs = check_number(state["num_bad_epochs"], "num_bad_epochs", low=0,
                                           integer=True)
        self.cooldown_counter = check_number(state["cooldown_counter"], "cooldown_counter",
                                             low=0, integer=True)
        self.last_step = check_number(state["last_step"], "last_step", low=0, integer=True)
        self.base_lrs = list(state.get("base_lrs", self.base_lrs))

    def get_config(self):
        return {"mode": self.mode, "factor": self.factor, "patience": self.patience,
                "threshold": self.threshold, "threshold_mode": self.threshold_mode,
                "cooldown": self.cooldown, "min_lr": self.min_lr, "eps": self.eps,
                "monitor": self.monitor}


# --------------------------------------------------------------------------- fit
INTERVALS = {"epoch": "epoch", "batch": "batch"}


def attach_schedule(schedule, optimizer, interval):
    """What ``compile(lr_schedule=..., schedule_interval=...)`` does: checks, and binds
    ``schedule`` to ``optimizer`` unless it already drives it (then it keeps its state)."""
    check_choice(interval, "schedule_interval", INTERVALS)
    if schedule is None:
        return None
    if not isinstance(schedule, LRSchedule):
        raise TypeError(f"lr_schedule must be a schedule such as fastnn.StepLR(step_size=10), "
                        f"got {type(schedule).__name__}")
    if isinstance(schedule, ReduceLROnPlateau) and interval != "epoch":
        raise ValueError("ReduceLROnPlateau watches a per-epoch metric: use "
                         "schedule_interval='epoch'")
    if schedule.optimizer is not optimizer:
        schedule.bind(optimizer)
    return schedule


class FitSchedule:
    """How ``fit`` steps a schedule: after every batch or every epoch (ReduceLROnPlateau:
    every epoch, on ``monitor``, default ``val_loss`` with validation data else ``loss``).
    A no-op without a schedule."""

    def __init__(self, schedule, interval, has_validation, metrics=()):
        self.schedule = schedule
        self.per_batch = schedule is not None and interval == "batch"
        self.monitor = None
        if isinstance(schedule, ReduceLROnPlateau):
            self.monitor = schedule.monitor or ("val_loss" if has_validation else "loss")
            logged = ["loss", *metrics]
            logged += [f"val_{k}" for k in logged] if has_validation else []
            if self.monitor not in logged:
                raise ValueError(f"ReduceLROnPlateau monitors {self.monitor!r}, which this fit "
                                 f"does not log; it logs {', '.join(logged)}")

    def after_batch(self):
        if self.per_batch:
            self.schedule.step()

    def after_epoch(self, logs):
        """Step the schedule at the end of an epoch; returns ``{"lr": the first group's
        learning rate during the epoch}`` for the history (``{}`` without a schedule)."""
        if self.schedule is None:
            return {}
        lr = self.schedule.optimizer.param_groups[0]["lr"]
        if self.monitor is not None:
            self.schedule.step(logs[self.monitor])
        elif not self.per_batch:
            self.schedule.step()
        return {"lr": lr}


#: Schedules by class name (for saved models): the one list.
SCHEDULES = {cls.__name__: cls for cls in (StepLR, CosineAnnealingLR, LinearWarmup,
                                           ReduceLROnPlateau)}


def schedule_spec(schedule):
    """``{"type": class name, "config": ...}``: what a saved model stores."""
    return {"type": type(schedule).__name__, "config": schedule.get_config()}


def schedule_from_spec(spec):
    """The (unbound) schedule described by :func:`schedule_spec`."""
    cls = SCHEDULES.get(spec.get("type"))
    if cls is None:
        raise ValueError(f"unknown schedule {spec.get('type')!r}; valid: "
                         f"{', '.join(sorted(SCHEDULES))}")
    return cls.from_config(spec.get("config", {}))
