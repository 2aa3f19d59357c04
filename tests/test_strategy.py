"""tfcustom.distribute.strategy: the selector's choices and errors, precision, loss scaling.

Most checks run in this process (they never split the CPU or start a TPU or
multi-worker runtime). What needs a fresh TensorFlow (``tpu='local'``, which
initialises TF's devices, and the logical-CPU split) runs in one subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom.training import steps
from tfcustom.distribute import strategy as strategy_lib
from tfcustom.experiment.config import TrainConfig
from tfcustom.errors import ConfigError
from tfcustom.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -- in a fresh interpreter -----------------------------------------------------------

_FRESH = textwrap.dedent(
    """
    import json, logging, time
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO)
    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
    logging.getLogger("absl").addHandler(Keep())
    from tfcustom.distribute import strategy as S
    from tfcustom.errors import ConfigError
    out = {}
    # 0. select("cpu") and select("auto") (and their log lines) leave TF's devices uninitialised.
    S.select("cpu")
    S.select("auto")
    out["initialised_after_cpu_auto"] = S.devices_initialised()
    # 1. The logical-CPU split then still works, and is idempotent.
    s3 = S.select("mirrored", num_cpu_replicas=3)
    S.configure_cpu_replicas(3)
    out["mirrored_replicas"] = s3.num_replicas_in_sync
    # 2. A different split once TF's devices exist: a clear error.
    try:
        S.select("mirrored", num_cpu_replicas=2)
    except ConfigError as e:
        out["late_split_error"] = str(e)
    # 3. auto: the CPU here, logged.
    auto = S.select("auto")
    out["auto"] = [type(auto).__name__, auto.num_replicas_in_sync, S.device_type(auto), S.resolve_precision("auto", auto)]
    # 4. tpu with no TPU: how long until the error.
    t = time.monotonic()
    try:
        S.select("tpu")
    except ConfigError as e:
        out["tpu_error"] = str(e)
    out["tpu_seconds"] = time.monotonic() - t
    out["logs"] = records
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def fresh():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    for k in ("TF_CONFIG", "TPU_NAME", "COLAB_TPU_ADDR"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_select_tpu_without_a_tpu_fails_within_seconds(fresh):
    assert fresh["tpu_seconds"] < 10, fresh["tpu_seconds"]
    msg = fresh["tpu_error"]
    assert "no usable TPU at 'local'" in msg and "0 TPU device(s) visible" in msg
    assert "--tpu=grpc://" in msg and "--strategy=auto, cpu or gpu" in msg


def test_num_cpu_replicas_splits_the_cpu_first_and_errors_late(fresh):
    assert fresh["initialised_after_cpu_auto"] is False
    assert fresh["mirrored_replicas"] == 3
    msg = fresh["late_split_error"]
    assert "already initialised with 3 logical CPU device(s)" in msg
    # The message names what really initialised them: the earlier select, not a model the user never built.
    assert "an earlier tfcustom.distribute.strategy.select('mirrored') in this process created the MirroredStrategy, 3 replica(s)" in msg
    assert "(received: 'num_cpu_replicas=2'). Make tfcustom.distribute.strategy.select('mirrored', num_cpu_replicas=2) the first" in msg


def test_late_split_after_user_ops_says_so(monkeypatch):
    tf.constant(1.0) + 1.0  # the user ran an op first (this process' devices are initialised)
    monkeypatch.setattr(strategy_lib, "_initialised_by", None)
    with pytest.raises(ConfigError, match=r"code that ran earlier in this process initialised them \(the first TensorFlow op"):
        strategy_lib.configure_cpu_replicas(7)


def test_auto_picks_the_cpu_here_and_logs_it(fresh):
    assert fresh["auto"] == ["_DefaultDistributionStrategy", 1, "CPU", "float32"]
    assert any(l.startswith("Strategy 'auto': default strategy, 1 replica(s) on") and "CPU:0" in l for l in fresh["logs"]), fresh["logs"]
    assert any(l.startswith("Strategy 'mirrored': MirroredStrategy, 3 replica(s)") for l in fresh["logs"]), fresh["logs"]


# -- in this process ------------------------------------------------------------------------


def test_unreachable_tpu_address_fails_fast_without_touching_tf():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"no TPU answers at grpc://127.0.0.1:{port}: nothing accepted a connection"):
        strategy_lib.select("tpu", tpu=f"grpc://127.0.0.1:{port}")
    assert time.monotonic() - start < strategy_lib.TPU_PROBE_TIMEOUT_S + 1


