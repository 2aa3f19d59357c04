"""Rollback on divergence, the compiled step's part (tfcustom.training.rollback, skip_list, loss_spike; issue #23 item 3).

Oracles: a step skipped by the skip list equals a NaN step skipped by on_nonfinite="skip"
(weights, counts); a NumPy running mean for the loss-spike rule; the schedule's own values.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom.errors import ConfigError
from tfcustom.optimizers.scaled_schedule import ScaledSchedule
from tfcustom.training import steps
from tfcustom.training.loss_spike import LossSpike
from tfcustom.training.rollback import Rollback
from tfcustom.training.skip_list import SkipList

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


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


def test_rollback_settings_are_refused_in_one_line():
    for make, message in [
        (lambda: Rollback(max_rollbacks=0), "max_rollbacks must be an integer from 1 to 64"),
        (lambda: Rollback(lr_factor=2.0), "rollback_lr_factor must be in (0, 1]"),
        (lambda: Rollback(loss_spike=1.0), "rollback_loss_spike must be a number > 1"),
        (lambda: Rollback.for_policy("skip", Rollback(), None, None, None), "is used with on_nonfinite='rollback'"),
    ]:
        with pytest.raises(ConfigError) as info:
            make()
        assert message in str(info.value) and "\n" not in str(info.value)
