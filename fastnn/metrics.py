"""The metrics of ``compile(metrics=[...])``: one record per metric, the only list of names.

A metric is reported as a mean over the samples of an epoch (or of ``evaluate``).  fit
adds up, batch by batch, a *sum over the batch's samples* computed where the outputs
live (one backend operation: on a GPU one scalar per batch comes back, not the outputs),
and divides by the number of samples at the end; ``rmse`` takes the square root of that
mean, so it is the RMSE of all the epoch's samples, not a mean of batch RMSEs.

======================  ==========================================  =====================
name (aliases)          value over n samples                        losses
======================  ==========================================  =====================
``accuracy`` (``acc``)  fraction of correct predictions (argmax;    cross-entropy, BCE
                        BCE: per output, ``p >= 0.5``)
``top_k_accuracy``      fraction of samples whose class is among    cross-entropy
(``top_k_categorical_   the k = 5 largest outputs (Keras's
accuracy``);            ``top_k_categorical_accuracy``); other k:
``top_3_accuracy``...   ``"top_3_accuracy"`` or ``TopKAccuracy(3)``
``mse``                 ``mean((output - target)**2)``              MSE (regression)
``mae``                 ``mean(|output - target|)``                 MSE (regression)
``rmse``                ``sqrt(mean((output - target)**2))``        MSE (regression)
======================  ==========================================  =====================

Means run over all elements (samples x outputs) for the element-wise metrics.  Metrics
are not weighted by ``class_weight``/``sample_weight`` (Keras's ``metrics``; the loss is).
"""
import math
import re

import numpy as np

from .losses import Loss


class Metric:
    """One metric: ``name``, the ``total`` it sums per batch (metrics that share a
    total, ``mse`` and ``rmse``, compute it once) and how a mean becomes its value."""

    #: what the metric needs of the loss, in words (for the error message)
    needs = ""

    def __init__(self, name, total):
        self.name, self.total = name, total

    def applies(self, loss):
        """Whether the metric is defined for predictions trained with ``loss``."""
        raise NotImplementedError

    def batch_total(self, loss, outputs, targets, backend):
        """The batch's sum over samples (a Python number)."""
        raise NotImplementedError

    def value(self, mean):
        return mean


class Accuracy(Metric):
    needs = "class predictions (cross-entropy or BCE)"

    def __init__(self):
        super().__init__("accuracy", "correct")

    def applies(self, loss):
        return type(loss).correct is not Loss.correct

    def batch_total(self, loss, outputs, targets, backend):
        return loss.correct(outputs, targets, backend)


class TopKAccuracy(Metric):
    """The fraction of samples whose true class is among the ``k`` largest outputs
    (Keras's ``top_k_categorical_accuracy``, default ``k=5``).

    A class whose output ties with the k-th largest counts as in the top k (TensorFlow's
    ``in_top_k``): the sample counts when fewer than ``k`` outputs are *larger* than
    its class's.  With one-hot or soft targets the true class is the target's argmax.
    Logged as ``top_k_accuracy`` for k = 5, ``top_<k>_accuracy`` otherwise; pass
    ``TopKAccuracy(3)`` or the string ``"top_3_accuracy"`` to ``compile``.
    """

    needs = "class scores (cross-entropy)"

    def __init__(self, k=5):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"top-k accuracy needs an integer k >= 1, got {k!r}")
        self.k = int(k)
        name = "top_k_accuracy" if self.k == 5 else f"top_{self.k}_accuracy"
        super().__init__(name, name)

    def applies(self, loss):
        return loss.link == "softmax"

    def batch_total(self, loss, outputs, targets, backend):
        # the ranks of probabilities are those of their logits: one rule for both
        if targets.ndim == 1:
            return backend.top_k_matches(outputs, targets, self.k)
        return backend.top_k_matches_soft(outputs, targets, self.k)

    def __repr__(self):
        return f"TopKAccuracy(k={self.k})"


class _Regression(Metric):
    needs = "outputs compared with targets of their shape (a regression loss such as MSE)"

    def applies(self, loss):
        return loss.link is None


class MeanSquaredError(_Regression):
    def __init__(self, name="mse"):
        super().__init__(name, "squared_error")

    def batch_total(self, loss, outputs, targets, backend):
        return backend.squared_error_sum(outputs, targets) / outputs.shape[1]


class RootMeanSquaredError(MeanSquaredError):
    def __init__(self):
        super().__init__("rmse")

    def value(self, mean):
        return math.sqrt(mean)


class MeanAbsoluteError(_Regression):
    def __init__(self):
        super().__init__("mae", "abs_error")

    def batch_total(self, loss, outputs, targets, backend):
        return backend.abs_error_sum(outputs, targets) / outputs.shape[1]


#: name -> the metric (names as fit logs them, aliases as Keras spells them).
METRICS = {"accuracy": Accuracy(), "top_k_accuracy": TopKAccuracy(5),
           "mse": MeanSquaredError(), "mae": MeanAbsoluteError(),
           "rmse": RootMeanSquaredError()}
ALIASES = {"acc": "accuracy", "top_k_categorical_accuracy": "top_k_accuracy",
           "sparse_top_k_categorical_accuracy": "top_k_accuracy",
           "mean_squared_error": "mse", "mean_absolute_error": "mae",
           "root_mean_squared_error": "rmse"}
_TOP_K = re.compile(r"top_(\d+)_accuracy")


def get_metric(metric):
    """The :class:`Metric` for a name (any case, Keras's aliases, ``"top_3_accuracy"``)
    or a Metric instance."""
    if isinstance(metric, Metric):
        return metric
    if not isinstance(metric, str):
        raise TypeError(f"a metric is a name such as 'accuracy' or a fastnn.metrics.Metric, "
                        f"got {type(metric).__name__}")
    name = ALIASES.get(metric.lower(), metric.lower())
    if name in METRICS:
        return METRICS[name]
    match = _TOP_K.fullmatch(name)
    if match:
        return TopKAccuracy(int(match.group(1)))
    raise ValueError(f"unknown metric {metric!r}; valid names: "
                     f"{', '.join(sorted([*METRICS, *ALIASES]))}, top_<k>_accuracy")


def check_metrics(metrics, loss):
    """``{name: Metric}`` of ``compile(metrics=...)`` for ``loss``, in order, without
    repeats; a metric the loss cannot report is a ValueError listing those it can."""
    if metrics is None:
        return {}
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    chosen = {}
    for metric in metrics:
        metric = get_metric(metric)
        if not metric.applies(loss):
            supported = [name for name, m in METRICS.items() if m.applies(loss)]
            raise ValueError(f"metric {metric.name!r} is not defined for {loss!r} (it needs "
                             f"{metric.needs}); this loss supports {supported or 'none'}")
        chosen.setdefault(metric.name, metric)
    return chosen


def add_batch(metrics, loss, outputs, targets, backend, totals):
    """Add a batch's totals of ``metrics`` (``{name: Metric}``) into ``totals``; ``loss``
    is the one the step computed (it knows what the outputs are)."""
    done = set()
    for metric in metrics.values():
        if metric.total not in done:
            done.add(metric.total)
            totals[metric.total] = totals.get(metric.total, 0.0) + metric.batch_total(
                loss, outputs, targets, backend)
    return totals


def results(metrics, totals, n):
    """``{name: value}`` of ``metrics`` over ``n`` samples from their ``totals``."""
    return {name: metric.value(totals[metric.total] / n) for name, metric in metrics.items()}
