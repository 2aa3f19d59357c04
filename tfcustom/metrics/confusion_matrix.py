"""``ConfusionMatrix``: the sample-weighted confusion matrix as a metric."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.metrics._base import _ConfusionMatrixBase


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

    Examples:
        >>> m = ConfusionMatrix(num_classes=2)
        >>> m.update_state([0, 1, 1], [[1., 0.], [1., 0.], [0., 1.]])
        >>> m.result().numpy().tolist()
        [[1.0, 0.0], [1.0, 1.0]]
    """

    def __init__(self, num_classes=None, name="confusion_matrix", dtype=None):
        super().__init__(num_classes=num_classes, name=name, dtype=dtype)

    def result(self):
        return tf.cast(self._matrix(), self.dtype)
