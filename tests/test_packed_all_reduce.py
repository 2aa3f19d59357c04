"""Under 2 logical CPUs (one subprocess): the traced train step sums the
gradients with one packed all-reduce (a few collectives per step, not one per
variable), gives the same update as one replica on the whole batch, and
tfcustom's Dropout draws different, independent masks on the two replicas."""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json
from collections import Counter
import numpy as np, tensorflow as tf, keras
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from tfcustom.training import steps
from tfcustom.layers.dropout import Dropout

out = {}
x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
y = (np.arange(64) % 3).astype("int32")
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

def train(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,))] + [keras.layers.Dense(8) for _ in range(5)] + [keras.layers.Dense(3)])
        opt = keras.optimizers.Adam(0.01)
    step = steps.make_train_step(model, loss, opt, strategy=strategy, clip_global_norm=1.0)
    it = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(32)))
    graph = step.get_concrete_function(it, tf.constant(1)).graph.as_graph_def()
    ops = Counter(n.op for n in graph.node)
    for f in graph.library.function:
        ops.update(n.op for n in f.node_def)
    step(it, tf.constant(2))
    weights = [np.asarray(v.value.values[-1] if hasattr(v.value, "values") else v) for v in model.trainable_variables]
    return ops, weights, len(model.trainable_variables)

ops2, w2, n_vars = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
_, w1, _ = train(tf.distribute.MirroredStrategy(["/cpu:0"]))
out["n_vars"] = n_vars
out["all_reduces"] = ops2.get("CollectiveReduceV2", 0)
out["addn"] = ops2.get("AddN", 0)
out["max_weight_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(w1, w2))

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    layer = Dropout(0.5, seed=1)
    layer.build((None, 4000))

@tf.function
def masks():
    return strategy.run(lambda: tf.reshape(layer(tf.ones((1, 4000)), training=True), [-1]))

per_replica = [strategy.experimental_local_results(masks()) for _ in range(2)]
m = [[np.asarray(v) != 0 for v in step] for step in per_replica]
out["replica_agreement"] = float((m[0][0] == m[0][1]).mean())
out["step_agreement"] = float((m[0][0] == m[1][0]).mean())
out["keep"] = float(np.mean([k.mean() for s in m for k in s]))
out["counters"] = [int(v) for v in strategy.experimental_local_results(layer.counter.value)]
print("RESULT " + json.dumps(out))
"""


def test_packed_all_reduce_and_per_replica_dropout_on_two_cpus():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    # One all-reduce of the batch size and one packed all-reduce of the 12
    # gradients, on each of the 2 devices; no per-variable reduction (AddN).
    assert out["n_vars"] == 12 and out["all_reduces"] == 4 and out["addn"] == 0
    # Same update as one replica on the whole batch (the sum's order may differ in the last bit).
    assert out["max_weight_diff"] < 1e-6
    # Dropout: masks of the two replicas (and of two steps) agree on about half
    # the units, as independent masks with keep probability 1/2 do (4000 units: sd 0.008).
    assert abs(out["keep"] - 0.5) < 0.02
    assert abs(out["replica_agreement"] - 0.5) < 0.05 and abs(out["step_agreement"] - 0.5) < 0.05
    assert out["counters"] == [2, 2]
