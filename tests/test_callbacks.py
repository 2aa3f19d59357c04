"""Keras callbacks on the Trainer (issue 20 items 3, 4): the oracle is keras.Model.fit with the same
callbacks, seed and data, an uninterrupted run for a SIGKILLed-then-resumed one, and NumPy for the
logs under 2 replicas (the kill and the 2 replicas share one subprocess, tests/callbacks_worker.py)."""

import csv
import glob
import json
import os
import signal
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom import Trainer
from tfcustom.callbacks import CallbackState
from tfcustom.data import InputPipeline, Split
from tfcustom.errors import ConfigError

K, D, BATCH = 3, 6, 16


def _data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(D, K)) + rng.normal(size=(n, K)), axis=1).astype("int32")
    return x[:96], y[:96], x[96:], y[96:]


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((D,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(K)])


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _side_by_side(make_callbacks, epochs=6, lr=0.3, steps_per_execution=1):
    """(keras history, keras model, trainer history, trainer model) after the same training with
    callbacks built by ``make_callbacks(tag)`` (tag "keras" / "tfcustom")."""
    x, y, xv, yv = _data()
    ref = _model()
    ref.compile(keras.optimizers.SGD(lr), _loss(), metrics=["accuracy"], steps_per_execution=steps_per_execution)
    ref_hist = ref.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, validation_data=(xv, yv), verbose=0,
                       callbacks=make_callbacks("keras"))
    ours = _model()
    trainer = Trainer(ours, _loss(), keras.optimizers.SGD(lr), metrics=["accuracy"], verbose=0,
                      steps_per_execution=steps_per_execution)
    hist = trainer.fit(InputPipeline(Split(x, y), BATCH), epochs=epochs, validation_data=InputPipeline(Split(xv, yv), BATCH),
                       callbacks=make_callbacks("tfcustom"))
    return ref_hist, ref, hist, ours


def _assert_same_history(ref_hist, hist, keys=("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")):
    assert len(hist) == len(ref_hist.epoch)
    for k in keys:
        np.testing.assert_allclose(hist[k], ref_hist.history[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _assert_same_weights(a, b):
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_early_stopping_reduce_lr_checkpoint_csv_like_fit(tmp_path):
    def callbacks(tag):
        d = tmp_path / tag
        d.mkdir()
        return [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0, min_delta=0.1),
                keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=2, restore_best_weights=True),
                keras.callbacks.ModelCheckpoint(str(d / "best.keras"), monitor="val_loss", save_best_only=True),
                keras.callbacks.ModelCheckpoint(str(d / "e{epoch}.weights.h5"), save_weights_only=True),
                keras.callbacks.CSVLogger(str(d / "log.csv"))]

    ref_hist, ref, hist, ours = _side_by_side(callbacks, epochs=12)
    assert len(ref_hist.epoch) < 12, "the test must stop early"
    assert len(set(ref_hist.history["learning_rate"])) > 1, "the test must reduce the learning rate"
    _assert_same_history(ref_hist, hist)
    _assert_same_weights(ref, ours)  # the restored best weights
    assert sorted(os.listdir(tmp_path / "keras")) == sorted(os.listdir(tmp_path / "tfcustom"))
    for name in ["best.keras", *(os.path.basename(p) for p in glob.glob(str(tmp_path / "keras" / "*.weights.h5")))]:
        a, b = _model(1), _model(2)
        load = (lambda m, p: m.set_weights(keras.models.load_model(p, compile=False).get_weights())) if name.endswith(".keras") \
            else (lambda m, p: m.load_weights(p))
        load(a, str(tmp_path / "keras" / name))
        load(b, str(tmp_path / "tfcustom" / name))
        _assert_same_weights(a, b)
    rows = [list(csv.DictReader(open(tmp_path / t / "log.csv"))) for t in ("keras", "tfcustom")]
    assert list(rows[0][0]) == list(rows[1][0])  # same columns, same order
    for r, o in zip(*rows):
        np.testing.assert_allclose([float(v) for v in o.values()], [float(v) for v in r.values()], rtol=1e-5, atol=1e-6)


