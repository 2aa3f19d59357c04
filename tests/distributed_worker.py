"""Helper processes for tests/test_distributed_training.py (not a test module).

Logical CPU devices and the multi-worker runtime must be set up before
TensorFlow initialises its devices, so each scenario runs in a fresh
interpreter started by the tests:

* ``python distributed_worker.py suite OUT_DIR``: splits the CPU into 4
  logical devices and, in this one process, trains the same model under
  ``OneDeviceStrategy("/cpu:0")`` and ``MirroredStrategy`` over 2 and 4 of
  them (invariance, BatchNorm, steps_per_execution, exact evaluation, mixed
  float16 with loss scaling), then runs :data:`MW_CONFIG` single-process as
  the multi-worker oracle. Writes ``OUT_DIR/suite.json`` and
  ``OUT_DIR/oracle.npz``.
* ``python distributed_worker.py worker OUT_DIR WORKDIR`` (with ``TF_CONFIG``
  set): ``tfcustom.distribute.strategy.select("multi_worker")`` first, then
  ``train_and_evaluate(MW_CONFIG, WORKDIR)``; writes
  ``OUT_DIR/worker_<index>.json`` and ``.npz``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

NUM_CLASSES = 10
IMAGE = (8, 8, 1)
GLOBAL_BATCH = 32
N_TRAIN = 330  # 11 steps per epoch, the last one partial (10 examples: 3/3/2/2 over 4 replicas)
N_TEST = 1001  # batch 64: 15 full batches and one of 41 (21 + 20 over 2 replicas)
EVAL_BATCH = 64
EPOCHS = 2


def make_split(n: int, seed: int):
    """Learnable synthetic uint8 images: a class prototype plus noise."""
    from tfcustom.data import Split

    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(1234).random((NUM_CLASSES,) + IMAGE)
    y = rng.integers(0, NUM_CLASSES, n).astype("int32")
    x = np.clip(255 * (0.5 * protos[y] + 0.5 * rng.random((n,) + IMAGE)), 0, 255).astype("uint8")
    return Split(x, y)


def make_dataset():
    from tfcustom.data import Dataset

    return Dataset("synthetic", make_split(N_TRAIN + 64, 1), make_split(N_TEST, 2), NUM_CLASSES, [str(i) for i in range(NUM_CLASSES)])


def mw_config():
    """The config the multi-worker test trains (2 epochs, 10 steps each)."""
    from tfcustom import TrainConfig

    return TrainConfig(model="mlp", model_kwargs={"hidden_units": [32]}, epochs=EPOCHS, batch_size=GLOBAL_BATCH,
                       validation_size=64, eval_batch_size=EVAL_BATCH, verbose=0, seed=0, learning_rate=1e-2,
                       log_every_steps=4)  # step summaries: the chief writes, every worker reads the metrics


def run_config(strategy, workdir):
    """``train_and_evaluate(mw_config(), workdir)``; returns (results, final weights)."""
    import tfcustom.experiment.train as train_lib

    captured = {}
    original = train_lib.build_model

    def capture(*args, **kwargs):
        captured["model"] = original(*args, **kwargs)
        return captured["model"]

    train_lib.build_model = capture  # to read the trained weights afterwards
    try:
        results = train_lib.train_and_evaluate(mw_config(), workdir, strategy=strategy, dataset=make_dataset())
    finally:
        train_lib.build_model = original
    run_config.model = captured["model"]  # for stream_checks
    return results, [np.asarray(v.numpy()) for v in captured["model"].weights]


def stream_checks(strategy, model, out_dir: str, index: int) -> dict:
    """Under the worker's MultiWorkerMirroredStrategy: the example ids this
    worker's pipeline reads in one epoch of the training split streamed from 4
    TFRecord shards, and the trained model evaluated on the streamed test split."""
    import keras
    import tensorflow as tf

    from tfcustom.data import ShardedDataset
    from tfcustom.data.convert import convert
    from tfcustom.training.trainer import Trainer

    shard_dir = os.path.join(out_dir, f"shards_{index}")
    convert(make_dataset(), shard_dir, num_shards=4, overwrite=True)
    ds = ShardedDataset.open(shard_dir)
    train = ds.pipeline("train", GLOBAL_BATCH, shuffle=True, seed=1, shuffle_buffer=50)
    dist = strategy.distribute_datasets_from_function(lambda ctx: train.replica_records(1, 0, ctx).map(lambda x, y, ids: ids))
    ids = [int(i) for batch in dist for t in strategy.experimental_local_results(batch) for i in t.numpy()]
    with strategy.scope():
        optimizer = keras.optimizers.SGD(0.1)
    trainer = Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer, ["accuracy"], strategy=strategy, verbose=0)
    return {"stream_ids": ids, "stream_test": trainer.evaluate(ds.pipeline("test", EVAL_BATCH)),
            "stream_plan": [s[:3] for s in train.read_plan(1, 0, tf.distribute.InputContext(2, index, 2))[0]]}


def max_diff(a, b) -> float:
    return float(max(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))) for x, y in zip(a, b)))


# ---------------------------------------------------------------------------
# suite: one process, 4 logical CPUs, strategies over 1, 2 and 4 of them
# ---------------------------------------------------------------------------


def suite(out_dir: str) -> None:
    import tensorflow as tf

    from tfcustom.distribute import strategy as strategy_lib

    strategy_lib.configure_cpu_replicas(4)
    import keras

    keras.utils.set_random_seed(0)  # the same initial weights in every run

    from tfcustom import models
    from tfcustom.data import InputPipeline
    from tfcustom.training.trainer import Trainer

    def mirrored(devices, key_base):
        # Two MirroredStrategy objects over overlapping devices in one process
        # would both use collective group key 1 (TF: "joining a group with
        # size 4, but that group has size 2"); TF's own tests give each a key
        # base through this class attribute ("Only set this in tests").
        tf.distribute.MirroredStrategy._collective_key_base = key_base
        try:
            return tf.distribute.MirroredStrategy(devices)
        finally:
            tf.distribute.MirroredStrategy._collective_key_base = 0

    strategies = {
        1: tf.distribute.OneDeviceStrategy("/cpu:0"),
        2: mirrored(["/cpu:0", "/cpu:1"], 0),
        4: mirrored([f"/cpu:{i}" for i in range(4)], 10000),
    }
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    train_pipe = InputPipeline(make_split(N_TRAIN, 1), GLOBAL_BATCH, shuffle=True, seed=5)
    test_pipe = InputPipeline(make_split(N_TEST, 2), EVAL_BATCH)
    init = {}

    def build(strategy, batch_norm=False):
        with strategy.scope():
            model = models.get("mlp", NUM_CLASSES, hidden_units=(32, 16), batch_norm=batch_norm)
            model(tf.zeros((1,) + IMAGE))
        key = (batch_norm, keras.mixed_precision.global_policy().name)
        if key not in init:
            init[key] = model.get_weights()
        model.set_weights(init[key])
        return model

    def sgd(strategy, loss_scale=False):
        # SGD with momentum: its update is linear in the gradient, so the weights
        # differ only by the float error of the summed gradient. (Adam divides by
        # sqrt(v): where gradients nearly cancel it amplifies that error; measured
        # 1e-7 to 1e-5 with 4 replicas depending on the initial weights.)
        with strategy.scope():  # Keras optimizers belong to the strategy they are created under
            opt = keras.optimizers.SGD(0.1, momentum=0.9)
            return keras.optimizers.LossScaleOptimizer(opt) if loss_scale else opt

    def train(n, batch_norm=False, spe=1, jit=False):
        strategy = strategies[n]
        model = build(strategy, batch_norm)
        trainer = Trainer(model, loss, sgd(strategy), ["accuracy"], strategy=strategy,
                          steps_per_execution=spe, jit_compile=jit, verbose=0)
        history = trainer.fit(train_pipe, epochs=EPOCHS)
        return model, trainer, [np.asarray(w) for w in model.get_weights()], history.records

    out = {"timings": {}}
    t = time.time()
    # Invariance (BatchNorm-free) and steps_per_execution / XLA under 2 replicas.
    models_by_n, weights, records = {}, {}, {}
    for n in (1, 2, 4):
        models_by_n[n], _, weights[n], records[n] = train(n)
    _, _, w_spe10, rec_spe10 = train(2, spe=10)
    _, _, w_jit, _ = train(2, jit=True)
    out["invariance"] = {
        "max_diff_1_vs_2": max_diff(weights[1], weights[2]),
        "max_diff_1_vs_4": max_diff(weights[1], weights[4]),
        "max_diff_1_vs_2_jit": max_diff(weights[1], w_jit),
        "train_loss": {str(n): [r["loss"] for r in records[n]] for n in records},
        "train_accuracy": {str(n): [r["accuracy"] for r in records[n]] for n in records},
        "weights_changed": max_diff(weights[1], init[(False, "float32")]),
    }
    out["steps_per_execution"] = {
        "max_diff_k10_vs_k1": max_diff(weights[2], w_spe10),
        "loss_k1": [r["loss"] for r in records[2]],
        "loss_k10": [r["loss"] for r in rec_spe10],
    }
    out["timings"]["invariance"] = time.time() - t

    # BatchNorm: statistics are per replica, so the results differ.
    t = time.time()
    # (The last batch of 10 examples is split 5/5: before the pipeline split
    # partial batches evenly, replica 2 got an empty batch and BatchNorm NaNs.)
    bn_model, bn_trainer, bn_2, _ = train(2, batch_norm=True)
    bn_1 = train(1, batch_norm=True)[2]
    # Exact evaluation of a BatchNorm model trained on 2 replicas: the replicas'
    # moving statistics are averaged, so the evaluated model is the saved one.
    moving = [v for v in bn_model.non_trainable_variables if "moving" in v.path]
    copies_differ = max(float(np.max(np.abs(a.numpy() - b.numpy())))
                        for v in moving for a, b in [strategies[2].experimental_local_results(v.value)])
    eval_2 = bn_trainer.evaluate(test_pipe)
    single = build(strategies[1], batch_norm=True)
    single.set_weights(bn_model.get_weights())
    eval_1 = Trainer(single, loss, sgd(strategies[1]), ["accuracy"], strategy=strategies[1], verbose=0).evaluate(test_pipe)
    out["batch_norm"] = {"max_diff_1_vs_2": max_diff(bn_1, bn_2), "replica_copies_max_diff": copies_differ,
                         "eval_2_replicas": eval_2, "eval_1_device_same_weights": eval_1}
    out["timings"]["batch_norm"] = time.time() - t

    # Exact evaluation: the 1-replica model's weights evaluated under 1, 2 and 4 replicas.
    t = time.time()
    trained = weights[1]
    logits = models_by_n[1].predict(test_pipe.split.x.astype("float32") / 255.0, verbose=0)
    y = test_pipe.split.y
    z = logits - logits.max(axis=1, keepdims=True)
    nll = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1)))
    out["numpy_oracle"] = {"correct": int((logits.argmax(1) == y).sum()), "loss": float(nll.mean()), "n": int(len(y))}
    evals = {}
    for n in (1, 2, 4):
        model = build(strategies[n])
        model.set_weights(trained)
        trainer = Trainer(model, loss, sgd(strategies[n]), ["accuracy"], strategy=strategies[n], verbose=0)
        evals[str(n)] = trainer.evaluate(test_pipe)
    out["evaluation"] = evals
    # The same, streamed from 3 TFRecord shards (tfcustom.data.streaming).
    from tfcustom.data import Dataset, ShardedDataset
    from tfcustom.data.convert import convert

    shard_dir = os.path.join(out_dir, "shards")
    convert(Dataset("synthetic", test_pipe.split, test_pipe.split, NUM_CLASSES, [str(i) for i in range(NUM_CLASSES)]), shard_dir, num_shards=3)
    stream = ShardedDataset.open(shard_dir).pipeline("test", EVAL_BATCH)
    streamed = {}
    for n in (1, 2, 4):
        model = build(strategies[n])
        model.set_weights(trained)
        streamed[str(n)] = Trainer(model, loss, sgd(strategies[n]), ["accuracy"], strategy=strategies[n], verbose=0).evaluate(stream)
    out["streaming_evaluation"] = streamed
    out["timings"]["evaluation"] = time.time() - t

    # Mixed float16 under 2 replicas: loss scaling, a forced overflow, and the
    # float32 run as a loose oracle.
    t = time.time()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        strategy = strategies[2]
        model = build(strategy)
        logits_dtype = tf.as_dtype(model(tf.zeros((2,) + IMAGE)).dtype).name
        # Same starting point as the float32 runs (variables are float32 under the policy).
        model.set_weights(init[(False, "float32")])
        optimizer = sgd(strategy, loss_scale=True)
        trainer = Trainer(model, loss, optimizer, ["accuracy"], strategy=strategy, verbose=0)
        before = [np.asarray(w) for w in model.get_weights()]
        optimizer.dynamic_scale.assign(1e30)  # the float16 gradients overflow at this scale
        iterator = iter(trainer._distribute(train_pipe, epoch=0))
        step_out = trainer.train_step(iterator, tf.constant(1))
        overflow = {
            "steps_run": int(step_out["steps_run"]), "loss_scale_skipped": int(step_out["loss_scale_skipped"]),
            "nonfinite": bool(step_out["nonfinite"]), "skipped": int(step_out["skipped"]),
            "scale_after": float(optimizer.dynamic_scale.numpy()),
            "weights_max_change": max_diff(before, model.get_weights()),
            "iterations": int(optimizer.iterations.numpy()),
            "train_loss_count": float(trainer.train_loss.count.numpy()),
        }
        optimizer.dynamic_scale.assign(2.0 ** 15)
        mixed_model = build(strategy)
        mixed_model.set_weights(init[(False, "float32")])
        mixed_opt = sgd(strategy, loss_scale=True)
        mixed_trainer = Trainer(mixed_model, loss, mixed_opt, ["accuracy"], strategy=strategy, verbose=0)
        mixed_history = mixed_trainer.fit(train_pipe, epochs=EPOCHS)
        mixed_weights = [np.asarray(w) for w in mixed_model.get_weights()]
        out["mixed_float16"] = {
            "logits_dtype": logits_dtype,
            "overflow_step": overflow,
            "max_diff_vs_float32": max_diff(weights[2], mixed_weights),
            "max_abs_weight": float(max(np.abs(w).max() for w in weights[2])),
            "loss_mixed": [r["loss"] for r in mixed_history.records],
            "loss_float32": [r["loss"] for r in records[2]],
            "final_scale": float(mixed_opt.dynamic_scale.numpy()),
            "hidden_compute_dtype": mixed_model.hidden[0].compute_dtype,
        }
    finally:
        keras.mixed_precision.set_global_policy(previous)
    out["timings"]["mixed_float16"] = time.time() - t

    # The multi-worker oracle: the same config, single process, one device.
    t = time.time()
    results, oracle = run_config(strategies[1], os.path.join(out_dir, "oracle_run"))
    np.savez(os.path.join(out_dir, "oracle.npz"), *oracle)
    out["oracle"] = {"test": results["test"], "history_loss": [r["loss"] for r in results["history"]]}
    out["timings"]["oracle"] = time.time() - t
    with open(os.path.join(out_dir, "suite.json"), "w") as f:
        json.dump(out, f, indent=1)


# ---------------------------------------------------------------------------
# worker: one of the multi-worker processes
# ---------------------------------------------------------------------------


def worker(out_dir: str, workdir: str) -> None:
    from tfcustom.distribute import strategy as strategy_lib

    strategy = strategy_lib.select("multi_worker")  # first: before anything else touches TF
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    start = time.time()
    results, weights = run_config(strategy, workdir)
    np.savez(os.path.join(out_dir, f"worker_{index}.npz"), *weights)
    streamed = stream_checks(strategy, run_config.model, out_dir, index)
    with open(os.path.join(out_dir, f"worker_{index}.json"), "w") as f:
        json.dump({"test": results["test"], "history_loss": [r["loss"] for r in results["history"]],
                   "num_replicas": results["num_replicas"], "strategy": results["strategy"],
                   "train_s": time.time() - start, **streamed}, f)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    mode = sys.argv[1]
    if mode == "suite":
        suite(sys.argv[2])
    elif mode == "worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode!r}: use suite or worker")
