# %% [markdown]
# # Data parallelism on the 8 cores of a TPU (or 8 logical CPUs)
#
# A Colab TPU v2-8 has 8 cores. Data parallelism puts a copy of the model on each core, cuts every
# **global batch** into 8 per-core batches, lets each core compute its loss and gradients on its
# share, sums the gradients over the cores and applies the one update everywhere. This notebook
# shows each piece: the sharded batch, the loss **of each core** and their sum, the compiled
# (XLA) per-core step, several steps per call (`steps_per_execution`), `mixed_bfloat16`, and
# checkpoints that let training resume after the runtime restarts.
#
# **Runtime**: *Runtime > Change runtime type > TPU* (v2-8: 8 cores). On any other runtime the very
# same cells run on 8 logical CPU devices (the CPU split in 8), so the per-core output looks the same.
# If the TPU cannot be used (a common problem: see the setup cell), the notebook says why in one
# paragraph and carries on with the GPU or the 8 logical CPUs.

# %% setup

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
NUM_CPU_REPLICAS = 8  # logical CPU devices when there is no TPU (or GPU)
GLOBAL_BATCH = 256  # split over the replicas: 32 per core
TRAIN_EXAMPLES = 24576  # Fashion-MNIST training images used (a multiple of GLOBAL_BATCH; 0: all)
TEST_EXAMPLES = 0  # test images evaluated (a multiple of 1 000; 0: all 10 000)
EPOCHS = 2
STEPS_PER_EXECUTION = 16  # training steps per tf.function call (one host round trip)
REPORT_EVERY = 16  # show the per-core losses every this many steps
REPORTS = 3  # per-core reports in section 4
CHECKPOINT_EVERY = 32  # steps between checkpoints (Colab stops runtimes without notice)
CHECKPOINT_DIR = "tpu_checkpoints"  # on Colab, a Google Drive folder survives a runtime reset
FRESH_START = True  # delete CHECKPOINT_DIR first; False after a restart, to resume
PRECISION = "auto"  # mixed_bfloat16 on a TPU, float32 elsewhere
SEED = 0

# %% [markdown]
# ## 1. Pick the TPU, or fall back
# `tfcustom.distribute.colab.select_strategy` must run before any other TensorFlow operation. On a TPU runtime
# it connects to the TPU (`TPUStrategy`). If that fails it prints what happened and what to try,
# and uses the GPU(s) or `NUM_CPU_REPLICAS` logical CPU devices (`MirroredStrategy`) instead.

# %%
import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf
from absl import logging as absl_logging

import tfcustom
from tfcustom.training.checkpoint import restore_latest, training_checkpoint
from tfcustom.data import InputPipeline, Split

tf.get_logger().setLevel("WARNING")  # TensorFlow's own INFO lines (collectives, devices) stay quiet
choice = tfcustom.distribute.colab.select_strategy(num_cpu_replicas=NUM_CPU_REPLICAS)
strategy = choice.strategy
replicas = strategy.num_replicas_in_sync
devices = [d.rsplit("/", 1)[-1] for d in strategy.extended.worker_devices]
print(f"{choice.device}: {type(strategy).__name__} with {replicas} replicas on {', '.join(devices)}")
keras.utils.set_random_seed(SEED)
tf.config.experimental.enable_op_determinism()

# %% [markdown]
# ## 2. Precision
# TPUs compute fastest in bfloat16: `mixed_bfloat16` computes in bfloat16 and keeps the variables
# (and tfcustom's logits and loss) in float32. bfloat16 has float32's range, so no loss scaling is
# needed. `auto` picks it on a TPU and float32 elsewhere.

# %%
policy = tfcustom.distribute.strategy.set_precision(PRECISION, strategy)
print("Keras dtype policy:", policy)

# %% [markdown]
# ## 3. The global batch, sharded
# The pipeline yields global batches of `GLOBAL_BATCH` images; under the strategy each replica
# receives one contiguous slice. `drop_remainder=True` keeps every batch the same shape, which
# the TPU compiler needs.

