"""Trainer runs with Keras callbacks for tests/test_callbacks.py (not a test module).

``train(out)``: ReduceLROnPlateau + EarlyStopping with a training checkpoint
in ``out/checkpoints`` (restored if there is one, saved every 3 steps); each
``on_epoch_end`` appends its epoch, logs and the callbacks' counters to
``out/epochs.jsonl``. With ``kill=True`` the process SIGKILLs itself in the
middle of the first epoch after the learning rate was reduced while
EarlyStopping is waiting (the newest checkpoint is 3 steps into that epoch).

``replica_logs(out, strategy)``: 1 epoch under ``strategy``; the logs
``on_epoch_end`` / ``on_test_end`` saw and NumPy's loss and accuracy over
every validation example, in ``out/replicas.json``.

usage: python tests/callbacks_worker.py OUT_DIR   (2 logical CPUs: replica_logs, then train(kill=True))
"""

import json
import os
import signal
import sys

import numpy as np

D, K, BATCH, STEPS = 6, 3, 16, 6  # 96 training examples: 6 steps per epoch


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(141, D)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(D, K)) + 0.8 * rng.normal(size=(141, K)), axis=1).astype("int32")
    return x[:96], y[:96], x[96:], y[96:]  # 45 validation examples: uneven shares over 2 replicas


def _trainer(strategy=None):
    import keras
    import tensorflow as tf

    from tfcustom import Trainer

    with (strategy or tf.distribute.get_strategy()).scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(K)])
        optimizer = keras.optimizers.SGD(0.5)
    return Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer, metrics=["accuracy"],
                   strategy=strategy, verbose=0)


def _pipelines():
    from tfcustom.data import InputPipeline, Split

    x, y, xv, yv = data()
    return InputPipeline(Split(x, y), BATCH, shuffle=True), InputPipeline(Split(xv, yv), BATCH)


def train(out, kill=False, epochs=12):
    """The run with a training checkpoint; returns (EarlyStopping.stopped_epoch, final weights)."""
    import keras
    import tensorflow as tf

    from tfcustom.training.checkpoint import restore_latest, training_checkpoint

    trainer = _trainer()
    manager = tf.train.CheckpointManager(training_checkpoint(trainer), os.path.join(out, "checkpoints"), max_to_keep=2)
    restore_latest(manager.checkpoint, manager)
    reduce = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=0.02, cooldown=1)
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, min_delta=0.02)

    def on_epoch_end(epoch, logs):
        with open(os.path.join(out, "epochs.jsonl"), "a") as f:
            f.write(json.dumps({"epoch": epoch, **logs, "wait": early.wait, "cooldown": reduce.cooldown_counter}) + "\n")

    def on_train_batch_end(batch, logs):
        reduced = float(np.asarray(trainer.optimizer.learning_rate)) < 0.5
        if kill and batch == 3 and reduced and early.wait > 0:
            os.kill(os.getpid(), signal.SIGKILL)

    log = keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end, on_train_batch_end=on_train_batch_end)
    train_data, validation = _pipelines()
    trainer.fit(train_data, epochs=epochs, validation_data=validation, checkpoint_manager=manager, checkpoint_every_steps=3,
                callbacks=[reduce, early, log])
    return early.stopped_epoch, trainer.model.get_weights()


def replica_logs(out, strategy):
    import keras

    trainer = _trainer(strategy)
    _, _, xv, yv = data()
    seen = []

    def numpy_values():
        logits = trainer.model(xv, training=False).numpy().astype("float64")
        logits -= logits.max(axis=1, keepdims=True)
        nll = np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(yv)), yv]
        return {"loss": float(nll.mean()), "accuracy": float(np.mean(logits.argmax(axis=1) == yv))}

    callback = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append({"where": "on_epoch_end", "logs": dict(logs), "numpy": numpy_values()}),
        on_test_end=lambda logs: seen.append({"where": "on_test_end", "logs": dict(logs), "numpy": numpy_values()}))
    train_data, validation = _pipelines()
    history = trainer.fit(train_data, epochs=1, validation_data=validation, callbacks=[callback])
    trainer.evaluate(validation, callbacks=[callback])
    with open(os.path.join(out, "replicas.json"), "w") as f:
        json.dump({"seen": seen, "history": [{k: v for k, v in r.items() if k not in ("epoch", "time_s")} for r in history.records],
                   "replicas": trainer.strategy.num_replicas_in_sync}, f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tensorflow as tf

    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    replica_logs(sys.argv[1], tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    train(sys.argv[1], kill=True)
