"""NaN/Inf guard under 2 replicas (a subprocess with 2 logical CPUs): the bad
example sits in replica 1's half of the batch, and both replicas agree to stop
or skip."""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, os, sys, tempfile
import numpy as np, tensorflow as tf, keras
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from tfcustom import Trainer
from tfcustom.training.checkpoint import restore_latest, training_checkpoint
from tfcustom.data import InputPipeline, Split
from tfcustom.errors import NonFiniteLossError

rng = np.random.default_rng(0)
x = rng.normal(size=(128, 6)).astype("float32")
y = rng.integers(0, 3, 128).astype("int32")
x[32 + 20] = np.inf   # step 2 (global batch 32), example 20: replica 1 (examples 16..31 of the batch)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}
for policy in ("stop", "skip"):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(3)])
        opt = keras.optimizers.SGD(0.1)
    t = Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), opt, strategy=strategy, on_nonfinite=policy, verbose=0)
    d = tempfile.mkdtemp()
    manager = tf.train.CheckpointManager(training_checkpoint(t), d, max_to_keep=10)
    try:
        h = t.fit(InputPipeline(Split(x, y), 32), 1, checkpoint_manager=manager, checkpoint_every_steps=1)
        out[policy] = {"error": None, "epochs": len(h)}
    except NonFiniteLossError as e:
        out[policy] = {"error": str(e)}
    with strategy.scope():
        restored = restore_latest(training_checkpoint(t), manager)
    out[policy].update(
        checkpoints=[int(p.rsplit("-", 1)[1]) for p in manager.checkpoints],
        iterations=int(np.asarray(opt.iterations)),
        finite=bool(all(np.all(np.isfinite(np.asarray(v))) for v in model.variables if np.asarray(v).dtype.kind == "f")),
        replica_values_equal=bool(all(
            all(np.array_equal(np.asarray(c), np.asarray(v.values[0])) for c in v.values)
            for v in [w.value for w in model.trainable_variables])),
    )
print("RESULT " + json.dumps(out))
"""


def test_nonfinite_guard_under_two_replicas():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    stop, skip = out["stop"], out["skip"]
    assert "epoch 1, step 2 (batch 1 of the epoch)" in stop["error"]
    assert stop["checkpoints"] == [1] and stop["iterations"] == 1 and stop["finite"]  # only the good step is on disk
    assert skip["error"] is None and skip["epochs"] == 1
    assert skip["iterations"] == 3 and skip["finite"]  # 4 steps, the bad one skipped
    assert stop["replica_values_equal"] and skip["replica_values_equal"]