# %%
ds = tfcustom.distribute.colab.load_fashion_mnist()
train = Split(ds.train.x[:TRAIN_EXAMPLES or None], ds.train.y[:TRAIN_EXAMPLES or None])
train_pipe = InputPipeline(train, GLOBAL_BATCH, shuffle=True, seed=SEED, drop_remainder=True)
test = Split(ds.test.x[:TEST_EXAMPLES or None], ds.test.y[:TEST_EXAMPLES or None])
test_pipe = InputPipeline(test, 1000)  # every batch full (static shapes)
dist = strategy.distribute_datasets_from_function(lambda ctx: train_pipe.dataset(0, 0, ctx))
x, y = next(iter(dist))
shards = strategy.experimental_local_results(y)
print(f"global batch {GLOBAL_BATCH} over {replicas} replicas; {train_pipe.steps_per_epoch} steps per epoch")
for i, shard in enumerate(shards):
    print(f"  replica {i}: {tuple(strategy.experimental_local_results(x)[i].shape)} images, labels {shard.numpy()[:8].tolist()} ...")
first_batch = train_pipe.order(0)[:GLOBAL_BATCH]
assert np.array_equal(np.concatenate([s.numpy() for s in shards]), train.y[first_batch])  # the slices make up the batch

# %% [markdown]
# ## 4. The loss of each core
# `make_train_step` builds the step every replica runs: forward and backward pass (XLA-compiled with
# `jit_compile=True`), the replica's loss being its examples' loss summed and divided by the
# **global** batch size, so the 8 per-core losses **sum** to the global-batch mean loss and the
# summed gradients are those of one big batch. Each call runs `STEPS_PER_EXECUTION` steps; it
# returns the last step's `loss` and `replica_losses`.
#
# First, an independent check: the first step's loss equals Keras' loss of the initial model on the
# whole first global batch, computed on one device.

# %%
def build():
    with strategy.scope():
        model = tfcustom.models.get("mlp", num_classes=10, hidden_units=[256, 128])
        model(tf.zeros((1, 28, 28, 1)))
        optimizer = keras.optimizers.Adam(1e-3)
    return model, optimizer


loss_fn = tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True)
model, optimizer = build()
x0 = train.x[first_batch].astype("float32") / 255.0
keras_first_loss = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(train.y[first_batch], model(x0)))
step = tfcustom.make_train_step(model, loss_fn, optimizer, strategy=strategy, jit_compile=True)
iterator = iter(strategy.distribute_datasets_from_function(lambda ctx: train_pipe.dataset(0, 0, ctx)))
out = step(iterator, tf.constant(1))
first_loss = float(out["loss"])
print(f"step 1: loss {first_loss:.6f}; Keras on the same global batch, one device: {keras_first_loss:.6f}")

assert REPORTS * REPORT_EVERY <= train_pipe.steps_per_epoch, "REPORTS * REPORT_EVERY must fit in one epoch"
reports = [{"step": 1, "loss": first_loss, "replica_losses": out["replica_losses"].numpy().tolist()}]
done = 1
for _ in range(REPORTS):
    n = REPORT_EVERY - done % REPORT_EVERY
    out = step(iterator, tf.constant(n))
    done += n
    reports.append({"step": done, "loss": float(out["loss"]), "replica_losses": out["replica_losses"].numpy().tolist()})
print(f"{'step':>5} " + " ".join(f"{'core ' + str(i):>8}" for i in range(replicas)) + f" {'sum':>9} {'loss':>9}")
for r in reports:
    print(f"{r['step']:>5} " + " ".join(f"{v:8.4f}" for v in r["replica_losses"]) + f" {sum(r['replica_losses']):9.5f} {r['loss']:9.5f}")

# %% [markdown]
# The same numbers as a picture: each core's share of the loss (thin lines) and their sum, which is
# the global-batch mean loss (the thick line lies on the loss the step returned, the dots).

# %%
import matplotlib.pyplot as plt

steps_seen = [r["step"] for r in reports]
shares = np.array([r["replica_losses"] for r in reports])
fig, ax = plt.subplots(figsize=(8, 3.6))
for i in range(replicas):
    ax.plot(steps_seen, shares[:, i], lw=0.8, alpha=0.7, label=f"core {i}" if replicas <= 8 else None)
ax.plot(steps_seen, shares.sum(axis=1), lw=2.5, color="black", label="sum of the cores")
ax.plot(steps_seen, [r["loss"] for r in reports], "o", color="tab:red", ms=4, label="loss returned by the step")
ax.set(xlabel="step", ylabel="loss", title=f"Per-core losses and their sum ({replicas} replicas)")
ax.legend(fontsize=7, ncol=2)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Train with the Trainer, with checkpoints
# The same step inside the `Trainer`: `steps_per_execution` steps per call, the XLA-compiled replica
# step, and `log_replica_losses` printing each core's share every `REPORT_EVERY` steps (absl INFO).
# A checkpoint every `CHECKPOINT_EVERY` steps and at each epoch end holds the model, the optimizer
# and the position in the data. Colab may stop a runtime at any time without notice, so periodic
# checkpoints are the protection: `resume()` restores the newest one before training.

