"""Exact, distribution-safe classification metrics for sparse labels and logits.

Every metric is a stateful :class:`keras.metrics.Metric` updated with
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
  of the first batch's ``y_pred`` (the :class:`tfcustom.Trainer` sets it from
  the model's output before training; see :meth:`Precision.build_state`).
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

Use :func:`get` to build a metric from its name:

>>> import tfcustom.metrics
>>> tfcustom.metrics.get("f1", num_classes=3).average
'macro'
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.errors import check, check_one_of, check_positive_int

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

_AVERAGES = (None, "macro", "micro", "weighted")
_COUNT_DTYPE = tf.float64


# --------------------------------------------------------------------------
# input standardisation shared by all metrics
# --------------------------------------------------------------------------


def _standardize(y_true, y_pred, sample_weight, num_classes=None):
    """Return flat ``(labels int32 [n], logits [n, C], weights f64 [n], C)``.

    Adds assertions that labels lie in ``[0, C)`` and that the number of
    logits matches ``num_classes`` (when given).
    """
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:
        y_pred = tf.cast(y_pred, tf.float32)
    c = tf.shape(y_pred)[-1]
    if num_classes is not None and y_pred.shape[-1] is not None:
        check(
            y_pred.shape[-1] == num_classes,
            "y_pred must hold one logit per class",
            f"y_pred.shape={y_pred.shape}, num_classes={num_classes}",
            "make the model output num_classes logits or fix the metric's num_classes",
        )
    y_pred = tf.reshape(y_pred, [-1, c])
    y_true = tf.convert_to_tensor(y_true)
    if y_true.dtype.is_floating:
        y_true = tf.round(y_true)
    labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    if sample_weight is None:
        weights = tf.ones(tf.shape(labels), _COUNT_DTYPE)
    else:
        weights = tf.cast(tf.convert_to_tensor(sample_weight), _COUNT_DTYPE)
        weights = tf.broadcast_to(
            tf.reshape(weights, [-1]) if weights.shape.rank else weights, tf.shape(labels)
        )
    limit = c if num_classes is None else num_classes
    asserts = [
        tf.debugging.assert_equal(
            tf.shape(labels)[0],
            tf.shape(y_pred)[0],
            message="tfcustom metric: y_true must hold one class id per row of y_pred",
        ),
        tf.debugging.assert_non_negative(labels, message="tfcustom metric: labels must be >= 0"),
        tf.debugging.assert_less(
            labels, limit, message="tfcustom metric: labels must be < num_classes"
        ),
    ]
    with tf.control_dependencies(asserts):
        labels = tf.identity(labels)
    # Belt and braces for XLA (where assertions are compiled away): examples
    # with an invalid label get weight 0 and are clamped into range so they
    # cannot be counted as any class.
    valid = tf.logical_and(labels >= 0, labels < limit)
    weights = tf.where(valid, weights, tf.zeros_like(weights))
    labels = tf.where(valid, labels, tf.zeros_like(labels))
    return labels, y_pred, weights, c


def _total(variable):
    """``variable``'s value summed over the replicas, wherever it is read.

    In a cross-replica context an on-read ``sum`` variable already reads as
    the sum; in a replica context (inside ``strategy.run``) it reads as this
    replica's own copy, so the copies are summed by an all-reduce (every
    replica reads the metric there, as ``keras.Model.fit`` does).
    """
    value = tf.convert_to_tensor(variable)
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and tf.distribute.has_strategy() and ctx.num_replicas_in_sync > 1:
        value = ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value


def _classes_of(y_pred, who: str) -> int:
    """The static number of classes of a batch of predictions."""
    shape = tf.convert_to_tensor(y_pred).shape
    c = shape[-1] if shape.rank else None
    check(c is not None and c >= 1, f"{who} cannot infer num_classes from y_pred of unknown last dimension", str(shape),
          f"pass {who}(num_classes=...)")
    return int(c)


def _safe_div(a, b):
    """``a / b`` with 0 where ``b == 0`` (sklearn's ``zero_division=0``)."""
    return tf.math.divide_no_nan(a, b)


# --------------------------------------------------------------------------
# confusion-matrix based metrics
# --------------------------------------------------------------------------


class _ConfusionMatrixBase(keras.metrics.Metric):
    """Accumulates a sample-weighted ``[C, C]`` confusion matrix (rows true)."""

    def __init__(self, num_classes=None, name=None, dtype=None):
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        super().__init__(name=name, dtype=dtype)
        self.num_classes = None
        self.confusion = None
        if num_classes is not None:
            self.build_state(num_classes)

    def build_state(self, num_classes: int) -> None:
        """Create the state for ``num_classes`` classes (done by the constructor
        when ``num_classes`` is given, else by the first ``update_state``).
        Call it under ``strategy.scope()`` before a distributed step is traced."""
        check_positive_int("num_classes", num_classes)
        if self.num_classes is not None:
            check(num_classes == self.num_classes, f"{type(self).__name__} was built for another number of classes",
                  f"{num_classes} (built for {self.num_classes})", "pass predictions with num_classes columns")
            return
        self.num_classes = num_classes
        self.confusion = self.add_variable(
            shape=(num_classes, num_classes),
            initializer="zeros",
            dtype=_COUNT_DTYPE.name,
            aggregation="sum",
            name="confusion_matrix",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch: integer labels, logits ``[batch, C]``, optional weights."""
        if self.num_classes is None:
            self.build_state(_classes_of(y_pred, type(self).__name__))
        labels, logits, weights, _ = _standardize(y_true, y_pred, sample_weight, self.num_classes)
        preds = tf.cast(tf.argmax(logits, axis=-1), tf.int32)
        batch_cm = tf.math.confusion_matrix(
            labels, preds, num_classes=self.num_classes, weights=weights, dtype=_COUNT_DTYPE
        )
        self.confusion.assign_add(batch_cm)

    def reset_state(self):
        if self.confusion is not None:
            self.confusion.assign(tf.zeros_like(self.confusion))

    def _matrix(self):
        """The all-replica confusion matrix (an empty one before the first batch)."""
        if self.confusion is None:
            return tf.zeros([0, 0], _COUNT_DTYPE)
        return _total(self.confusion)

    def _counts(self):
        """Return ``(tp, predicted, support)`` per class as float64 vectors."""
        cm = self._matrix()
        tp = tf.linalg.diag_part(cm)
        predicted = tf.reduce_sum(cm, axis=0)  # tp + fp
        support = tf.reduce_sum(cm, axis=1)  # tp + fn
        return tp, predicted, support

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes})
        return config


class _AveragedScore(_ConfusionMatrixBase):
    """Base of Precision / Recall / F1Score: per-class score + averaging."""

    def __init__(self, num_classes=None, average="macro", name=None, dtype=None):
        check_one_of("average", average, _AVERAGES)
        super().__init__(num_classes=num_classes, name=name, dtype=dtype)
        self.average = average

    def _per_class(self, tp, predicted, support):
        raise NotImplementedError

    def result(self):
        tp, predicted, support = self._counts()
        if self.average == "micro":
            # Multiclass, single label: summed tp / summed predicted equals
            # summed tp / summed support (both are the total weight), so
            # micro precision == recall == F1 == accuracy.
            score = self._per_class(
                tf.reduce_sum(tp, keepdims=True),
                tf.reduce_sum(predicted, keepdims=True),
                tf.reduce_sum(support, keepdims=True),
            )[0]
        else:
            per_class = self._per_class(tp, predicted, support)
            if self.average is None:
                score = per_class
            elif self.average == "macro":
                score = tf.reduce_mean(per_class)
            else:  # weighted by (sample-weighted) support
                score = _safe_div(tf.reduce_sum(per_class * support), tf.reduce_sum(support))
        return tf.cast(score, self.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"average": self.average})
        return config


_AVERAGE_DOC = """
    Args:
        num_classes: Number of classes ``C``; ``y_pred`` has ``C`` logits.
            Default: the last dimension of the first batch's ``y_pred``.
        average: ``None`` (per-class vector of shape ``[C]``), ``"macro"``
            (unweighted mean over all ``C`` classes), ``"micro"`` (from the
            summed counts; equals accuracy for single-label multiclass) or
            ``"weighted"`` (mean weighted by each class' sample-weighted
            support).
        name: Optional name.
        dtype: Result dtype (the counts are float64 internally).

    A 0/0 ratio counts as 0, like scikit-learn's ``zero_division=0`` with
    ``labels=range(num_classes)``.
"""


@keras.saving.register_keras_serializable(package="tfcustom")
class Precision(_AveragedScore):
    """Precision ``tp / (tp + fp)`` per class for sparse labels and logits.
    {args}
    Example:

    >>> m = Precision(num_classes=3, average=None)
    >>> m.update_state([0, 1, 2, 2], [[2., 0., 0.], [0., 1., 3.],
    ...                               [0., 0., 1.], [0., 5., 1.]])
    >>> [round(float(v), 3) for v in m.result()]
    [1.0, 0.0, 0.5]

    ```python
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=[Precision(num_classes=10, average="macro")])
    ```
    """

    def __init__(self, num_classes=None, average="macro", name="precision", dtype=None):
        super().__init__(num_classes=num_classes, average=average, name=name, dtype=dtype)

    def _per_class(self, tp, predicted, support):
        return _safe_div(tp, predicted)


@keras.saving.register_keras_serializable(package="tfcustom")
class Recall(_AveragedScore):
    """Recall ``tp / (tp + fn)`` per class for sparse labels and logits.
    {args}
    Example:

    >>> m = Recall(num_classes=3, average="macro")
    >>> m.update_state([0, 1, 2, 2], [[2., 0., 0.], [0., 1., 3.],
    ...                               [0., 0., 1.], [0., 5., 1.]])
    >>> round(float(m.result()), 4)
    0.5

    ```python
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=[Recall(num_classes=10, average="weighted")])
    ```
    """

    def __init__(self, num_classes=None, average="macro", name="recall", dtype=None):
        super().__init__(num_classes=num_classes, average=average, name=name, dtype=dtype)

    def _per_class(self, tp, predicted, support):
        return _safe_div(tp, support)


@keras.saving.register_keras_serializable(package="tfcustom")
class F1Score(_AveragedScore):
    """F1 ``2 tp / (2 tp + fp + fn)`` per class for sparse labels and logits.
    {args}
    Example:

    >>> m = F1Score(num_classes=3, average="micro")
    >>> m.update_state([0, 1, 2, 2], [[2., 0., 0.], [0., 1., 3.],
    ...                               [0., 0., 1.], [0., 5., 1.]])
    >>> round(float(m.result()), 4)
    0.5

    ```python
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=[F1Score(num_classes=10)])
    ```
    """

    def __init__(self, num_classes=None, average="macro", name="f1_score", dtype=None):
        super().__init__(num_classes=num_classes, average=average, name=name, dtype=dtype)

    def _per_class(self, tp, predicted, support):
        return _safe_div(2.0 * tp, predicted + support)


for _cls in (Precision, Recall, F1Score):
    _cls.__doc__ = _cls.__doc__.replace("{args}", _AVERAGE_DOC)
del _cls


@keras.saving.register_keras_serializable(package="tfcustom")
class ConfusionMatrix(_ConfusionMatrixBase):
    """Sample-weighted confusion matrix: rows are true, columns predicted.

    ``result()`` is the ``[num_classes, num_classes]`` matrix whose entry
    ``[i, j]`` is the summed sample weight of examples of class ``i``
    predicted as ``j`` (``argmax`` of the logits) -- what
    ``sklearn.metrics.confusion_matrix(y_true, y_pred,
    labels=range(num_classes), sample_weight=w)`` returns.

    Args:
        num_classes: Number of classes.
        name: Optional name.
        dtype: Result dtype (the counts are float64 internally).

    Example:

    >>> m = ConfusionMatrix(num_classes=2)
    >>> m.update_state([0, 1, 1], [[1., 0.], [1., 0.], [0., 1.]])
    >>> m.result().numpy().tolist()
    [[1.0, 0.0], [1.0, 1.0]]
    """

    def __init__(self, num_classes=None, name="confusion_matrix", dtype=None):
        super().__init__(num_classes=num_classes, name=name, dtype=dtype)

    def result(self):
        return tf.cast(self._matrix(), self.dtype)


@keras.saving.register_keras_serializable(package="tfcustom")
class BalancedAccuracy(_ConfusionMatrixBase):
    """Mean per-class recall over the classes present in the labels.

    Classes whose (sample-weighted) support is 0 are left out of the mean,
    like ``sklearn.metrics.balanced_accuracy_score``. With no data the
    result is 0.

    Args:
        num_classes: Number of classes.
        name: Optional name.
        dtype: Result dtype (the counts are float64 internally).

    Example:

    >>> m = BalancedAccuracy(num_classes=3)
    >>> m.update_state([0, 0, 0, 1], [[1., 0., 0.], [1., 0., 0.],
    ...                               [0., 1., 0.], [0., 1., 0.]])
    >>> round(float(m.result()), 4)  # (2/3 + 1) / 2; class 2 never occurs
    0.8333
    """

    def __init__(self, num_classes=None, name="balanced_accuracy", dtype=None):
        super().__init__(num_classes=num_classes, name=name, dtype=dtype)

    def result(self):
        tp, _, support = self._counts()
        present = tf.cast(support > 0, _COUNT_DTYPE)
        recall = _safe_div(tp, support)
        return tf.cast(_safe_div(tf.reduce_sum(recall * present), tf.reduce_sum(present)), self.dtype)


# --------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfcustom")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error (Guo et al. 2017) with equal-width bins.

    Confidence is the maximum softmax probability; the prediction is correct
    when its ``argmax`` equals the label. Bin ``b`` (``b = 1..num_bins``)
    holds confidences in ``((b-1)/num_bins, b/num_bins]``. With sample
    weights ``w``::

        n_b    = sum of w in bin b,           N = sum_b n_b
        acc_b  = sum of w * correct / n_b,    conf_b = sum of w * conf / n_b
        ECE    = sum_b (n_b / N) * |acc_b - conf_b|

    The state is the three per-bin sums (``aggregation="sum"``), so the
    result is exact across batches and replicas. With no data the result is 0.

    Args:
        num_bins: Number of equal-width confidence bins (default 15).
        name: Optional name.
        dtype: Result dtype (the sums are float64 internally).

    Example:

    >>> m = ExpectedCalibrationError(num_bins=10)
    >>> m.update_state([0, 1], [[2.0, 0.0], [3.0, 0.0]])
    >>> round(float(m.result()), 4)  # confidences 0.881 (right), 0.953 (wrong)
    0.5359
    """

    def __init__(self, num_bins=15, name="expected_calibration_error", dtype=None):
        check_positive_int("num_bins", num_bins)
        super().__init__(name=name, dtype=dtype)
        self.num_bins = num_bins
        self._direction = "down"
        kw = dict(shape=(num_bins,), initializer="zeros", dtype=_COUNT_DTYPE.name, aggregation="sum")
        self.bin_weight = self.add_variable(name="bin_weight", **kw)
        self.bin_correct = self.add_variable(name="bin_correct", **kw)
        self.bin_confidence = self.add_variable(name="bin_confidence", **kw)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch: integer labels, logits ``[batch, C]``, optional weights."""
        labels, logits, weights, _ = _standardize(y_true, y_pred, sample_weight)
        probs = tf.nn.softmax(tf.cast(logits, _COUNT_DTYPE), axis=-1)
        confidence = tf.reduce_max(probs, axis=-1)
        preds = tf.cast(tf.argmax(logits, axis=-1), tf.int32)
        correct = tf.cast(tf.equal(preds, labels), _COUNT_DTYPE)
        bins = tf.cast(tf.math.ceil(confidence * self.num_bins), tf.int32) - 1
        bins = tf.clip_by_value(bins, 0, self.num_bins - 1)
        seg = lambda v: tf.math.unsorted_segment_sum(v, bins, self.num_bins)  # noqa: E731
        self.bin_weight.assign_add(seg(weights))
        self.bin_correct.assign_add(seg(weights * correct))
        self.bin_confidence.assign_add(seg(weights * confidence))

    def result(self):
        weight, correct, confidence = tf.unstack(_total(tf.stack([tf.convert_to_tensor(v) for v in (
            self.bin_weight, self.bin_correct, self.bin_confidence)])))
        total = tf.reduce_sum(weight)
        gap = tf.abs(correct - confidence)
        return tf.cast(_safe_div(tf.reduce_sum(gap), total), self.dtype)

    def reset_state(self):
        for v in (self.bin_weight, self.bin_correct, self.bin_confidence):
            v.assign(tf.zeros_like(v))

    def get_config(self):
        config = super().get_config()
        config.update({"num_bins": self.num_bins})
        return config


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

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
    """Return the names :func:`get` accepts, sorted."""
    return list(_NAMES)


def get(name: str, num_classes: int | None = None, **kwargs) -> keras.metrics.Metric:
    """Build a metric from its registry name.

    ``"accuracy"`` gives ``keras.metrics.SparseCategoricalAccuracy`` and
    ``"ece"`` (or ``"expected_calibration_error"``) gives
    :class:`ExpectedCalibrationError`; ``"precision"``, ``"recall"``,
    ``"f1"`` (or ``"f1_score"``), ``"balanced_accuracy"`` and
    ``"confusion_matrix"`` take ``num_classes`` (default: inferred from the
    first batch's predictions). Each metric reports under its own ``name``
    (``F1Score``: ``"f1_score"``).
    Extra keyword arguments go to the constructor (e.g. ``average=``,
    ``num_bins=``). An unknown name raises
    :class:`tfcustom.errors.ConfigError` listing the valid names.

    >>> get("recall", 10, average="weighted").average
    'weighted'
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
