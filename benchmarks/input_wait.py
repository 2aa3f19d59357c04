"""Is the logged input wait true? The main job's log against a cached-batch experiment.

    python benchmarks/input_wait.py --json_out=benchmarks/input_wait.json

1. **The main job** (``tfcustom-train --flagfile=configs/fashion_mnist_cnn.flags``, all of
   Fashion-MNIST, ``--epochs`` epochs): the epoch log's "% of the step time waiting for
   input" and examples/s, read from its log lines.
2. **The same model, batch and ``steps_per_execution`` through the Trainer**, fed (a) the
   in-memory training split through ``tf.data`` and (b) **one cached batch repeated** (input
   cost ~0), timed in interleaved rounds: the wait share the step reports and examples/s.

If the main job's share is true, it is close to the cached batch's and the main job runs at
about the cached batch's speed (a real input bottleneck would make the cached batch faster by
that share). Results depend on the machine and its load: take them on a quiet machine.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

from train_runs import train

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX directory.")
flags.DEFINE_integer("epochs", 2, "Epochs of the main job.")
flags.DEFINE_integer("train_steps", 200, "Timed Trainer steps per round and variant.")
flags.DEFINE_integer("rounds", 2, "Interleaved Trainer rounds.")
flags.DEFINE_string("json_out", None, "Also write the results as JSON here.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main_job(epochs: int, data_dir: str):
    """The CLI main job's logged (examples/s, wait %) per epoch."""
    with tempfile.TemporaryDirectory() as out:
        return train(f"{out}/run", f"--flagfile={ROOT}/configs/fashion_mnist_cnn.flags", f"--epochs={epochs}",
                     f"--data_dir={data_dir}")["epochs"]


def trainer_rounds(data_dir: str, steps: int, rounds: int):
    """The main job's model through the Trainer on in-memory data and on one cached batch."""
    import keras
    import numpy as np
    import tensorflow as tf

    import tfcustom
    from tfcustom.training.timing import StepTimer

    ds = tfcustom.data.load("fashion_mnist", data_dir=data_dir)
    x = ds.train.x.reshape(-1, 28, 28, 1).astype("float32") / 255.0
    y = ds.train.y
    keras.utils.set_random_seed(0)
    model = tfcustom.models.get("cnn", num_classes=10, filters=[32, 64], dense_units=128, dropout=0.3, batch_norm=True)
    model(tf.zeros((1, 28, 28, 1)))
    trainer = tfcustom.Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.Adam(2e-3),
                               metrics=["accuracy"], steps_per_execution=10, verbose=0)
    memory = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(10000, seed=0).repeat().batch(128).prefetch(2)
    cached = tf.data.Dataset.from_tensors((x[:128], y[:128])).cache().repeat()
    iterators = {name: iter(trainer._distribute(d)) for name, d in (("memory", memory), ("cached_batch", cached))}
    for it in iterators.values():
        trainer.train_step(it, tf.constant(10))  # warm-up (traces once: one signature)
    results = {name: [] for name in iterators}
    for _ in range(rounds):
        for name, it in iterators.items():
            timer = StepTimer(128)
            timer.start(0)
            for _ in range(steps // 10):
                timer.record(10, trainer.train_step(it, tf.constant(10))["input_wait_s"])
            s = timer.epoch_summary()
            results[name].append({"examples_per_s": s["examples_per_second"], "wait_percent": 100 * s["input_wait_share"]})
    return {name: max(r, key=lambda v: v["examples_per_s"]) for name, r in results.items()}


def main(argv):
    del argv
    started = time.strftime("%Y-%m-%d %H:%M")
    job = main_job(FLAGS.epochs, FLAGS.data_dir)
    trainer = trainer_rounds(FLAGS.data_dir, FLAGS.train_steps, FLAGS.rounds)
    last = job[-1]
    out = {"date": started, "main_job": job, "trainer": trainer,
           "main_job_vs_cached_speed": last["examples_per_s"] / trainer["cached_batch"]["examples_per_s"]}
    for e in job:
        print(f"main job epoch {e['epoch']}: {e['examples_per_s']:.0f} examples/s, {e['wait_percent']:.1f} % waiting")
    for name, r in trainer.items():
        print(f"Trainer, {name}: {r['examples_per_s']:.0f} examples/s, {r['wait_percent']:.1f} % waiting")
    print(f"main job (last epoch) / cached batch speed: {out['main_job_vs_cached_speed']:.2f}")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    app.run(main)
