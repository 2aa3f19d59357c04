"""The loop's features as built-in callbacks (issue 21 item 2): a user replaces, removes or adds one,
and the user's Keras callbacks still get what keras.Model.fit gives them (the oracle: keras.Model.fit
with the same recording callback)."""

import os
import re

import keras
import numpy as np
import tensorflow as tf

import tfcustom
from tfcustom.callbacks import Checkpointing, LoopCallback, ProgressBar

D, K, N, BATCH = 4, 3, 48, 8  # 6 steps per epoch


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)


def _trainer(verbose=0, cls=tfcustom.Trainer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)])
    return cls(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.SGD(0.1),
               metrics=["accuracy"], verbose=verbose)


class Record(keras.callbacks.Callback):
    """What a user's callback sees: (hook, argument, sorted log keys)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def _add(self, hook, arg, logs):
        self.calls.append((hook, arg, tuple(sorted(logs or {}))))

    def on_epoch_begin(self, epoch, logs=None):
        self._add("epoch_begin", epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._add("batch_end", batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add("epoch_end", epoch, logs)


class Spy(LoopCallback):
    """An added built-in: counts the steps and sees the compiled step's outputs."""

    def on_fit_begin(self):
        self.steps, self.keys = 0, set()

    def on_step_end(self, step):
        self.steps += step.ran
        self.keys |= set(step.out)


def test_user_callbacks_see_what_keras_fit_gives_them_with_a_loop_callback_added():
    x, y = _data()
    ref, ours, spy = Record(), Record(), Spy()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)])
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    keep_lr = lambda: keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr)  # Keras then logs learning_rate too
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[keep_lr(), ref])
    _trainer().fit((x, y), epochs=2, batch_size=BATCH, callbacks=[keep_lr(), ours, spy])
    assert ours.calls == ref.calls
    assert spy.steps == 2 * N // BATCH  # the added one ran, at every step
    assert {"steps_run", "replica_losses", "loss"} <= spy.keys


def test_a_progress_bar_subclass_replaces_the_built_in_one(capsys):
    class Lines(ProgressBar):
        def on_epoch_begin(self, epoch):
            print(f"my epoch {epoch + 1}")

        def on_step_end(self, step):
            pass

        def on_epoch_end(self, epoch, record):
            print(f"my end {epoch + 1}: loss {record['loss']:.3f}")

    x, y = _data()
    history = _trainer(verbose=1).fit((x, y), epochs=2, batch_size=BATCH, callbacks=[Lines()])
    out = capsys.readouterr().out
    assert "Epoch 1/2" not in out and "my epoch 1" in out and "my epoch 2" in out
    assert f"my end 2: loss {history['loss'][-1]:.3f}" in out


def test_a_subclass_removes_a_built_in_by_overriding_loop_callbacks(capsys):
    class NoProgress(tfcustom.Trainer):
        def loop_callbacks(self, train, **kwargs):
            return [c for c in super().loop_callbacks(train, **kwargs) if not isinstance(c, ProgressBar)]

    x, y = _data()
    _trainer(verbose=1).fit((x, y), epochs=1, batch_size=BATCH)
    assert "Epoch 1/1" in capsys.readouterr().out  # the oracle: the built-in bar prints
    _trainer(verbose=1, cls=NoProgress).fit((x, y), epochs=1, batch_size=BATCH)
    assert "Epoch 1/1" not in capsys.readouterr().out


def test_a_checkpointing_subclass_replaces_the_periodic_saves(tmp_path):
    class EveryStep(Checkpointing):
        def after_step(self, step):
            self.run.save(self.manager, "every step")

    x, y = _data()
    trainer = _trainer()
    manager = tf.train.CheckpointManager(tfcustom.training.checkpoint.training_checkpoint(trainer), str(tmp_path), max_to_keep=None)
    trainer.fit((x, y), epochs=1, batch_size=BATCH, checkpoint_manager=manager, checkpoint_every_steps=100,
                callbacks=[EveryStep(manager)])
    # every global step 1..6 saved once (the epoch-end save at step 6 is the same step: written once)
    assert [int(p.rsplit("-", 1)[1]) for p in manager.checkpoints] == list(range(1, N // BATCH + 1))


def test_the_guide_lists_the_built_ins_in_the_order_they_run():
    x, y = _data()
    built = [type(c).__name__ for c in _trainer().loop_callbacks(tfcustom.training.fit_inputs.as_pipeline((x, y), BATCH, training=True))]
    guide = open(os.path.join(os.path.dirname(__file__), "..", "docs", "guides", "callbacks.md")).read()
    listed = re.findall(r"^\| `(\w+)` \| `\w+` \|", guide, re.M)
    assert listed[1] == "RollbackOnDivergence"  # built only with on_nonfinite="rollback", right after NonFiniteSteps
    assert listed[:1] + listed[2:] == built
