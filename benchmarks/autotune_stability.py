"""How stable is autotune's choice? Runs ``--precision=auto --jit_compile=auto``
``--runs`` times on the same model and data and reports how often each setting
was chosen and the spread of every candidate's timed rounds (autotune.json's
``spread``: slowest round / best round - 1). Issue #25 asks for the same choice
in >= 9 of 10 runs.

    python benchmarks/autotune_stability.py --model=cnn --runs=10 \\
        --json_out=benchmarks/autotune_stability.json

Measure on a quiet machine (nothing else heavy running); the figures depend on
the machine and its load.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

flags.DEFINE_string("model", "cnn", "Model name (tfcustom.models).")
flags.DEFINE_integer("runs", 10, "Times the choice is made.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX files.")
flags.DEFINE_string("json_out", None, "Write the choices and spreads here.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import tensorflow as tf

    from tfcustom import TrainConfig
    from tfcustom import data as data_lib
    from tfcustom.experiment.train import choose_settings

    # Enough epochs that the run is long enough for autotune to measure.
    config = TrainConfig(model=FLAGS.model, epochs=100, batch_size=FLAGS.batch_size, data_dir=FLAGS.data_dir, verbose=0)
    dataset = data_lib.load("fashion_mnist", FLAGS.data_dir)
    pipeline = data_lib.InputPipeline(dataset.train, FLAGS.batch_size)
    strategy = tf.distribute.get_strategy()
    runs = []
    for i in range(FLAGS.runs):
        with tempfile.TemporaryDirectory() as workdir:
            result = choose_settings(config, workdir, False, strategy, dataset, pipeline)
        runs.append({"choice": f"{result.precision}/jit={result.jit_compile}", "measurements": result.measurements})
        print(f"run {i + 1}: {runs[-1]['choice']}", flush=True)
    counts = collections.Counter(r["choice"] for r in runs)
    spreads = {name: max(r["measurements"][name].get("spread", 0.0) for r in runs) for name in runs[0]["measurements"]}
    print("choices:", dict(counts))
    print("largest round spread per candidate:", {k: f"{v:.1%}" for k, v in spreads.items()})
    print(f"most common choice in {counts.most_common(1)[0][1]} of {len(runs)} runs (target >= 9 of 10)")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump({"model": FLAGS.model, "counts": dict(counts), "max_spread": spreads, "runs": runs}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
