"""A Trainer run with Keras callbacks and a training checkpoint, for tests/test_callbacks.py (not a test module).

usage: python tests/callbacks_worker.py OUT_DIR REPLICAS

Restores OUT_DIR/checkpoints if there is one, trains with ReduceLROnPlateau +
EarlyStopping (saving every 3 steps), and writes OUT_DIR/result.json: the history,
the logs each on_epoch_end saw with NumPy's value of the validation loss, the
stopping epoch and the final weights.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT, REPLICAS = sys.argv[1], int(sys.argv[2])
if REPLICAS > 1:
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * REPLICAS)

import keras  # noqa: E402

from tfcustom import Trainer  # noqa: E402
from tfcustom.checkpoint import restore_latest, training_checkpoint  # noqa: E402
from tfcustom.data import InputPipeline, Split  # noqa: E402

D, K, N, BATCH = 6, 3, 480, 16
rng = np.random.default_rng(0)
x = rng.normal(size=(N, D)).astype("float32")
y = np.argmax(x @ rng.normal(size=(D, K)) + 0.8 * rng.normal(size=(N, K)), axis=1).astype("int32")
x, y, xv, yv = x[:384], y[:384], x[384:], y[384:]  # 24 steps per epoch

strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)]) if REPLICAS > 1 else tf.distribute.get_strategy()
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(K)])
    optimizer = keras.optimizers.SGD(0.5)
trainer = Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer, metrics=["accuracy"],
                  strategy=strategy, verbose=0)
manager = tf.train.CheckpointManager(training_checkpoint(trainer), os.path.join(OUT, "checkpoints"), max_to_keep=3)
restore_latest(manager.checkpoint, manager)

seen = []


def on_epoch_end(epoch, logs):
    logits = model(xv, training=False).numpy()
    logits = logits - logits.max(axis=1, keepdims=True)
    nll = -(logits[np.arange(len(yv)), yv] - np.log(np.exp(logits).sum(axis=1)))
    seen.append({"epoch": epoch, "logs": dict(logs), "numpy_val_loss": float(nll.mean()),
                 "numpy_val_accuracy": float(np.mean(logits.argmax(axis=1) == yv))})


early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01)
callbacks = [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=0.01, cooldown=1),
             early, keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)]
history = trainer.fit(InputPipeline(Split(x, y), BATCH), epochs=20, validation_data=InputPipeline(Split(xv, yv), BATCH),
                      checkpoint_manager=manager, checkpoint_every_steps=3, callbacks=callbacks)
with open(os.path.join(OUT, "result.json"), "w") as f:
    json.dump({"history": [{k: v for k, v in r.items() if k != "time_s"} for r in history.records], "seen": seen,
               "stopped_epoch": early.stopped_epoch, "weights": [w.tolist() for w in model.get_weights()]}, f)
