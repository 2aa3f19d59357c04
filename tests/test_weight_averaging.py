"""EMA and SWA of the weights (tfcustom.callbacks.weight_averaging), BatchNorm re-estimation, --ema_decay / --swa_*.

Oracles: NumPy (the EMA recurrence over the weights after each step, the mean of
the epoch-end weights, the mean of the batch moments); exact resume against the
uninterrupted run, bitwise, on 1 and 2 replicas (tests/weight_averaging_worker.py,
4 subprocesses in 2 parallel waves).
"""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weight_averaging_worker as worker  # noqa: E402

import tfcustom  # noqa: E402
from tfcustom.callbacks import ExponentialMovingAverage, StochasticWeightAveraging, SWALearningRate  # noqa: E402
from tfcustom.errors import ConfigError  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _trainer(averages, steps_per_execution=1, learning_rate=0.1, on_nonfinite="stop"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((worker.D,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(worker.K)])
    return tfcustom.Trainer(model, LOSS, keras.optimizers.SGD(learning_rate), verbose=0, weight_averaging=averages,
                            steps_per_execution=steps_per_execution, on_nonfinite=on_nonfinite)


def _recorder(trainer, hook):
    """A LambdaCallback recording the weights at ``hook`` (after each step or epoch), and the list."""
    seen = []
    callback = keras.callbacks.LambdaCallback(**{hook: lambda *_, **__: seen.append([w.copy() for w in trainer.model.get_weights()])})
    return callback, seen


def test_ema_is_the_numpy_recurrence_over_every_step_in_the_compiled_step():
    x, y = worker.data(80)  # 5 steps per epoch
    ema = ExponentialMovingAverage(decay=0.8)
    first = _trainer([ema])
    callback, seen = _recorder(first, "on_train_batch_end")
    first.fit((x, y), epochs=2, batch_size=16, callbacks=[callback])
    assert len(seen) == 10 and int(ema.num_averaged.numpy()) == 10
    oracle = [w.astype("float64") for w in seen[0]]  # the first update copies the weights
    for weights in seen[1:]:
        oracle = [0.8 * a + 0.2 * w for a, w in zip(oracle, weights)]
    for average, expected in zip(ema.averages, oracle):
        np.testing.assert_allclose(average.numpy(), expected, rtol=1e-5, atol=1e-6)
    # Several steps per compiled call (3, 3, 3, 1): still one update per step; dynamic decay.
    dynamic = ExponentialMovingAverage(decay=0.8, dynamic_decay=True)
    trainer = _trainer([dynamic], steps_per_execution=3)
    trainer.fit((x, y), epochs=2, batch_size=16)
    oracle = [w.astype("float64") for w in seen[0]]
    for n, weights in enumerate(seen[1:], start=1):
        decay = min(0.8, (1 + n) / (10 + n))
        oracle = [decay * a + (1 - decay) * w for a, w in zip(oracle, weights)]
    for average, expected in zip(dynamic.averages, oracle):
        np.testing.assert_allclose(average.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert trainer.train_step.experimental_get_tracing_count() == 1
    # A step skipped for a NaN loss is not averaged: one NaN sample weight, in one batch of each epoch.
    skipping = ExponentialMovingAverage(decay=0.8)
    trainer = _trainer([skipping], on_nonfinite="skip")
    weights = np.ones(len(x), "float32")
    weights[7] = np.nan
    trainer.fit((x, y, weights), epochs=2, batch_size=16)
    assert int(skipping.num_averaged.numpy()) == int(trainer.optimizer.iterations.numpy()) == 8
    assert ema.assign_to_model() and all(np.array_equal(a.numpy(), w) for a, w in zip(ema.averages, first.model.get_weights()))


def test_swa_is_the_mean_of_the_epoch_end_weights_and_trains_at_swa_lr():
    x, y = worker.data(64)
    swa = StochasticWeightAveraging(start_epoch=2, swa_lr=0.05)
    trainer = _trainer([swa])
    callback, seen = _recorder(trainer, "on_epoch_end")
    history = trainer.fit((x, y), epochs=4, batch_size=16, callbacks=[callback])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.05, 0.05])
    assert int(swa.num_averaged.numpy()) == 3
    for i, average in enumerate(swa.averages):
        np.testing.assert_allclose(average.numpy(), np.mean([s[i].astype("float64") for s in seen[1:]], axis=0), rtol=1e-6, atol=1e-7)
    # Not started yet: nothing to put into the model.
    late = StochasticWeightAveraging(start_epoch=3)
    trainer = _trainer([late])
    before = [w.copy() for w in trainer.model.get_weights()]
    trainer.fit((x, y), epochs=2, batch_size=16)
    after = trainer.model.get_weights()
    assert not late.assign_to_model() and not all(np.array_equal(a, b) for a, b in zip(before, after))
    assert all(np.array_equal(a, b) for a, b in zip(after, trainer.model.get_weights()))


