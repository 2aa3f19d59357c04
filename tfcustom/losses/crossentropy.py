"""``SparseCategoricalCrossentropy`` with class weights and label smoothing."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.errors import check
from tfcustom.losses._args import _as_float, _as_float_list
from tfcustom.losses._base import _SparseClassificationLoss, _label_smoothing_arg, _smoothed_cross_entropy


_CLASS_WEIGHTS_FIX = ("pass a dict {class_id: weight} (as keras.Model.fit(class_weight=...) takes; missing classes weigh 1.0), "
                      "a list of one non-negative weight per class, e.g. [1.0, 2.0, 1.0], or None")


def _class_weights_arg(value):
    """``None``, a list of floats, or a dict ``{int class_id: float}`` (JSON string keys accepted)."""
    if value is None:
        return None
    if isinstance(value, dict):
        out = {}
        for key, weight in value.items():
            try:
                class_id = int(key)
                ok = not isinstance(key, (bool, float)) and str(class_id) == str(key).strip() and class_id >= 0
            except (TypeError, ValueError):
                ok = False
            check(ok, "class_weights keys must be class ids (integers >= 0)", key, _CLASS_WEIGHTS_FIX)
            out[class_id] = _as_float(f"class_weights[{class_id}]", weight, low=0.0, fix=_CLASS_WEIGHTS_FIX)
        check(bool(out), "class_weights must not be empty", value, _CLASS_WEIGHTS_FIX)
        return dict(sorted(out.items()))
    check(not isinstance(value, (str, bytes, set, frozenset)) and hasattr(value, "__len__") and hasattr(value, "__getitem__"),
          "class_weights must be a dict {class_id: weight} or a sequence of weights", type(value).__name__, _CLASS_WEIGHTS_FIX)
    return _as_float_list("class_weights", value, _CLASS_WEIGHTS_FIX)


def _dict_weights(class_weights: dict, log_p, dtype):
    """The per-class weight vector of a ``{class_id: weight}`` dict: 1.0 for
    the classes it leaves out (as ``keras.Model.fit(class_weight=...)``)."""
    length = max(class_weights) + 1
    num_classes = log_p.shape[-1]
    if num_classes is not None:
        check(length <= num_classes, "class_weights names a class id the predictions do not have",
              f"class id {length - 1}, y_pred.shape[-1]={num_classes}", f"use class ids in 0..{num_classes - 1}")
    known = tf.constant([class_weights.get(c, 1.0) for c in range(length)], dtype=dtype)
    rest = tf.ones([tf.maximum(tf.shape(log_p)[-1] - length, 0)], dtype=dtype)
    return tf.concat([known, rest], axis=0)


@keras.saving.register_keras_serializable(package="tfcustom")
class SparseCategoricalCrossentropy(_SparseClassificationLoss):
    """Cross-entropy for integer labels with class weights and label smoothing.

    Per example ``i`` with true class ``c_i``:

        t   = one_hot(c_i) * (1 - label_smoothing) + label_smoothing / C
        ce  = -sum_k t_k * log_softmax(logits_i)_k
        out = class_weights[c_i] * ce          # class_weights default to 1

    ``class_weights`` weights each example by its true class as
    ``keras.Model.fit(class_weight=...)`` does: a dict ``{class_id: weight}``
    (any order; classes it leaves out weigh 1.0, as in Keras) or a sequence
    of one weight per class.

    Label smoothing has the same definition as
    ``keras.losses.CategoricalCrossentropy(label_smoothing=...)``.

    Args:
        class_weights: Optional dict ``{class_id: weight}`` or sequence of
            ``num_classes`` non-negative floats; each example's loss is
            multiplied by the weight of its true class.
        label_smoothing: Float in ``[0, 1]``.
        from_logits: Whether ``y_pred`` holds logits or probabilities
            (default ``False``, as in Keras; tfcustom's models need ``True``).
        reduction: Any Keras reduction; ``call`` itself never reduces.
        name: Optional name.
        dtype: Computation dtype; defaults to ``keras.backend.floatx()``.

    Examples:
        >>> loss = SparseCategoricalCrossentropy(class_weights={1: 2.0, 2: 0.5},
        ...                                      label_smoothing=0.1,
        ...                                      from_logits=True,
        ...                                      reduction="none")
        >>> loss([0, 1], [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]).shape
        TensorShape([2])

    ```python
    model.compile(optimizer="adam", loss=SparseCategoricalCrossentropy(from_logits=True))
    ```
    """

    def __init__(
        self,
        class_weights=None,
        label_smoothing=0.0,
        from_logits=False,
        reduction="sum_over_batch_size",
        name="sparse_categorical_crossentropy",
        dtype=None,
    ):
        class_weights = _class_weights_arg(class_weights)
        label_smoothing = _label_smoothing_arg(label_smoothing)
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels, log_p, _, loss = _smoothed_cross_entropy(self, y_true, y_pred, self.label_smoothing)
        if isinstance(self.class_weights, dict):
            loss = loss * tf.gather(_dict_weights(self.class_weights, log_p, loss.dtype), labels)
        elif self.class_weights is not None:
            self._check_num_classes("class_weights", len(self.class_weights), log_p.shape[-1])
            weights = tf.constant(self.class_weights, dtype=loss.dtype)
            loss = loss * tf.gather(weights, labels)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "class_weights": (dict(self.class_weights) if isinstance(self.class_weights, dict)
                                  else None if self.class_weights is None else list(self.class_weights)),
                "label_smoothing": self.label_smoothing,
            }
        )
        return config
