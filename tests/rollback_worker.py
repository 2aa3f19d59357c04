"""Runs of tests/test_rollback.py in a fresh process with op determinism and 2 logical CPUs (not a test module).

``python tests/rollback_worker.py`` prints ``RESULT <json>``: for 1 replica and for
2 (MirroredStrategy), the final weights (as bytes, hex) and loop state of

* ``skip``: on_nonfinite="skip" (the oracle of a rollback run);
* ``rollback``: on_nonfinite="rollback";
* ``rollback_spe4`` (2 replicas): rollback with steps_per_execution=4;
* ``killed_<K>``: a rollback run stopped by an exception at global step K (as a SIGKILL:
  nothing saved), then a new Trainer restored from its checkpoints and trained to the end;
* ``spike`` / ``spike_oracle`` (1 replica): a finite loss spike rolled back, and a skip run
  with a NaN on that example instead.

The planted NaN: example ``NAN_INDEX`` of unshuffled batches of ``BATCH``, so it is in
batch ``NAN_INDEX // BATCH`` of every epoch.
"""

import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

import keras  # noqa: E402

from tfcustom import Trainer  # noqa: E402
from tfcustom.data import InputPipeline, Split  # noqa: E402
from tfcustom.training.checkpoint import restore_latest, training_checkpoint  # noqa: E402
from tfcustom.training.rollback import Rollback  # noqa: E402

N, D, K, BATCH, EPOCHS, EVERY = 96, 6, 3, 16, 2, 2  # 6 steps per epoch, a checkpoint every 2 steps
NAN_INDEX = 40  # batch 2 of each epoch: global steps 3 and 9


def data(n=N, plant=np.nan, index=NAN_INDEX):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, D)).astype("float32")
    y = rng.integers(0, K, n).astype("int32")
    x[index] = plant
    return x, y


class Killed(Exception):
    pass


class StopAt(keras.callbacks.Callback):
    """Raise when the trainer's global step reaches ``step`` (after that step: a process killed there)."""

    def __init__(self, trainer, step):
        super().__init__()
        self.trainer, self.step = trainer, step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.trainer.global_step.numpy()) >= self.step:
            raise Killed(f"killed at step {self.step}")


def trainer(strategy, policy, spe=1, rollback=None):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(K)])
        optimizer = keras.optimizers.SGD(0.1)
    return Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer, strategy=strategy,
                   on_nonfinite=policy, steps_per_execution=spe, verbose=0, rollback=rollback)


def summary(t):
    out = {"weights": [np.asarray(w).tobytes().hex() for w in t.model.get_weights()],
           "global_step": int(t.global_step.numpy()), "iterations": int(t.optimizer.iterations.numpy()),
           "loss": [float(v) for v in t.history.history["loss"]], "traces": t.train_step.experimental_get_tracing_count()}
    if t.rollback is not None:
        out["skipped_steps"] = t.rollback.skipped_steps
    return out


def fit(strategy, policy, x, y, spe=1, rollback=None, kill_at=None, epochs=EPOCHS):
    t = trainer(strategy, policy, spe, rollback)
    directory = tempfile.mkdtemp()
    manager = tf.train.CheckpointManager(training_checkpoint(t), directory, max_to_keep=2)
    pipeline = InputPipeline(Split(x, y), BATCH)
    if kill_at is None:
        t.fit(pipeline, epochs, checkpoint_manager=manager, checkpoint_every_steps=EVERY)
        return summary(t)
    try:
        t.fit(pipeline, epochs, checkpoint_manager=manager, checkpoint_every_steps=EVERY, callbacks=[StopAt(t, kill_at)])
        raise AssertionError("not killed")
    except Killed:
        pass
    resumed = trainer(strategy, policy, spe, None if rollback is None else Rollback(rollback.max_rollbacks, rollback.lr_factor,
                                                                                     rollback.loss_spike_factor))
    manager = tf.train.CheckpointManager(training_checkpoint(resumed), directory, max_to_keep=2)
    with strategy.scope():
        restore_latest(manager.checkpoint, manager)
    resumed.fit(pipeline, epochs, checkpoint_manager=manager, checkpoint_every_steps=EVERY)
    return summary(resumed)


def runs(strategy, replicas):
    x, y = data()
    out = {"skip": fit(strategy, "skip", x, y), "rollback": fit(strategy, "rollback", x, y)}
    if replicas == 1:
        out["killed_10"] = fit(strategy, "rollback", x, y, kill_at=10)  # after the rollback at 9, before a new checkpoint
        xs, ys = data(256, plant=1e4, index=200)  # batch 12 of 16: its loss is finite and far above the others'
        out["spike"] = fit(strategy, "rollback", xs, ys, rollback=Rollback(loss_spike=5.0), epochs=1)
        out["spike_oracle"] = fit(strategy, "skip", *data(256, index=200), epochs=1)
    else:
        out["rollback_spe4"] = fit(strategy, "rollback", x, y, spe=4)
        out["killed_5"] = fit(strategy, "rollback", x, y, kill_at=5)  # after the rollback at 3 and the checkpoint at 4
    return out


if __name__ == "__main__":  # here, not at import: tests/test_rollback.py imports this module for its constants
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.experimental.enable_op_determinism()
    result = {"1": runs(tf.distribute.get_strategy(), 1), "2": runs(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), 2)}
    sys.stdout.flush()
    print("RESULT " + json.dumps(result))
    os._exit(0)
