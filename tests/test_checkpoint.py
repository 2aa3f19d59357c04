"""Checkpoint contents and failure cases, in process."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom import Trainer
from tfcustom.training.checkpoint import CheckpointError, model_checkpoint, restore_latest, training_checkpoint
from tfcustom.experiment.config import TrainConfig
from tfcustom.data import InputPipeline, Split
from tfcustom.callbacks.early_stopping import EarlyStopping
from tfcustom.errors import ConfigError, NonFiniteLossError
from tfcustom.experiment.train import prepare_output_dir

L = keras.layers


def _data(n=128, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def _trainer(hidden=16, d=8):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((d,)), L.Dense(hidden), L.BatchNormalization(), L.ReLU(), L.Dropout(0.2), L.Dense(3)])
    return Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.Adam(1e-2), ["accuracy"], verbose=0)


def _trained_one_epoch(directory, **trainer_kwargs):
    """A trainer after one epoch on :func:`_data`, checkpointed into ``directory``; (trainer, manager, x)."""
    x, y = _data()
    t = _trainer(**trainer_kwargs)
    manager = tf.train.CheckpointManager(training_checkpoint(t), str(directory), 2)
    t.fit(InputPipeline(Split(x, y), 32), 1, checkpoint_manager=manager)
    return t, manager, x


def _restore_latest_into(trainer, directory, max_to_keep=2):
    """Restore the newest checkpoint of ``directory`` into ``trainer``; the restored path."""
    ck = training_checkpoint(trainer)
    return restore_latest(ck, tf.train.CheckpointManager(ck, str(directory), max_to_keep))


def test_checkpoint_holds_the_whole_training_state(tmp_path):
    x, y = _data()
    t = _trainer()
    es = EarlyStopping("loss", patience=None)
    ckpt = training_checkpoint(t, es)
    manager = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=2)
    t.fit(InputPipeline(Split(x, y), 32, shuffle=True), 2, early_stopping=es, checkpoint_manager=manager, checkpoint_every_steps=3)
    names = [n for n, _ in tf.train.list_variables(manager.latest_checkpoint)]
    for part in ("global_step", "epoch", "step_in_epoch", "early_stopping/best", "optimizer/_iterations", "train_metrics/0"):
        assert any(part in n for n in names), part
    # Every model variable, incl. BatchNorm statistics and the dropout RNG state, by position.
    saved = [n for n in names if n.startswith("model_variables/")]
    assert len(saved) == len(t.model.variables) == 9
    assert len(manager.checkpoints) == 2  # max_to_keep
    # A fresh trainer restored from it has the same state, variable by variable.
    t2 = _trainer()
    es2 = EarlyStopping("loss", patience=None)
    assert restore_latest(training_checkpoint(t2, es2), tf.train.CheckpointManager(training_checkpoint(t2, es2), str(tmp_path), 2))
    for a, b in zip(t.model.variables, t2.model.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(t.optimizer.variables, t2.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(t2.global_step.numpy()) == 8 and int(t2.epoch.numpy()) == 2
    assert float(es2.best.numpy()) == float(es.best.numpy())
    assert float(t2.train_loss.result()) == float(t.train_loss.result())


def test_nan_at_step_zero_stops_and_disk_checkpoints_stay_finite(tmp_path):
    x, y = _data(96)
    x[70] = np.inf  # third batch: steps 0 and 1 are fine
    t = _trainer()
    manager = tf.train.CheckpointManager(training_checkpoint(t), str(tmp_path), max_to_keep=5)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3 \(batch 2 of the epoch\)"):
        t.fit(InputPipeline(Split(x, y), 32), 1, checkpoint_manager=manager, checkpoint_every_steps=1)
    t2 = _trainer()
    assert _restore_latest_into(t2, tmp_path, 5)
    assert int(t2.global_step.numpy()) == 2
    assert all(np.all(np.isfinite(np.asarray(v))) for v in t2.model.variables if np.asarray(v).dtype.kind == "f")
    # NaN in the very first step: nothing is saved, nothing applied.
    x0 = x.copy()
    x0[0] = np.nan
    t3 = _trainer()
    m3 = tf.train.CheckpointManager(training_checkpoint(t3), str(tmp_path / "zero"), 5)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1 \(batch 0"):
        t3.fit(InputPipeline(Split(x0, y), 32), 1, checkpoint_manager=m3, checkpoint_every_steps=1)
    assert m3.latest_checkpoint is None and int(t3.optimizer.iterations.numpy()) == 0


def test_checkpoint_of_a_different_model_is_refused(tmp_path):
    _trained_one_epoch(tmp_path, hidden=16)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        _restore_latest_into(_trainer(hidden=24), tmp_path)


def test_all_checkpoints_unreadable_is_a_clear_error(tmp_path):
    _trained_one_epoch(tmp_path)
    for f in os.listdir(tmp_path):
        if f.endswith(".index"):
            (tmp_path / f).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="can be restored.*--overwrite"):
        _restore_latest_into(_trainer(), tmp_path)


def test_model_checkpoint_restores_from_a_training_checkpoint(tmp_path):
    t, manager, x = _trained_one_epoch(tmp_path)
    t2 = _trainer()
    model_checkpoint(t2.model).restore(manager.latest_checkpoint).expect_partial()
    np.testing.assert_array_equal(t.model.predict(x, verbose=0), t2.model.predict(x, verbose=0))


def test_output_dir_checks(tmp_path):
    cfg = TrainConfig(model="mlp")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot be created|not a directory"):
        prepare_output_dir(str(tmp_path / "file" / "run"), cfg)
    with pytest.raises(ConfigError, match="not a directory"):
        prepare_output_dir(str(tmp_path / "file"), cfg)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no tfcustom run"):
        prepare_output_dir(str(tmp_path / "other"), cfg)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    assert prepare_output_dir(str(tmp_path / "new" / "run"), cfg) is False
    assert not (tmp_path / "new").exists()


def test_unreadable_config_json_is_one_clear_error_for_resume_and_evaluation(tmp_path):
    from tfcustom.experiment.export import evaluate_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "mlp", ')  # truncated
    for call in (lambda: prepare_output_dir(str(run), TrainConfig(model="mlp")), lambda: evaluate_run(str(run), "latest")):
        with pytest.raises(ConfigError, match=r"config.json is damaged \(not valid JSON.*--overwrite"):
            call()
    (run / "config.json").write_text('{"modle": "mlp"}')  # a field TrainConfig does not have
    with pytest.raises(ConfigError, match=r"config.json is damaged \(ConfigError: unknown config fields"):
        prepare_output_dir(str(run), TrainConfig(model="mlp"))


def test_output_dir_checks_of_a_non_chief_worker(tmp_path):
    """A non-chief worker never deletes; it refuses what the chief refuses where it sees the chief's run."""
    import json

    cfg = TrainConfig(model="mlp")
    run = tmp_path / "run"
    (run / "checkpoints" / "tmp_worker_1").mkdir(parents=True)  # its own copies, in a directory not shared
    assert prepare_output_dir(str(run), cfg, chief=False) is True  # resume from whatever the chief's checkpoints hold
    assert prepare_output_dir(str(tmp_path / "fresh"), cfg, chief=False) is True and not (tmp_path / "fresh").exists()
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert prepare_output_dir(str(run), cfg, chief=False) is True
    with pytest.raises(ConfigError, match="cannot resume: the config differs.*model: 'mlp' -> 'cnn'"):
        prepare_output_dir(str(run), TrainConfig(model="cnn"), chief=False)
    (run / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a finished run"):
        prepare_output_dir(str(run), cfg, chief=False)
    assert prepare_output_dir(str(run), cfg, overwrite=True, chief=False) is False
    assert (run / "results.json").exists() and (run / "checkpoints" / "tmp_worker_1").exists()  # the chief deletes, not a worker


def test_sigterm_during_a_save_completes_it_then_stops(tmp_path):
    """SIGTERM arriving while a checkpoint is being written: that save completes
    and, as it holds the current step, the loop stops without saving it twice;
    every checkpoint restores and training resumes to the same weights as an
    uninterrupted run."""
    import signal

    from tfcustom.training.trainer import TrainingInterrupted

    x, y = _data(160)
    pipe = InputPipeline(Split(x, y), 32, shuffle=True, seed=1)
    reference = _trainer()
    reference.fit(pipe, 2)

    t = _trainer()
    manager = tf.train.CheckpointManager(training_checkpoint(t), str(tmp_path), max_to_keep=10)
    original_save = manager.save
    calls = []

    def save_with_sigterm(*args, **kwargs):
        calls.append(kwargs.get("checkpoint_number"))
        if len(calls) == 2:  # the second periodic save (step 4): the signal lands mid-save
            os.kill(os.getpid(), signal.SIGTERM)
        return original_save(*args, **kwargs)

    manager.save = save_with_sigterm
    with pytest.raises(TrainingInterrupted, match="SIGTERM"):
        t.fit(pipe, 2, checkpoint_manager=manager, checkpoint_every_steps=2)
    assert calls == [2, 4]  # the interrupted save finished; the step it saved is where training stopped
    assert manager.latest_checkpoint.endswith("ckpt-4") and int(t.global_step.numpy()) == 4
    # Every checkpoint on disk restores.
    for path in manager.checkpoints:
        probe = _trainer()
        training_checkpoint(probe).restore(path).assert_existing_objects_matched()
    resumed = _trainer()
    _restore_latest_into(resumed, tmp_path, 10)
    resumed.fit(pipe, 2)
    for a, b in zip(reference.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
