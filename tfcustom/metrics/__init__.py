"""Exact, distribution-safe classification metrics for sparse labels and logits.

Every metric is a stateful `keras.metrics.Metric` updated with
``update_state(y_true, y_pred_logits, sample_weight=None)`` where ``y_true``
holds integer class ids ``[batch]`` (or ``[batch, 1]``) and ``y_pred`` holds
logits ``[batch, num_classes]``; the predicted class is ``argmax(y_pred)``.

How the numbers stay exact:

* The state is a set of **counts** (a sample-weighted confusion matrix, or
  per-bin sums for ECE); ``result()`` derives everything from them, there are
  no running averages.
* Every state variable is created with ``aggregation="sum"`` (and on-read
  synchronisation), so under a ``tf.distribute`` strategy each replica
  accumulates its own counts and reading the metric sums them: distributed
  evaluation gives the same value as evaluating all the data on one device.
* ``result()`` is the all-replica value wherever it is read: in a replica
  context (inside ``strategy.run``, where ``keras.Model.fit`` reads metrics
  for its per-batch logs) it sums the replicas' counts with an all-reduce
  first, so the per-batch values Keras shows under ``MirroredStrategy`` are
  exact too (Keras' own metrics report each replica's local value there and
  Keras averages them: keras-team/keras#21054).
* ``num_classes`` may be left out: it is then taken from the last dimension
  of the first batch's ``y_pred`` (the [`tfcustom.Trainer`][tfcustom.Trainer] sets it from
  the model's output before training; see `Precision.build_state`).
* Counts are accumulated in ``float64`` (integer counts stay exact up to
  2**53 examples instead of float32's 2**24); ``result()`` is returned in the
  metric's ``dtype`` (``float32`` by default). TPUs have no float64: these
  metrics target CPU and GPU.

Invalid labels: a label outside ``[0, num_classes)`` raises
``tf.errors.InvalidArgumentError`` from a ``tf.debugging`` assertion in
``update_state``, eagerly and inside ``tf.function`` (``model.fit``,
``strategy.run``). XLA compiles assertions away; under ``jit_compile=True``
such examples are dropped from every count (never counted as some class) and
the data layer must validate labels.

Use [`get`][tfcustom.metrics.get] to build a metric from its name:

>>> import tfcustom.metrics
>>> tfcustom.metrics.get("f1", num_classes=3).average
'macro'
"""

from __future__ import annotations

import keras

from tfcustom.errors import check
from tfcustom.metrics.balanced_accuracy import BalancedAccuracy
from tfcustom.metrics.calibration import ExpectedCalibrationError
from tfcustom.metrics.confusion_matrix import ConfusionMatrix
from tfcustom.metrics.scores import F1Score, Precision, Recall

__all__ = [
    "Precision",
    "Recall",
    "F1Score",
    "ConfusionMatrix",
    "BalancedAccuracy",
    "ExpectedCalibrationError",
    "get",
    "names",
]

_NEEDS_NUM_CLASSES = {
    "precision": Precision,
    "recall": Recall,
    "f1": F1Score,
    "f1_score": F1Score,
    "balanced_accuracy": BalancedAccuracy,
    "confusion_matrix": ConfusionMatrix,
}
_NAMES = sorted([*_NEEDS_NUM_CLASSES, "accuracy", "ece", "expected_calibration_error"])


def names() -> list[str]:
    """Return the names [`get`][tfcustom.metrics.get] accepts, sorted.

    Returns:
      The names.

    Examples:
        >>> "f1" in names() and "ece" in names()
        True
    """
    return list(_NAMES)


def get(name: str, num_classes: int | None = None, **kwargs) -> keras.metrics.Metric:
    """Build a metric from its registry name.

    ``"accuracy"`` gives ``keras.metrics.SparseCategoricalAccuracy`` and
    ``"ece"`` (or ``"expected_calibration_error"``) gives
    [`ExpectedCalibrationError`][tfcustom.metrics.ExpectedCalibrationError]; ``"precision"``, ``"recall"``,
    ``"f1"`` (or ``"f1_score"``), ``"balanced_accuracy"`` and
    ``"confusion_matrix"`` take ``num_classes`` (default: inferred from the
    first batch's predictions). Each metric reports under its own ``name``
    (``F1Score``: ``"f1_score"``).
    Extra keyword arguments go to the constructor (e.g. ``average=``,
    ``num_bins=``).

    Args:
      name: one of [`names`][tfcustom.metrics.names]; an unknown name raises
        [`ConfigError`][tfcustom.errors.ConfigError] listing the valid names.
      num_classes: for the metrics that count per class (None: from the first batch).
      **kwargs: the metric's constructor arguments.

    Returns:
      A new ``keras.metrics.Metric``.

    Examples:
        >>> get("recall", 10, average="weighted").average
        'weighted'
        >>> get("f1", 3).name
        'f1_score'
    """
    check(
        isinstance(name, str) and name in _NAMES,
        "unknown metric name",
        name,
        f"choose one of: {', '.join(_NAMES)}",
    )
    if name == "accuracy":
        return keras.metrics.SparseCategoricalAccuracy(**kwargs)
    if name in ("ece", "expected_calibration_error"):
        return ExpectedCalibrationError(**kwargs)
    return _NEEDS_NUM_CLASSES[name](num_classes=num_classes, **kwargs)


# ``doctest.testmod(tfcustom.metrics)`` only collects objects defined in this
# module; list the re-exported ones so their docstring examples still run.
__test__ = {name: globals()[name] for name in __all__ if name not in ("get", "names")}