def test_misuse_is_refused_in_one_line(caplog):
    x, y = worker.data(32)
    cosine = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10)
    model = keras.Sequential([keras.Input((worker.D,)), keras.layers.Dense(worker.K)])
    with pytest.raises(ConfigError, match="swa_lr sets the learning rate but the optimizer's learning rate is a schedule.*SWALearningRate"):
        tfcustom.Trainer(model, LOSS, keras.optimizers.SGD(cosine), weight_averaging=StochasticWeightAveraging(1, swa_lr=0.01))
    in_schedule = StochasticWeightAveraging(1, swa_lr=0.01)  # the schedule holds swa_lr: accepted, not assigned
    trainer = tfcustom.Trainer(model, LOSS, keras.optimizers.SGD(SWALearningRate(cosine, 0, 0.01)), weight_averaging=in_schedule, verbose=0)
    assert trainer.fit((x, y), epochs=1, batch_size=16).history["learning_rate"] == pytest.approx([0.01])
    trainer = _trainer([])
    with pytest.raises(ConfigError, match=r"weight average was passed to fit's callbacks.*Trainer\(weight_averaging="):
        trainer.fit((x, y), epochs=1, callbacks=[ExponentialMovingAverage()])
    for bad, message in ((lambda: ExponentialMovingAverage(1.0), "ema decay must be in"),
                         (lambda: StochasticWeightAveraging(0), "start_epoch must be an integer >= 1"),
                         (lambda: _trainer(["ema"]), "weight_averaging takes")):
        with pytest.raises(ConfigError, match=message):
            bad()
    # A make_train_step override that drops the per-step update: said once, at the first epoch end.
    class OwnStep(tfcustom.Trainer):
        def make_train_step(self):
            return tfcustom.steps.make_train_step(self.model, self.loss, self.optimizer, strategy=self.strategy)

    keras.utils.set_random_seed(0)
    own = OwnStep(keras.Sequential([keras.Input((worker.D,)), keras.layers.Dense(worker.K)]), LOSS, "sgd", verbose=0,
                  weight_averaging=[ExponentialMovingAverage()])
    with caplog.at_level("WARNING"):
        own.fit((x, y), epochs=2, batch_size=16)
    assert sum("the average was never updated" in r.getMessage() for r in caplog.records) == 1
    # The SWA learning rate on a schedule, in the optimizer: its step counts, not the epochs.
    lr = SWALearningRate(cosine, start_step=4, swa_lr=0.01)
    expected = [float(cosine(s)) for s in range(4)] + [0.01] * 3
    assert [float(lr(s)) for s in range(7)] == pytest.approx(expected)


def test_averaging_objects_round_trip_through_keras_serialization():
    cosine = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=100, warmup_target=0.2, warmup_steps=5)
    for obj in (ExponentialMovingAverage(0.99, dynamic_decay=True), StochasticWeightAveraging(3, swa_lr=0.02),
                SWALearningRate(cosine, start_step=40, swa_lr=0.01), SWALearningRate(0.1, start_step=2, swa_lr=0.01)):
        config = keras.saving.serialize_keras_object(obj)
        assert config["registered_name"] == f"tfcustom>{type(obj).__name__}"
        copy = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
        assert type(copy) is type(obj)
        if isinstance(obj, SWALearningRate):
            assert [float(copy(s)) for s in (0, 3, 39, 40, 80)] == [float(obj(s)) for s in (0, 3, 39, 40, 80)]
        else:
            assert copy.get_config() == obj.get_config()


def bn_oracle(bn):
    """Each replica's shares of every global batch (as InputPipeline splits them): the mean of their moments,
    per replica, then over the replicas; the second layer sees the first normalized by its batch moments."""
    x, replicas = bn["x"].astype("float64"), int(bn["replicas"])
    shares = [s for start in range(0, len(x), worker.BATCH) for s in np.array_split(x[start:start + worker.BATCH], replicas)]
    moments = []
    for s in shares:
        h = s @ bn["kernel"].astype("float64") + bn["bias"]
        m, v = h.mean(axis=0), h.var(axis=0)
        z = np.maximum((h - m) / np.sqrt(v + 1e-3) * bn["gamma1"] + bn["beta1"], 0.0)
        moments.append((m, v, z.mean(axis=0), z.var(axis=0)))
    per_replica = [np.mean([moments[i] for i in range(r, len(moments), replicas)], axis=0) for r in range(replicas)]
    return np.mean(per_replica, axis=0), len(shares) // replicas


def check_bn(path):
    bn = np.load(path)
    (m1, v1, m2, v2), batches = bn_oracle(bn)
    assert int(bn["batches"]) == batches == 5
    for key, expected in (("mean1", m1), ("var1", v1), ("mean2", m2), ("var2", v2)):
        np.testing.assert_allclose(bn[key], expected, rtol=2e-5, atol=1e-6, err_msg=key)
    for key in ("copies_mean1", "copies_var1"):  # every replica holds the same statistics
        assert all(np.array_equal(copy, bn[key][0]) for copy in bn[key]), key


