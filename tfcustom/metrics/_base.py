"""The confusion-matrix state shared by the classification metrics, and the
base of the averaged per-class scores."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.errors import check, check_one_of, check_positive_int
from tfcustom.metrics._utils import _AVERAGES, _COUNT_DTYPE, _classes_of, _safe_div, _standardize, _total


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