def test_gpu_without_a_gpu_is_a_clear_error():
    assert not tf.config.list_physical_devices("GPU")
    with pytest.raises(ConfigError, match=r"no GPU is visible to TensorFlow .*received: '0 GPUs'.*nvidia-smi.*--strategy=cpu or auto"):
        strategy_lib.select("gpu")


def test_cpu_and_mirrored_over_a_device_list():
    cpu = strategy_lib.select("cpu")
    assert cpu is tf.distribute.get_strategy() and cpu.num_replicas_in_sync == 1  # the default strategy
    mirrored = strategy_lib.select("mirrored", devices=["/cpu:0"])
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and mirrored.num_replicas_in_sync == 1


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("bogus", {}, "unknown strategy"),
        ("cpu", {"num_cpu_replicas": 2}, "num_cpu_replicas applies only to strategy 'mirrored'"),
        ("auto", {"devices": ["/cpu:0"]}, "devices applies only to strategy 'mirrored'"),
        ("gpu", {"tpu": "local"}, "a TPU address applies only to strategy 'tpu' or 'auto'"),
        ("mirrored", {"num_cpu_replicas": 0}, "num_cpu_replicas must be a positive integer"),
        ("mirrored", {"devices": ["/cpu:0"], "num_cpu_replicas": 2}, "either devices or num_cpu_replicas"),
        ("tpu", {"tpu": "grpc://no-port"}, "must look like grpc://HOST:PORT"),
    ],
)
def test_arguments_that_do_not_fit_the_name(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        strategy_lib.select(name, **kwargs)


_GOOD = {"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize(
    "tf_config, match",
    [
        (None, r"needs the cluster description in \$TF_CONFIG, which is not set"),
        ('{"cluster": ', r"TF_CONFIG is not valid JSON \(Expecting value at character 12\)"),
        ("[1, 2]", "TF_CONFIG must be a JSON object"),
        (json.dumps({"task": _GOOD["task"]}), 'TF_CONFIG has no "cluster" object'),
        (json.dumps({"cluster": {"ps": ["h:1"]}, "task": _GOOD["task"]}), 'lists no "worker"'),
        (json.dumps({"cluster": {"worker": ["10.0.0.1"]}, "task": {"type": "worker", "index": 0}}), "is not a 'host:port' address"),
        (json.dumps({"cluster": _GOOD["cluster"]}), 'TF_CONFIG has no "task" object'),
        (json.dumps({"cluster": _GOOD["cluster"], "task": {"type": "chief", "index": 0}}), "task type is not a job of the cluster"),
        (json.dumps({"cluster": _GOOD["cluster"], "task": {"type": "worker", "index": "1"}}), "task index must be an integer"),
        (json.dumps({"cluster": _GOOD["cluster"], "task": {"type": "worker", "index": 2}}), r"out of range for the 2 'worker' address\(es\).*Use an index in 0\.\.1"),
    ],
)
def test_malformed_tf_config_fails_before_tensorflow_sees_it(monkeypatch, tf_config, match):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=match):
        strategy_lib.select("multi_worker")


def test_valid_tf_config_parses():
    assert strategy_lib.parse_tf_config(json.dumps(_GOOD)) == _GOOD


# -- precision ------------------------------------------------------------------------------


def test_precision_auto_follows_the_device_and_names_are_checked():
    cpu = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert strategy_lib.resolve_precision("auto", cpu) == "float32"
    for name in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert strategy_lib.resolve_precision(name, cpu) == name
    with pytest.raises(ConfigError, match="unknown precision"):
        strategy_lib.resolve_precision("float16", cpu)
    previous = keras.mixed_precision.global_policy()
    try:
        assert strategy_lib.set_precision("mixed_bfloat16", cpu) == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy(previous)
    sgd = keras.optimizers.SGD(0.1)
    assert strategy_lib.wrap_optimizer(sgd, "float32") is sgd
    wrapped = strategy_lib.wrap_optimizer(sgd, "mixed_float16")
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer) and wrapped.inner_optimizer is sgd


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"strategy": "bogus"}, "unknown strategy"),
        ({"num_cpu_replicas": 2}, "num_cpu_replicas applies only to strategy 'mirrored'"),
        ({"strategy": "mirrored", "num_cpu_replicas": 0}, "num_cpu_replicas must be a positive integer"),
        ({"strategy": "gpu", "tpu_address": "local"}, "a TPU address applies only"),
        ({"precision": "half"}, "unknown precision"),
        ({"log_replica_losses": -1}, "log_replica_losses must be an integer >= 0"),
    ],
)
def test_config_validates_the_new_fields(changes, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**changes).validate()