def test_scheduler_lambda_tensorboard_and_batch_hooks_like_fit(tmp_path):
    seen = {}

    def callbacks(tag):
        seen[tag] = []
        return [keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.7 if epoch else lr),
                keras.callbacks.LambdaCallback(
                    on_train_batch_begin=lambda b, logs: seen[tag].append(("begin", b)),
                    on_train_batch_end=lambda b, logs: seen[tag].append(("end", b, round(logs["loss"], 5))),
                    on_epoch_begin=lambda e, logs: seen[tag].append(("epoch", e))),
                keras.callbacks.TensorBoard(str(tmp_path / tag), write_graph=False)]

    ref_hist, ref, hist, ours = _side_by_side(callbacks, epochs=3, steps_per_execution=2)
    _assert_same_history(ref_hist, hist)
    assert seen["tfcustom"] == seen["keras"] and ("begin", 2) in seen["keras"]  # at steps_per_execution granularity
    for sub in ("train", "validation"):
        scalars = []
        for tag in ("keras", "tfcustom"):
            values = {}
            for path in sorted(glob.glob(str(tmp_path / tag / sub / "events.*"))):
                for event in tf.compat.v1.train.summary_iterator(path):
                    for v in event.summary.value:
                        if v.tag.startswith("epoch_") and "steps_per_second" not in v.tag:
                            values.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
            scalars.append(values)
        assert scalars[0].keys() == scalars[1].keys() and scalars[0]
        for key in scalars[0]:
            np.testing.assert_allclose(scalars[1][key], scalars[0][key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_terminate_on_nan_stops_like_fit():
    x, y, _, _ = _data()
    x = x.copy()
    x[40] = 1e30  # batch 2 (of 16) overflows: NaN loss
    ref = _model()
    ref.compile(keras.optimizers.SGD(0.1), _loss())
    ref_hist = ref.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    trainer = Trainer(_model(), _loss(), keras.optimizers.SGD(0.1), verbose=0)
    hist = trainer.fit(InputPipeline(Split(x, y), BATCH), epochs=3, callbacks=[keras.callbacks.TerminateOnNaN()])
    assert len(hist) == len(ref_hist.epoch) == 1
    assert int(trainer.global_step.numpy()) <= 3  # stopped at the first non-finite step, not applied (fit applies it)


def test_evaluate_and_predict_hooks():
    x, y, xv, yv = _data()
    calls = []
    cb = keras.callbacks.LambdaCallback(on_test_end=lambda logs: calls.append(("test_end", sorted(logs))),
                                        on_predict_end=lambda logs: calls.append(("predict_end",)))
    trainer = Trainer(_model(), _loss(), keras.optimizers.SGD(0.1), metrics=["accuracy"], verbose=0)
    trainer.evaluate((xv, yv), callbacks=[cb])
    trainer.predict(xv, callbacks=[cb])
    assert calls == [("test_end", ["accuracy", "loss"]), ("predict_end",)]
    assert not hasattr(trainer.model, "optimizer")  # the model is left as it was


def test_learning_rate_callback_with_a_schedule_is_refused_in_one_line():
    x, y, _, _ = _data()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    trainer = Trainer(_model(), _loss(), keras.optimizers.SGD(schedule), verbose=0)
    with pytest.raises(ConfigError, match="the optimizer's learning rate is a schedule.*ReduceLROnPlateau") as e:
        trainer.fit((x, y), epochs=1, callbacks=[keras.callbacks.ReduceLROnPlateau()])
    assert "\n" not in str(e.value)


def test_backup_and_restore_is_refused_in_one_line_naming_the_training_checkpoint(tmp_path):
    x, y, _, _ = _data()
    trainer = Trainer(_model(), _loss(), keras.optimizers.SGD(0.1), verbose=0)
    with pytest.raises(ConfigError, match="BackupAndRestore does not resume a Trainer.*training_checkpoint") as e:
        trainer.fit((x, y), epochs=1, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path))])
    assert "\n" not in str(e.value)


def test_docstring_examples_run():
    import doctest

    import tfcustom.callbacks as package
    from tfcustom.callbacks import callback_list, learning_rate, state

    for module in (package, callback_list, learning_rate, state):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted and not result.failed, module.__name__


class _Counter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def get_state(self):
        return {"batches": self.batches}

    def set_state(self, state):
        self.batches = state["batches"]


