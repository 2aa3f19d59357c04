"""The state a forward pass changes (BatchNorm moving statistics), kept so a skipped step can be undone."""

from __future__ import annotations

import keras
import tensorflow as tf


def replica_state_variables(model: keras.Model) -> list:
    """The model's float non-trainable variables (BatchNormalization moving
    statistics): state the forward pass changes, per replica under a strategy."""
    return [v for v in model.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]


class ReplicaState:
    """``snapshot()`` before the forward pass, ``restore(values)`` if the step is skipped."""

    def __init__(self, model: keras.Model):
        self.variables = replica_state_variables(model)

    def snapshot(self) -> list:
        return [tf.identity(v) for v in self.variables]

    def restore(self, values) -> None:
        for v, value in zip(self.variables, values):
            v.assign(value)
