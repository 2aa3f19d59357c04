"""The streaming input path measured: pipeline speed, training from shards vs memory, resume skip, memory.

    python benchmarks/input_pipeline.py                 # everything (Fashion-MNIST + 2 GB of generated shards)
    python benchmarks/input_pipeline.py --stream_gb=0   # without the memory part

1. **Pipeline alone**: examples/s of one training epoch of Fashion-MNIST read
   from 16 TFRecord shards (decode, normalise, block shuffle, batch 128), with
   and without ``--augment=crop,flip``, and of the in-memory pipeline
   (interleaved rounds, best each).
2. **Training**: images/s of the default CNN (``configs/fashion_mnist_cnn.flags``'
   model, Adam, batch 128) fed from the shards vs from memory, timed in
   interleaved rounds after a warm-up (best round each); the ratio is shards/memory.
3. **Resume skip**: time to the first batch of ``dataset(epoch, skip_batches)``
   at the first and at the last step of an epoch.
4. **Memory**: peak RSS of a fresh process that streams one shuffled epoch of
   generated shards (64x64x3 uint8 images, 12 KB each) of ``--stream_gb / 4``
   and ``--stream_gb`` GB with the default ``shuffle_buffer`` (10000 examples =
   123 MB), against a bound of ``--rss_bound_gb`` on the memory streaming adds
   to the process (peak RSS minus the RSS after importing TensorFlow and opening
   the dataset). The shards are deleted afterwards.

Results depend on the machine and its load; they are measurements, not assertions.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX directory.")
flags.DEFINE_string("work_dir", None, "Where shards are written (default: a temporary directory, deleted at the end).")
flags.DEFINE_integer("train_steps", 60, "Timed CNN steps per round and variant.")
flags.DEFINE_integer("rounds", 2, "Interleaved CNN timing rounds.")
flags.DEFINE_float("stream_gb", 2.0, "Size of the generated dataset streamed for the memory figure (0: skip).")
flags.DEFINE_float("rss_bound_gb", 1.0, "The memory budget of streaming (peak RSS above the process's RSS before the first read).")
flags.DEFINE_string("json_out", None, "Also write the results as JSON here.")
flags.DEFINE_string("_stream_child", None, "Internal: stream this shard directory and print the peak RSS.")


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _examples_per_s(make_dataset) -> float:
    n, t = 0, time.perf_counter()
    for _, y in make_dataset():
        n += int(y.shape[0])
    return n / (time.perf_counter() - t)


def pipeline_speed(mem, sharded):
    from tfcustom.data import InputPipeline, split_validation

    train_split, _ = split_validation(mem.train, 5000, 0)
    variants = {
        "shards": sharded.pipelines(128, lambda n: 500, 5000, 0)[0],
        "shards, --augment=crop,flip": sharded.pipelines(128, lambda n: 500, 5000, 0, augment=("crop", "flip"))[0],
        "memory": InputPipeline(train_split, 128, shuffle=True, seed=0),
    }
    best = {name: 0.0 for name in variants}
    for r in range(FLAGS.rounds + 1):  # interleaved rounds, best of each (round 0 included: no tracing to exclude)
        for name, p in variants.items():
            best[name] = max(best[name], _examples_per_s(lambda p=p: p.dataset(r)))
    return best


def training_speed(mem, sharded):
    import keras
    import tensorflow as tf

    from tfcustom import models
    from tfcustom.data import InputPipeline, split_validation
    from tfcustom.training.trainer import Trainer

    strategy = tf.distribute.get_strategy()
    train_split, _ = split_validation(mem.train, 5000, 0)
    pipes = {"memory": InputPipeline(train_split, 128, shuffle=True, seed=0), "shards": sharded.pipelines(128, lambda n: 500, 5000, 0)[0]}
    keras.utils.set_random_seed(0)
    model = models.get("cnn", 10, filters=[32, 64], dense_units=128, dropout=0.3, batch_norm=True)
    model(tf.zeros([1, 28, 28, 1]))
    trainer = Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.Adam(2e-3), ["accuracy"],
                      strategy=strategy, verbose=0)
    n = FLAGS.train_steps
    best = {k: 0.0 for k in pipes}
    for r in range(FLAGS.rounds + 1):  # round 0: warm-up (tracing)
        for name, pipe in pipes.items():
            it = iter(trainer._distribute(pipe, epoch=r))
            trainer.train_step(it, tf.constant(1, tf.int32))
            t = time.perf_counter()
            for _ in range(n):
                out = trainer.train_step(it, tf.constant(1, tf.int32))
            float(out["loss"])
            if r:
                best[name] = max(best[name], n * 128 / (time.perf_counter() - t))
    best["ratio shards/memory"] = best["shards"] / best["memory"]
    return best


def skip_latency(mem, sharded):
    from tfcustom.data import InputPipeline, split_validation

    train_split, _ = split_validation(mem.train, 5000, 0)
    out = {}
    for name, pipe in (("shards", sharded.pipelines(128, lambda n: 500, 5000, 0)[0]), ("memory", InputPipeline(train_split, 128, shuffle=True, seed=0))):
        for label, skip in (("first step", 0), ("last step", pipe.steps_per_epoch - 1)):
            t = time.perf_counter()
            next(iter(pipe.dataset(1, skip)))
            out[f"{name}, {label} (s)"] = time.perf_counter() - t
    return out


def write_generated_shards(directory: str, gb: float, shape=(64, 64, 3), per_shard: int = 4096) -> int:
    """Shards of random uint8 images (a pool of 256 distinct ones, repeated), written without hashing."""
    import numpy as np

    from tfcustom.data.tfrecord import FORMAT, VERSION, serialize_example, shard_name, write_spec
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pool = [serialize_example(rng.integers(0, 256, shape, dtype=np.uint8), i % 10) for i in range(256)]
    n = int(gb * 2**30 / len(pool[0]))
    shards = -(-n // per_shard)
    os.makedirs(directory, exist_ok=True)
    entries, first = [], 0
    for s in range(shards):
        count = min(per_shard, n - first)
        path = os.path.join(directory, shard_name("train", s, shards))
        with tf.io.TFRecordWriter(path) as w:
            for i in range(count):
                w.write(pool[(first + i) % 256])
        entries.append({"file": os.path.basename(path), "num_examples": count, "first_index": first, "bytes": os.path.getsize(path), "sha256": "-"})
        first += count
    test = os.path.join(directory, shard_name("test", 0, 1))
    with tf.io.TFRecordWriter(test) as w:
        w.write(pool[0])
    split = {"train": {"num_examples": n, "shards": entries},
             "test": {"num_examples": 1, "shards": [{"file": os.path.basename(test), "num_examples": 1, "first_index": 0, "bytes": os.path.getsize(test), "sha256": "-"}]}}
    write_spec(directory, {"format": FORMAT, "version": VERSION, "name": "generated", "image_shape": list(shape), "image_dtype": "uint8",
                           "num_classes": 10, "class_names": [str(i) for i in range(10)], "splits": split})
    return n


def stream_child(directory: str) -> None:
    from tfcustom.data import ShardedDataset

    pipe = ShardedDataset.open(directory, verify="size").pipeline("train", 128, shuffle=True, seed=0)
    base = _peak_rss_mb()
    t = time.perf_counter()
    n = sum(int(y.shape[0]) for _, y in pipe.dataset(0))
    print(json.dumps({"examples": n, "seconds": time.perf_counter() - t, "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": base}))


def memory(root: str):
    out = {}
    for gb in (FLAGS.stream_gb / 4, FLAGS.stream_gb):
        d = os.path.join(root, f"generated_{gb:g}gb")
        try:
            n = write_generated_shards(d, gb)
            proc = subprocess.run([sys.executable, __file__, f"--_stream_child={d}"], capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["dataset_gb"] = gb
            out[f"{gb:g} GB ({n} examples)"] = r
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return out


def main(argv):
    if FLAGS._stream_child:
        stream_child(FLAGS._stream_child)
        return
    from tfcustom.data import ShardedDataset, load
    from tfcustom.data.convert import convert

    root = FLAGS.work_dir or tempfile.mkdtemp(prefix="tfcustom_input_bench_")
    results = {}
    try:
        mem = load("fashion_mnist", FLAGS.data_dir)
        t = time.perf_counter()
        convert(mem, os.path.join(root, "fm"), num_shards=16, overwrite=True)
        results["convert Fashion-MNIST, 16 shards (s)"] = time.perf_counter() - t
        t = time.perf_counter()
        sharded = ShardedDataset.open(os.path.join(root, "fm"))
        results["open + verify SHA-256 of 55 MB (s)"] = time.perf_counter() - t
        results["pipeline alone (examples/s)"] = pipeline_speed(mem, sharded)
        results["default CNN training (images/s)"] = training_speed(mem, sharded)
        results["resume: time to the first batch"] = skip_latency(mem, sharded)
        if FLAGS.stream_gb > 0:
            results[f"peak RSS streaming generated shards (bound {FLAGS.rss_bound_gb:g} GB)"] = memory(root)
    finally:
        if not FLAGS.work_dir:
            shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