def _tiny(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3, dtype="float32")])
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()


def test_mixed_float16_loss_scaling_single_device():
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ref = _tiny()
    init = ref.get_weights()
    step32 = steps.make_train_step(ref, loss, keras.optimizers.SGD(0.1))
    step32(iter(_data()), tf.constant(8))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _tiny()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.set_weights(init)
    assert model.layers[0].compute_dtype == "float16"
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), dynamic_growth_steps=4)
    step = steps.make_train_step(model, loss, optimizer)

    # An overflowing scale: the step is skipped and the scale halved, not a NaN-policy stop.
    optimizer.dynamic_scale.assign(1e30)
    out = step(iter(_data()), tf.constant(1))
    assert int(out["loss_scale_skipped"]) == 1 and int(out["steps_run"]) == 1 and not bool(out["nonfinite"])
    assert float(optimizer.dynamic_scale.numpy()) == pytest.approx(5e29, rel=1e-6)
    for a, b in zip(model.get_weights(), init):
        np.testing.assert_array_equal(a, b)

    # From the default scale: 8 steps track float32 (loose), and the scale
    # doubles after every 4 finite steps, as in Keras.
    optimizer.dynamic_scale.assign(2.0 ** 15)
    out = step(iter(_data()), tf.constant(8))
    assert int(out["loss_scale_skipped"]) == 0 and int(out["steps_run"]) == 8
    assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 17
    diff = max(np.abs(a - b).max() for a, b in zip(model.get_weights(), ref.get_weights()))
    assert 0 < diff < 2e-2, diff

    # A non-finite *loss* is still the NaN policy's business: stop, scale kept.
    bad = tf.data.Dataset.from_tensors((np.full((4, 6), np.nan, "float32"), np.zeros(4, "int32"))).repeat()
    out = step(iter(bad), tf.constant(3))
    assert bool(out["nonfinite"]) and int(out["steps_run"]) == 0 and int(out["loss_scale_skipped"]) == 0
    assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 17


def test_loss_scaling_needs_a_gradient_fn_that_takes_the_scale():
    from tfcustom.training.sam import SAM

    model = _tiny()
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    with pytest.raises(ConfigError, match="needs a gradient_fn that takes a loss_scale argument"):
        steps.make_train_step(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer, gradient_fn=SAM(0.05))


def test_trainer_rejects_an_optimizer_created_outside_the_strategy_scope():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = _tiny()
        inside = keras.optimizers.SGD(0.1)
    outside = keras.optimizers.SGD(0.1)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ConfigError, match="optimizer was created outside the strategy's scope.*inside `with strategy.scope\\(\\):`"):
        Trainer(model, loss, outside, [], strategy=strategy, verbose=0)
    Trainer(model, loss, inside, [], strategy=strategy, verbose=0)


def test_log_replica_losses(caplog):
    from tfcustom.data import InputPipeline, Split

    rng = np.random.default_rng(0)
    pipe = InputPipeline(Split(rng.integers(0, 255, (40, 4, 4, 1)).astype("uint8"), rng.integers(0, 3, 40).astype("int32")), 8)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    trainer = Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.SGD(0.1), [],
                      verbose=0, log_replica_losses=2, steps_per_execution=3)
    with caplog.at_level(logging.INFO, logger="absl"):
        trainer.fit(pipe, epochs=1)
    lines = [r.getMessage() for r in caplog.records if "replicas' shares" in r.getMessage()]
    # 5 steps in calls of 3 and 2: step 3 crosses 2, step 5 crosses 4 and ends the epoch.
    assert [l.split(":")[0] for l in lines] == ["step 3", "step 5"], lines
    assert "= sum of the 1 replicas' shares [" in lines[0]
    with pytest.raises(ConfigError, match="log_replica_losses must be an integer >= 0"):
        Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.SGD(0.1), [], log_replica_losses=-1)