def test_batch_norm_reestimation_is_the_mean_of_the_batch_moments(tmp_path):
    worker.batch_norm(str(tmp_path), tf.distribute.get_strategy())
    check_bn(tmp_path / "bn.npz")


# -- SIGKILL then resume, 1 and 2 replicas; BatchNorm under 2 replicas (tests/weight_averaging_worker.py) --------

def _worker(mode, out, returncode=-signal.SIGKILL):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, worker.__file__, mode, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == returncode, proc.stderr[-3000:]  # "kill" and "finish" end in a run that SIGKILLs itself


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """2 replicas: killed (one process), then resumed and run uninterrupted (the next, which ends in a killed
    1-replica run); 1 replica: resumed and run uninterrupted (a third process)."""
    out = tmp_path_factory.mktemp("weight_averaging")
    _worker("kill", out)
    _worker("finish", out)
    _worker("replicas1", out, returncode=0)  # a fresh process with op determinism, as the one that was killed
    return out


@pytest.mark.parametrize("replicas", [1, 2])
def test_sigkill_then_resume_gives_the_same_averages_bitwise(resumed, replicas):
    run = resumed / f"replicas{replicas}"
    killed, reference = np.load(run / "killed" / "final.npz"), np.load(run / "reference" / "final.npz")
    assert str(killed["restored"]) == f"ckpt-{worker.KILL_AT - 1}" and str(reference["restored"]) == ""
    assert sorted(killed.files) == sorted(reference.files)
    for key in reference.files:
        if key not in ("restored", "history"):
            assert np.array_equal(killed[key], reference[key]), key  # bitwise: weights, BatchNorm statistics, both averages
    resumed_epochs = json.loads(str(killed["history"]))  # the epochs the resumed process ran (from epoch 3)
    assert resumed_epochs == json.loads(str(reference["history"]))[-len(resumed_epochs):] and resumed_epochs[0]["epoch"] == worker.KILL_AT // worker.STEPS + 1
    assert int(reference["ema_0"]) == worker.STEPS * worker.EPOCHS and int(reference["swa_0"]) == worker.EPOCHS - 1
    assert not np.array_equal(reference["ema_1"], reference["swa_1"])
    for name in ("ema", "swa"):  # one MirroredVariable per weight: every replica's copy the same, bitwise
        assert int(reference[f"{name}_replica_copies"]) == replicas and reference[f"{name}_replica_copies_equal"].all()


def test_batch_norm_reestimation_under_two_replicas_is_the_mean_of_every_share(resumed):
    check_bn(resumed / "replicas2" / "bn.npz")


# -- tfcustom-train --ema_decay / --swa_start_epoch -------------------------------------------------------------

def test_config_refuses_what_cannot_work():
    for changes, message in (({"ema_decay": 1.0}, "ema_decay must be in"), ({"swa_start_epoch": 11}, "swa_start_epoch must be an epoch of the run"),
                             ({"swa_lr": 0.01}, "swa_lr needs swa_start_epoch"),
                             ({"ema_decay": 0.99, "swa_start_epoch": 2}, "choose one weight averaging"),
                             ({"ema_decay": 0.99, "export_best": True}, "export_best exports the raw weights")):
        with pytest.raises(ConfigError, match=message):
            tfcustom.TrainConfig(**changes).validate()


def test_run_tests_raw_and_averaged_weights_and_exports_the_average(tmp_path):
    from tfcustom.data import from_numpy

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (96, 8, 8, 1), dtype=np.uint8), rng.integers(0, 3, 96)
    data = from_numpy(x[:64], y[:64], x[64:], y[64:])
    config = tfcustom.TrainConfig(model="mlp", model_kwargs={"hidden_units": [16], "batch_norm": True}, epochs=3, batch_size=16,
                                  validation_size=0, verbose=0, tensorboard=False, jit_compile=False, precision="float32",
                                  swa_start_epoch=2, swa_lr=0.01, lr_schedule="cosine")
    results = tfcustom.train_and_evaluate(config, str(tmp_path), dataset=data)
    record = results["weight_averaging"]
    assert record["kind"] == "swa" and record["swa_lr"] == 0.01 and record["num_averaged"] == 2 and record["batch_norm_batches"] == 4
    assert results["test"] == record["averaged"] != record["raw"]
    assert [r["learning_rate"] for r in results["history"]][1:] == pytest.approx([0.01, 0.01])
    model = keras.models.load_model(str(tmp_path / "model.keras"))
    logits = model.predict(x[64:].astype("float32") / 255.0, verbose=0)
    assert np.mean(np.argmax(logits, axis=1) == y[64:]) == pytest.approx(results["test"]["accuracy"])
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["weight_averaging"]["raw"] == record["raw"]
