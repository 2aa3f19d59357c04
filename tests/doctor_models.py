"""Models with planted bugs for tests/test_doctor.py (each one defect the doctor must name), and sound ones."""

import keras
import numpy as np
import tensorflow as tf

from tfcustom.training import steps
from tfcustom.training.trainer import Trainer


def functional(num_classes=3, input_shape=(4, 4, 1)):
    """A plain Keras functional model (sound)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(6, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


class LateWeight(keras.layers.Layer):
    """Creates a weight in call, on the first training call (after the model was built)."""

    def call(self, x, training=False):
        if training and not hasattr(self, "late"):
            self.late = self.add_weight(shape=(), initializer="ones", name="late")
        return x * self.late if hasattr(self, "late") else x


class ReplicaCounter(keras.layers.Layer):
    """Counts positive inputs of its own replica's batch in an integer variable: the replicas' copies differ."""

    def build(self, input_shape):
        self.seen = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False, name="seen")

    def call(self, x, training=False):
        if training:
            self.seen.assign_add(tf.reduce_sum(tf.cast(x > 0, "int64")))
        return x


class DictModel(keras.Model):
    """Keeps its hidden layer in a plain dict hidden from Keras' tracking: the checkpoint misses it."""

    def __init__(self, num_classes=3, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "blocks", {"hidden": keras.layers.Dense(6, activation="relu")})
        self.flatten = keras.layers.Flatten()
        self.out = keras.layers.Dense(num_classes)

    def call(self, x):
        return self.out(self.blocks["hidden"](self.flatten(x)))


class FirstReplicaAccuracy(keras.metrics.Metric):
    """Accuracy updated on replica 0 only (the bug of keras-team/keras#15509)."""

    def __init__(self, name="first_replica_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct", aggregation="sum")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ctx = tf.distribute.get_replica_context()
        first = tf.cast(tf.equal(ctx.replica_id_in_sync_group, 0), "float32") if ctx is not None else 1.0
        hits = tf.cast(tf.equal(tf.cast(tf.reshape(y_true, [-1]), "int64"), tf.argmax(y_pred, -1)), "float32")
        self.correct.assign_add(first * tf.reduce_sum(hits))
        self.count.assign_add(first * tf.cast(tf.size(hits), "float32"))

    def result(self):
        return self.correct / tf.maximum(self.count, 1.0)


class RetracingTrainer(Trainer):
    """A user's step that builds its tf.function anew on every call (so it is traced again each time)."""

    def make_train_step(self):
        build = super().make_train_step
        return lambda iterator, num_steps: build()(iterator, num_steps)


def _replica_mean_gradients(model, loss, x, y, sample_weight, global_examples, num_replicas, loss_scale=None):
    local = tf.cast(tf.shape(y)[0], tf.float32)  # the bug: the replica's own batch, not the global one
    return steps.compute_loss_and_gradients(model, loss, x, y, sample_weight, local, num_replicas, loss_scale)


class ReplicaMeanLossTrainer(Trainer):
    """A step that averages the loss over the replica's batch: on N replicas the summed gradients are N times too large."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, gradient_fn=_replica_mean_gradients, **kwargs)


def with_layer(layer):
    def make(num_classes=3, input_shape=(4, 4, 1)):
        inputs = keras.Input(input_shape)
        x = keras.layers.Flatten()(inputs)
        x = layer()(keras.layers.Dense(6)(x))
        return keras.Model(inputs, keras.layers.Dense(num_classes)(x))
    return make


def data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4, 4, 1)).astype("float32"), rng.integers(0, 3, n)
