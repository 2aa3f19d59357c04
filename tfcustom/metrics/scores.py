"""``Precision``, ``Recall`` and ``F1Score``: per-class scores from the
confusion matrix, averaged as scikit-learn's ``average=``."""

from __future__ import annotations

import keras

from tfcustom.metrics._utils import _safe_div
from tfcustom.metrics._base import _AVERAGE_DOC, _AveragedScore


@keras.saving.register_keras_serializable(package="tfcustom")
class Precision(_AveragedScore):
    """Precision ``tp / (tp + fp)`` per class for sparse labels and logits.
    {args}
    Examples:
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
    Examples:
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
    Examples:
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
