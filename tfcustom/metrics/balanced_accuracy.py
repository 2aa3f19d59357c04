"""``BalancedAccuracy``: the mean per-class recall."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.metrics._utils import _COUNT_DTYPE, _safe_div
from tfcustom.metrics._base import _ConfusionMatrixBase


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

    Examples:
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
