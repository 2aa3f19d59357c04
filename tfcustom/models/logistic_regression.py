"""``LogisticRegression``: one Dense layer on the flattened input."""

from __future__ import annotations

import keras

from tfcustom.errors import check_positive_int
from tfcustom.layers import Dense
from tfcustom.models._base import _StackModel, _logits_dtype


@keras.saving.register_keras_serializable(package="tfcustom")
class LogisticRegression(_StackModel):
    """Flatten, then one [`Dense`][tfcustom.layers.Dense]: multinomial logistic
    regression (softmax regression) returning logits.

    ``num_classes=1`` gives a single logit for binary problems (use it with a
    sigmoid / binary cross-entropy loss). Weights start at zero: the loss is
    convex, so there is no symmetry to break.

    Args:
      num_classes: the number of logits (1: one logit for a binary problem).
      **kwargs: Keras' model arguments (``name``, ``dtype``).

    Examples:
        >>> import numpy as np
        >>> model = LogisticRegression(num_classes=1)
        >>> model(np.ones((3, 4), "float32")).numpy().tolist()
        [[0.0], [0.0], [0.0]]
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.flatten = keras.layers.Flatten(dtype=self.dtype_policy, name="flatten")
        self.logits = Dense(num_classes, kernel_initializer="zeros", dtype=_logits_dtype(self.dtype_policy), name="logits")

    def _stack(self):
        return [self.flatten, self.logits]

    def call(self, inputs, training=None):
        return self.logits(self.flatten(inputs))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes})
        return config
