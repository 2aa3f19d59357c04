"""A dict or list of losses for a multi-output model, as ``compile(loss=..., loss_weights=...)`` takes.

`MultiOutputLoss` gives per-example values (``[batch]``): the sum over
the outputs of ``loss_weight * per-example loss`` (each output's loss averaged
over its non-batch axes). The step reduces them over the *global* batch, so
the loss equals Keras' ``sum_k weight_k * mean_k`` exactly under N replicas.
`OutputLoss` is the per-output loss ``fit`` logs as ``<output>_loss``
(unweighted by ``loss_weights``, weighted by ``sample_weight``).

>>> import keras
>>> MultiOutputLoss({"a": keras.losses.MeanSquaredError()}, {"a": 2.0}).loss_weights
{'a': 2.0}
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.errors import check


def per_example(loss, y, y_pred, sample_weight=None):
    """[batch] values of ``loss.call`` (mean over non-batch axes), times ``sample_weight``."""
    values = tf.cast(loss.call(y, y_pred), tf.float32)
    if values.shape.rank is not None and values.shape.rank > 1:
        values = tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=-1)
    if sample_weight is not None:
        values = values * tf.cast(tf.reshape(sample_weight, [-1]), values.dtype)
    return values


@keras.saving.register_keras_serializable(package="tfcustom")
class MultiOutputLoss(keras.losses.Loss):
    """Losses keyed like the model's outputs (a dict by output name, or a list by position)."""

    def __init__(self, losses, loss_weights=None, name="multi_output_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        check(isinstance(losses, (dict, list, tuple)) and len(losses) > 0, "losses must be a non-empty dict or list",
              type(losses).__name__, "pass e.g. {'cls': 'binary_crossentropy', 'reg': 'mse'}")
        self.losses = {k: _deserialize(v) for k, v in losses.items()} if isinstance(losses, dict) else [_deserialize(v) for v in losses]
        keys = list(self.losses) if isinstance(self.losses, dict) else list(range(len(self.losses)))
        if loss_weights is None:
            loss_weights = {k: 1.0 for k in keys}
        elif isinstance(loss_weights, (list, tuple)):
            check(len(loss_weights) == len(keys), "loss_weights must have one weight per loss", loss_weights,
                  f"pass {len(keys)} weights or a dict by output name")
            loss_weights = dict(zip(keys, loss_weights))
        check(isinstance(loss_weights, dict) and set(loss_weights) <= set(keys), "loss_weights must name outputs that have a loss",
              loss_weights, f"use keys among {keys}")
        self.loss_weights = {k: float(loss_weights.get(k, 1.0)) for k in keys}

    def items(self):
        """``(key, loss, weight)`` per output."""
        pairs = self.losses.items() if isinstance(self.losses, dict) else enumerate(self.losses)
        return [(k, loss, self.loss_weights[k]) for k, loss in pairs]

    def call(self, y_true, y_pred):
        return tf.add_n([w * per_example(loss, y_true[k], y_pred[k]) for k, loss, w in self.items()])

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        losses = {k: ser(v) for k, v in self.losses.items()} if isinstance(self.losses, dict) else [ser(v) for v in self.losses]
        weights = self.loss_weights if isinstance(self.losses, dict) else [self.loss_weights[i] for i in range(len(self.losses))]
        return {"losses": losses, "loss_weights": weights, "name": self.name}


def _deserialize(value):
    return keras.saving.deserialize_keras_object(value) if isinstance(value, dict) else value


@keras.saving.register_keras_serializable(package="tfcustom")
class OutputLoss(keras.metrics.Mean):
    """The mean per-example loss of one output, as ``fit`` logs ``<output>_loss``."""

    uses_sample_weight = True  # the step passes sample_weight (Keras' per-output loss is weighted by it)

    def __init__(self, loss, output, name=None, **kwargs):
        loss = _deserialize(loss)
        super().__init__(name=name or f"{output}_loss", **kwargs)
        self.loss, self.output = loss, output

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = per_example(self.loss, y_true[self.output], y_pred[self.output], sample_weight)
        return super().update_state(values)

    def get_config(self):
        return {"loss": keras.saving.serialize_keras_object(self.loss), "output": self.output, "name": self.name}
