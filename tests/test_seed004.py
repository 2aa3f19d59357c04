"""The seed-004 program with tfcustom's components swapped in, one at a time.

A small version of the lesson's own program (seed 004: custom ``Dense`` and
``Softmax`` layers, a custom model ending in softmax, a custom loss on
probabilities, custom precision/recall/F1 metrics, and a ``tf.GradientTape``
step under ``tf.function``, on Fashion-MNIST) runs once as written, then once
per swapped component -- ``tfcustom.layers.Dense``, ``tfcustom.layers.Softmax``,
``tfcustom.losses.SparseCategoricalCrossentropy()``,
``tfcustom.metrics.Precision()/Recall()/F1Score()``, ``tfcustom.optimizers.SGD``
-- each with the Keras-style arguments the lesson's reader would write (no
``from_logits``, no ``num_classes``). Every run must give the lesson's numbers:
the per-step losses, the metric values and the trained weights.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcustom

NUM_CLASSES = 10
N, BATCH, EPOCHS = 256, 32, 2


# -- the lesson's own components --------------------------------------------------------------


class SeedDense(keras.layers.Layer):
    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units), initializer="glorot_normal")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, x):
        return self.activation(x @ self.kernel + self.bias)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)


class SeedSoftmax(keras.layers.Layer):
    def call(self, x):
        e = tf.exp(x)
        return e / tf.reduce_sum(e, axis=-1, keepdims=True)


class SeedModel(keras.Model):
    def __init__(self, dense=SeedDense, softmax=SeedSoftmax, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.hidden = dense(32, activation="relu")
        self.logits = dense(NUM_CLASSES)
        self.softmax = softmax()

    def call(self, x):
        return self.softmax(self.logits(self.hidden(self.flatten(x))))


def seed_loss(y_true, y_pred):
    """Sparse cross-entropy on probabilities, averaged over the batch."""
    p = tf.gather(y_pred, tf.cast(tf.reshape(y_true, [-1]), tf.int32), batch_dims=1)
    return -tf.reduce_mean(tf.math.log(tf.clip_by_value(p, 1e-7, 1.0)))


class SeedScore(keras.metrics.Metric):
    """Macro precision / recall / F1 from a streaming confusion matrix."""

    def __init__(self, kind, num_classes, **kwargs):
        super().__init__(name=kind, **kwargs)
        self.kind, self.num_classes = kind, num_classes
        self.cm = self.add_variable(shape=(num_classes, num_classes), initializer="zeros", name="cm")

    def update_state(self, y_true, y_pred, sample_weight=None):
        pred = tf.argmax(y_pred, axis=-1)
        self.cm.assign_add(tf.math.confusion_matrix(tf.reshape(y_true, [-1]), pred, self.num_classes, dtype=tf.float32))

    def result(self):
        tp = tf.linalg.diag_part(self.cm)
        precision = tf.math.divide_no_nan(tp, tf.reduce_sum(self.cm, 0))
        recall = tf.math.divide_no_nan(tp, tf.reduce_sum(self.cm, 1))
        f1 = tf.math.divide_no_nan(2 * precision * recall, precision + recall)
        return tf.reduce_mean({"precision": precision, "recall": recall, "f1_score": f1}[self.kind])


# -- the lesson's loop ------------------------------------------------------------------------


def run(data, initial_weights=None, dense=SeedDense, softmax=SeedSoftmax, loss_fn=seed_loss, metrics=None, optimizer=None):
    x, y = data
    keras.utils.set_random_seed(0)
    model = SeedModel(dense, softmax)
    model(x[:1])
    if initial_weights is not None:
        model.set_weights(initial_weights)
    start = model.get_weights()
    optimizer = optimizer or keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    metrics = metrics or [SeedScore(k, NUM_CLASSES) for k in ("precision", "recall", "f1_score")]

    @tf.function
    def train_step(x_batch, y_batch):
        with tf.GradientTape() as tape:
            y_pred = model(x_batch, training=True)
            loss = loss_fn(y_batch, y_pred)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        for m in metrics:
            m.update_state(y_batch, y_pred)
        return loss

    losses = [float(train_step(x[i:i + BATCH], y[i:i + BATCH])) for _ in range(EPOCHS) for i in range(0, N, BATCH)]
    return {"start": start, "losses": losses, "metrics": [float(m.result()) for m in metrics], "weights": model.get_weights()}


@pytest.fixture(scope="module")
def data(fashion_dir):
    x = tfcustom.data.read_idx(os.path.join(fashion_dir, "t10k-images-idx3-ubyte.gz"))[:N].astype("float32") / 255.0
    y = tfcustom.data.read_idx(os.path.join(fashion_dir, "t10k-labels-idx1-ubyte.gz"))[:N].astype("int64")
    return x, y


@pytest.fixture(scope="module")
def lesson(data):
    out = run(data)
    assert out["losses"][-1] < out["losses"][0]  # the lesson's program learns
    return out


SWAPS = {
    "tfcustom.layers.Dense": dict(dense=lambda units, activation=None: tfcustom.layers.Dense(units, activation=activation)),
    "tfcustom.layers.Softmax": dict(softmax=lambda: tfcustom.layers.Softmax()),
    "tfcustom.losses.SparseCategoricalCrossentropy": dict(loss_fn=tfcustom.losses.SparseCategoricalCrossentropy()),
    "tfcustom.metrics": dict(metrics=lambda: [tfcustom.metrics.Precision(), tfcustom.metrics.Recall(), tfcustom.metrics.F1Score()]),
    "tfcustom.optimizers.SGD": dict(optimizer=lambda: tfcustom.optimizers.SGD(learning_rate=0.1, momentum=0.9)),
}


@pytest.mark.parametrize("swap", list(SWAPS))
def test_swapping_one_component_gives_the_lessons_numbers(data, lesson, swap):
    kwargs = {k: (v() if k in ("metrics", "optimizer") else v) for k, v in SWAPS[swap].items()}
    out = run(data, initial_weights=lesson["start"], **kwargs)
    np.testing.assert_allclose(out["losses"], lesson["losses"], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(out["metrics"], lesson["metrics"], atol=1e-6)
    for got, want in zip(out["weights"], lesson["weights"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