def test_callback_state_round_trips_and_names_what_it_cannot_save(caplog):
    es = keras.callbacks.EarlyStopping(patience=3)
    es.wait, es.best, es.best_epoch, es.best_weights = 2, 0.25, 4, [np.ones((2, 2), "float32")]
    lr = keras.callbacks.ReduceLROnPlateau()
    lr.wait, lr.cooldown_counter, lr.best = 1, 2, 0.5
    counter = _Counter()
    counter.batches = 7

    class WithVariable(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.total = tf.Variable(3.5)

    saved = CallbackState()
    saved.attach([es, lr, counter, WithVariable(), keras.callbacks.CSVLogger("unused.csv")])
    text = saved.serialize()
    assert "Callback state not saved in the checkpoint" in caplog.text and "CSVLogger" in caplog.text
    restored = CallbackState()
    restored.deserialize(text)
    fresh = [keras.callbacks.EarlyStopping(patience=3), keras.callbacks.ReduceLROnPlateau(), _Counter(), WithVariable()]
    restored.attach(fresh)
    assert (fresh[0].wait, fresh[0].best, fresh[0].best_epoch) == (2, 0.25, 4)
    np.testing.assert_array_equal(fresh[0].best_weights[0], np.ones((2, 2)))
    assert (fresh[1].wait, fresh[1].cooldown_counter, fresh[1].best) == (1, 2, 0.5)
    assert fresh[2].batches == 7 and float(fresh[3].total.numpy()) == 3.5


# -- SIGKILL then resume; 2 replicas: one subprocess (tests/callbacks_worker.py) -------------------

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import callbacks_worker  # noqa: E402


@pytest.fixture(scope="module")
def worker_dir(tmp_path_factory):
    """The worker's directory after its 2-replica run and its training run that SIGKILLed itself mid-epoch."""
    from resume_helpers import run

    out = str(tmp_path_factory.mktemp("killed"))
    proc = run([callbacks_worker.__file__, out])
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return out


def _epochs(out):
    with open(os.path.join(out, "epochs.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_sigkill_then_resume_gives_the_same_learning_rates_and_stopping_epoch(worker_dir, tmp_path):
    from resume_helpers import latest_step

    killed_at = latest_step(worker_dir)
    before = _epochs(worker_dir)
    assert killed_at == len(before) * callbacks_worker.STEPS + 3  # 3 steps into the epoch after the last logged one
    assert before[-1]["wait"] > 0 and before[-1]["cooldown"] > 0, "killed while EarlyStopping waits and ReduceLROnPlateau cools down"
    stopped, weights = callbacks_worker.train(worker_dir)  # the same run again: resumes from the checkpoint
    ref_stopped, ref_weights = callbacks_worker.train(str(tmp_path))  # uninterrupted
    resumed, ref = _epochs(worker_dir), _epochs(str(tmp_path))
    assert len(set(r["learning_rate"] for r in ref)) > 1 and 0 < ref_stopped < 11, "the run must reduce the LR and stop early"
    assert stopped == ref_stopped
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in ref]
    for key in ("learning_rate", "wait", "cooldown"):
        assert [r[key] for r in resumed] == [r[key] for r in ref], key
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([r[key] for r in resumed], [r[key] for r in ref], rtol=1e-6, err_msg=key)
    for a, b in zip(weights, ref_weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_two_replicas_callbacks_see_the_exact_all_replica_values(worker_dir):
    with open(os.path.join(worker_dir, "replicas.json")) as f:
        result = json.load(f)
    assert result["replicas"] == 2
    epoch_ends = [s for s in result["seen"] if s["where"] == "on_epoch_end"]
    assert len(epoch_ends) == 1 and result["seen"][-1]["where"] == "on_test_end"
    for s in result["seen"]:  # NumPy over every validation example (45: uneven shares of the replicas)
        prefix = "val_" if s["where"] == "on_epoch_end" else ""
        np.testing.assert_allclose(s["logs"][prefix + "loss"], s["numpy"]["loss"], rtol=1e-5)
        np.testing.assert_allclose(s["logs"][prefix + "accuracy"], s["numpy"]["accuracy"], rtol=1e-6)
    assert [s["logs"] for s in epoch_ends] == result["history"]