# %%
if FRESH_START:
    shutil.rmtree(CHECKPOINT_DIR, ignore_errors=True)


def resume():
    """A fresh model, optimizer and Trainer, restored from the newest checkpoint if there is one."""
    model, optimizer = build()
    trainer = tfcustom.Trainer(model, loss_fn, optimizer, metrics=["accuracy"], strategy=strategy,
                               steps_per_execution=STEPS_PER_EXECUTION, jit_compile=True, log_replica_losses=REPORT_EVERY)
    manager = tf.train.CheckpointManager(training_checkpoint(trainer), CHECKPOINT_DIR, max_to_keep=3)
    with strategy.scope():
        path = restore_latest(manager.checkpoint, manager)
    if path:
        print(f"Resumed from {path}: global step {int(trainer.global_step.numpy())}, epoch {int(trainer.epoch.numpy()) + 1}, "
              f"step {int(trainer.step_in_epoch.numpy())} of the epoch")
    else:
        print("No checkpoint: training starts from the initial weights")
    return trainer, manager


absl_logging.set_verbosity(absl_logging.INFO)  # show tfcustom's log lines (per-core losses, checkpoints)
trainer, manager = resume()
trainer.fit(train_pipe, epochs=1, checkpoint_manager=manager, checkpoint_every_steps=CHECKPOINT_EVERY)
weights_at_stop = [v.numpy() for v in trainer.model.weights]
step_at_stop = int(trainer.global_step.numpy())
print("checkpoints:", [os.path.basename(p) for p in manager.checkpoints])

# %% [markdown]
# ## 6. After a restart
# Pretend the runtime restarted here: nothing in memory survives, only `CHECKPOINT_DIR`. On Colab you
# would run all cells again (with `FRESH_START = False`); here a fresh model and Trainer restore the
# newest checkpoint and training continues to `EPOCHS` from exactly where it stopped.

# %%
del trainer, manager
trainer, manager = resume()
restored_difference = max(float(np.max(np.abs(v.numpy() - w))) for v, w in zip(trainer.model.weights, weights_at_stop))
resumed_step = int(trainer.global_step.numpy())
print(f"restored weights vs the weights at the stop: max difference {restored_difference}")
history = trainer.fit(train_pipe, epochs=EPOCHS, checkpoint_manager=manager, checkpoint_every_steps=CHECKPOINT_EVERY)
absl_logging.set_verbosity(absl_logging.WARNING)

# %% [markdown]
# ## 7. Test accuracy

# %%
results = trainer.evaluate(test_pipe)
print(f"test accuracy {results['accuracy']:.4f}, test loss {results['loss']:.4f} on {len(test)} images "
      f"after {int(trainer.global_step.numpy())} steps on {replicas} {choice.device} replica(s) ({policy})")

# %% [markdown]
# ## What this run showed

# %%
FACTS = {
    "device": choice.device, "fell_back": choice.fell_back, "replicas": replicas, "policy": policy,
    "reports": reports, "first_loss": first_loss, "keras_first_loss": keras_first_loss,
    "step_at_stop": step_at_stop, "resumed_step": resumed_step, "restored_difference": restored_difference,
    "final_step": int(trainer.global_step.numpy()), "test_accuracy": results["accuracy"],
}
tolerance = 1e-2 if policy == "mixed_bfloat16" else 1e-5
for r in reports:
    assert len(r["replica_losses"]) == replicas
    assert abs(sum(r["replica_losses"]) - r["loss"]) <= 1e-6 * max(1.0, abs(r["loss"]))  # the cores' losses sum to the loss
assert abs(first_loss - keras_first_loss) <= tolerance * keras_first_loss  # ... which is the global-batch loss
assert resumed_step == step_at_stop and restored_difference == 0.0  # resumed exactly where it stopped
assert FACTS["final_step"] == EPOCHS * train_pipe.steps_per_epoch
print("NOTEBOOK_FACTS " + json.dumps(FACTS))
