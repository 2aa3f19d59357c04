"""Rollback on divergence (--on_nonfinite=rollback, tfcustom.training.rollback, skip_list, loss_spike; issue #23 item 3).

Oracles: an uninterrupted on_nonfinite="skip" run with the same planted NaN (a rollback
replays from the checkpoint to the bad step, then skips it: what "skip" does), bitwise,
on 1 and 2 replicas, in a fresh process with op determinism (tests/rollback_worker.py);
in the compiled step, a listed step against a NaN step skipped by "skip"; the step numbers
of the planted batch from its index; keras train_on_batch with the learning rates a
rollback sets; a NumPy running mean for the loss-spike rule; the schedule's own values.
"""

import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rollback_worker as worker  # noqa: E402
from fault_helpers import error_lines, tiny_args  # noqa: E402
from resume_helpers import run  # noqa: E402

from tfcustom import Trainer, TrainConfig  # noqa: E402
from tfcustom.callbacks.summaries import SummaryWriter  # noqa: E402
from tfcustom.data import InputPipeline, Split  # noqa: E402
from tfcustom.errors import ConfigError  # noqa: E402
from tfcustom.training.checkpoint import restore_latest, training_checkpoint  # noqa: E402
from tfcustom.optimizers.scaled_schedule import ScaledSchedule  # noqa: E402
from tfcustom.training import steps  # noqa: E402
from tfcustom.training.loss_spike import LossSpike  # noqa: E402
from tfcustom.training.rollback import Rollback  # noqa: E402
from tfcustom.training.skip_list import SkipList  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
PLANTED_STEPS = [worker.NAN_INDEX // worker.BATCH + 1 + epoch * (worker.N // worker.BATCH) for epoch in range(worker.EPOCHS)]


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((worker.D,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(worker.K)])


def _fit(optimizer, rollback, tmp_path, epochs=worker.EPOCHS):
    trainer = Trainer(_model(), LOSS, optimizer, on_nonfinite="rollback", rollback=rollback, verbose=0)
    manager = tf.train.CheckpointManager(training_checkpoint(trainer), str(tmp_path), max_to_keep=2)
    trainer.fit(InputPipeline(Split(*worker.data()), worker.BATCH), epochs, checkpoint_manager=manager, checkpoint_every_steps=worker.EVERY)
    return trainer, manager


def test_a_rollback_run_equals_the_skip_run_bitwise_on_1_and_2_replicas_and_resumes_exactly():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, worker.__file__], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert PLANTED_STEPS == [3, 9]
    for replicas, runs in result.items():
        oracle = runs["skip"]
        assert oracle["global_step"] == 12 and oracle["iterations"] == 10  # the two planted steps read, not applied
        for name, out in runs.items():
            if name.startswith("spike"):
                continue
            assert out["weights"] == oracle["weights"], (replicas, name)  # bitwise
            assert (out["global_step"], out["iterations"]) == (12, 10), (replicas, name)
            if name != "skip":
                assert out["skipped_steps"] == PLANTED_STEPS, (replicas, name)  # exactly the planted batches
                assert out["traces"] == 1, (replicas, name)  # no retracing per rollback
            if not name.startswith("killed"):  # a resumed Trainer's history starts at its checkpoint
                assert out["loss"] == oracle["loss"], (replicas, name)
    spike, spike_oracle = result["1"]["spike"], result["1"]["spike_oracle"]
    assert spike["skipped_steps"] == [200 // worker.BATCH + 1]  # a finite loss hundreds of times the running mean
    assert spike["weights"] == spike_oracle["weights"] and spike["iterations"] == spike_oracle["iterations"] == 15
    lines = [l for l in proc.stderr.splitlines() if "Rollback 1 of 3" in l]
    assert lines and "at global step 3 (epoch 1, batch 3 of 6); restored" in lines[0] and "ckpt-2 (global step 2)" in lines[0]
    assert "2 rollback(s) left" in lines[0]


def test_the_learning_rate_factor_equals_keras_train_on_batch_at_the_rates_a_rollback_sets(tmp_path):
    trainer, manager = _fit(keras.optimizers.SGD(0.1), Rollback(lr_factor=0.5), tmp_path)
    assert trainer.rollback.skipped_steps == PLANTED_STEPS
    # Rollback 1 restores ckpt-2 (0.1), so steps 4..8 run at 0.05; rollback 2 restores ckpt-8 (0.05): steps 10..12 at 0.025.
    oracle = _model()
    oracle.compile(keras.optimizers.SGD(0.1), LOSS)
    x, y = worker.data()
    steps_per_epoch = worker.N // worker.BATCH
    for step in range(1, worker.EPOCHS * steps_per_epoch + 1):
        if step in PLANTED_STEPS:
            continue
        oracle.optimizer.learning_rate = 0.1 if step < 3 else 0.05 if step < 9 else 0.025
        b = (step - 1) % steps_per_epoch
        oracle.train_on_batch(x[b * worker.BATCH:(b + 1) * worker.BATCH], y[b * worker.BATCH:(b + 1) * worker.BATCH])
    for ours, theirs in zip(trainer.model.get_weights(), oracle.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert float(trainer.optimizer.learning_rate.numpy()) == pytest.approx(0.025)
    assert float(trainer.rollback.lr_scale.numpy()) == 0.25


def test_the_factor_scales_a_schedule_and_is_in_the_checkpoint(tmp_path):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.9)
    trainer, manager = _fit(keras.optimizers.SGD(schedule), Rollback(lr_factor=0.5), tmp_path, epochs=1)
    assert trainer.rollback.skipped_steps == PLANTED_STEPS[:1]
    iterations = int(trainer.optimizer.iterations.numpy())
    assert float(trainer.optimizer.learning_rate) == pytest.approx(0.5 * 0.1 * 0.9 ** iterations, rel=1e-6)
    resumed = Trainer(_model(), LOSS, keras.optimizers.SGD(schedule), on_nonfinite="rollback", rollback=Rollback(lr_factor=0.5), verbose=0)
    assert restore_latest(training_checkpoint(resumed), manager) is not None
    assert resumed.rollback.skipped_steps == PLANTED_STEPS[:1] and float(resumed.rollback.lr_scale.numpy()) == 0.5
    assert float(resumed.optimizer.learning_rate) == pytest.approx(float(trainer.optimizer.learning_rate), rel=1e-6)


def _step(policy, rollback=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    optimizer = keras.optimizers.SGD(0.1)
    global_step = tf.Variable(0, dtype=tf.int64)
    guard = None if rollback is None else rollback.build(global_step, optimizer, tf.distribute.get_strategy())
    return model, optimizer, global_step, steps.make_train_step(model, LOSS, optimizer, on_nonfinite=policy, divergence=guard)


def _batches(n=64, nan_batch=None, big_batch=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = rng.integers(0, 3, n).astype("int64")
    if nan_batch is not None:
        x[nan_batch * 8] = np.nan
    w = np.ones(n, "float32")
    if big_batch is not None:
        w[big_batch * 8] = 1e3  # a finite loss far above the others'
    return tf.data.Dataset.from_tensor_slices((x, y, w)).batch(8)


def test_a_listed_step_is_read_not_applied_as_skip_skips_a_nan_step_in_one_multi_step_call():
    model_a, opt_a, _, skip_step = _step("skip")
    out_a = skip_step(iter(_batches(nan_batch=2)), 8)
    assert (int(out_a["steps_run"]), int(out_a["skipped"])) == (7, 1)
    rollback = Rollback()
    model_b, opt_b, global_step, listed_step = _step("rollback", rollback)
    global_step.assign(1)
    rollback.skip_list.add(4)  # global step 4 = the 3rd step of a call starting after global step 1: batch 2
    out_b = listed_step(iter(_batches()), 8)  # a clean batch 2: listed steps are skipped whatever they hold
    assert (int(out_b["steps_run"]), int(out_b["skip_listed"]), bool(out_b["nonfinite"])) == (7, 1, False)
    assert int(opt_a.iterations.numpy()) == int(opt_b.iterations.numpy()) == 7
    for a, b in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_array_equal(a, b)
    # A NaN stops the call at that step under "rollback" (the caller rolls back): 2 steps applied before it.
    _, opt_c, _, stop_step = _step("rollback", Rollback())
    out_c = stop_step(iter(_batches(nan_batch=2)), 8)
    assert bool(out_c["nonfinite"]) and int(out_c["steps_run"]) == 2 and int(opt_c.iterations.numpy()) == 2
    assert listed_step.experimental_get_tracing_count() == 1


def test_a_loss_spike_diverges_before_its_update():
    rollback = Rollback(loss_spike=5.0)
    model, optimizer, _, step = _step("rollback", rollback)
    out = step(iter(_batches(n=128, big_batch=12)), 16)  # the rule starts after 10 applied steps
    assert bool(out["nonfinite"]) and int(out["steps_run"]) == 12 and np.isfinite(float(out["loss"]))
    assert float(out["loss"]) > 5.0 * float(rollback.loss_spike.mean.numpy())
    assert int(rollback.loss_spike.count.numpy()) == 12 and int(optimizer.iterations.numpy()) == 12
    assert rollback.cause(float(out["loss"])).startswith("loss spike")


def test_the_skip_list_keeps_its_order_and_refuses_more_than_it_holds():
    skips = SkipList(capacity=2)
    skips.assign([9, 3, 9])
    assert skips.steps() == [9, 3] and len(skips) == 2 and bool(skips.contains(3)) and not bool(skips.contains(4))
    skips.add(3)  # listed already
    with pytest.raises(ConfigError, match="the skip list is full"):
        skips.add(5)


def test_scaled_schedule_round_trips():
    schedule = ScaledSchedule(keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.01]), tf.Variable(0.5))
    copy = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(copy, ScaledSchedule) and copy.get_config() == schedule.get_config()
    assert [float(copy(s)) for s in (0, 5)] == pytest.approx([0.05, 0.005])


def test_the_loss_spike_rule_is_the_numpy_running_mean():
    losses = [2.0, 1.5, 1.0, 9.0, 1.2, 0.9, 3.5, 1.1, 50.0, 1.0]
    applied = [True, True, True, False, True, True, True, True, False, True]
    spike = LossSpike(factor=3.0, window=3)
    mean, n, decisions = 0.0, 0, []
    for loss, ok in zip(losses, applied):
        decisions.append(bool(spike.is_spike(tf.constant(loss))))
        assert decisions[-1] == (n >= 3 and loss > 3.0 * mean)
        spike.observe(tf.constant(loss), tf.constant(ok))
        if ok:
            n += 1
            mean += (loss - mean) / min(n, 3)
        assert float(spike.mean.numpy()) == pytest.approx(mean, rel=1e-6) and int(spike.count.numpy()) == n
    assert decisions == [False, False, False, True, False, False, False, False, True, False]
    assert not bool(spike.is_spike(tf.constant(np.nan)))  # a NaN is the non-finite check's, not a spike


def test_rollback_is_refused_up_front_in_one_line(tmp_path):
    x, y = worker.data()
    cases = [
        (lambda: Trainer(_model(), LOSS, "sgd", on_nonfinite="rollback", verbose=0).fit((x, y), 1), "needs a checkpoint to roll back to"),
        (lambda: Trainer(_model(), LOSS, "sgd", on_nonfinite="skip", rollback=Rollback()), "is used with on_nonfinite='rollback'"),
        (lambda: Rollback(max_rollbacks=0), "max_rollbacks must be an integer from 1 to 64"),
        (lambda: Rollback(lr_factor=2.0), "rollback_lr_factor must be in (0, 1]"),
        (lambda: Rollback(loss_spike=1.0), "rollback_loss_spike must be a number > 1"),
        (lambda: Rollback.for_policy("skip", Rollback(), None, None, None), "is used with on_nonfinite='rollback'"),
        (lambda: TrainConfig(on_nonfinite="skip", rollback_lr_factor=0.5).validate(), "apply to on_nonfinite=rollback"),
        (lambda: TrainConfig(on_nonfinite="rollback", max_rollbacks=0).validate(), "max_rollbacks must be an integer from 1 to 64"),
    ]
    trainer = Trainer(_model(), LOSS, "sgd", on_nonfinite="rollback", verbose=0)
    manager = tf.train.CheckpointManager(training_checkpoint(trainer), str(tmp_path), max_to_keep=1)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    cases.append((lambda: trainer.fit(dataset, 1, checkpoint_manager=manager), "which a plain tf.data.Dataset cannot"))
    for make, message in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert message in str(info.value) and "\n" not in str(info.value)


def test_max_rollbacks_then_one_error_line_exit_3_and_the_checkpoint_intact(small_idx_dir, tmp_path):
    """A learning rate of 1e30 diverges at every step after the first: two rollbacks, then the stop."""
    out = str(tmp_path / "run")
    r = run(tiny_args(small_idx_dir, out, "--optimizer=sgd", "--learning_rate=1e30", "--on_nonfinite=rollback", "--max_rollbacks=2"))
    assert r.returncode == 3, r.stderr[-3000:]
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and "at global step 4 (epoch 1, batch 4 of 7) after 2 rollback(s)" in errors[0], errors
    assert "received: [2, 3]" in errors[0] and "--max_rollbacks" in errors[0]
    rollbacks = [l for l in r.stderr.splitlines() if "] Rollback " in l]
    assert len(rollbacks) == 2 and "global step 2" in rollbacks[0] and "0 rollback(s) left" in rollbacks[1]
    reader = tf.train.load_checkpoint(os.path.join(out, "checkpoints", "ckpt-0"))  # the only checkpoint: the start
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["checkpoint", "ckpt-0.data-00000-of-00001", "ckpt-0.index"]
    weights = [reader.get_tensor(k) for k in reader.get_variable_to_dtype_map() if k.startswith("model_variables/")]
    assert weights and all(np.all(np.isfinite(v)) for v in weights)


def _batch_losses(logdir):
    out = {}
    for path in sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "batch_loss":
                    out.setdefault(int(event.step), []).append(float(tf.make_ndarray(value.tensor)))
    return out


def test_tensorboard_keeps_one_point_per_step_as_the_skip_run(tmp_path):
    """A rollback to ckpt-0 replays steps 1-2: their points are dropped and written again, as on resume."""
    series = {}
    for policy in ("skip", "rollback"):
        writer = SummaryWriter(str(tmp_path / policy / "tensorboard"), log_every_steps=1)
        writer.start(0, 0)
        trainer = Trainer(_model(), LOSS, keras.optimizers.SGD(0.1), on_nonfinite=policy, summary_writer=writer, verbose=0)
        manager = tf.train.CheckpointManager(training_checkpoint(trainer), str(tmp_path / policy / "ckpt"), max_to_keep=2)
        trainer.fit(InputPipeline(Split(*worker.data()), worker.BATCH), 1, checkpoint_manager=manager, checkpoint_every_steps=4)
        writer.close()
        series[policy] = _batch_losses(writer.logdir)
    assert sorted(series["rollback"]) == list(range(1, 7)) and all(len(v) == 1 for v in series["rollback"].values())
    assert series["rollback"].keys() == series["skip"].keys()
    for step, values in series["skip"].items():
        assert series["rollback"][step] == pytest.approx(values, rel=1e-6), step
