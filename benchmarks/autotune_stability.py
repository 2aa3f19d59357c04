"""How stable is autotune's choice? Runs ``--precision=auto --jit_compile=auto``
``--runs`` times on the same model and data and reports how often each setting
was chosen and, per candidate, the spread over the runs (min / median / max) of
the ratio the decision uses: the median of its paired per-round step-time
ratios to the default (float32, no XLA), the warm-up round dropped
(autotune.json's ``ratio``). A ratio whose spread straddles its margin
(0.95 for XLA, 0.8 for bfloat16) is a choice that can flip. Issue #25 asks
for the same choice in >= 9 of 10 runs.

    python benchmarks/autotune_stability.py --model=cnn --runs=10 \\
        --json_out=benchmarks/autotune_stability.json

Measure on a quiet machine (nothing else heavy running); the figures depend on
the machine and its load.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

flags.DEFINE_string("model", "cnn", "Model name (tfcustom.models).")
flags.DEFINE_integer("runs", 10, "Times the choice is made.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX files.")
flags.DEFINE_string("json_out", None, "Write the choices and ratios here.")
FLAGS = flags.FLAGS


def _summary(runs) -> dict:
    """``{"counts", "ratio_spread": {candidate: {"min", "median", "max"}}}`` over the runs."""
    ratios = collections.defaultdict(list)
    for run in runs:
        for name, ratio in run["ratios"].items():
            ratios[name].append(ratio)
    spread = {name: {"min": min(v), "median": statistics.median(v), "max": max(v)} for name, v in ratios.items()}
    return {"counts": dict(collections.Counter(r["choice"] for r in runs)), "ratio_spread": spread}


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
        ratios = {name: m["ratio"] for name, m in result.measurements.items() if "ratio" in m}
        runs.append({"choice": f"{result.precision}/jit={result.jit_compile}", "ratios": ratios,
                     "reason": result.reasons.get("precision", ""), "measurements": result.measurements})
        print(f"run {i + 1}: {runs[-1]['choice']}; median paired ratios to float32/jit=False: "
              + ", ".join(f"{name} {ratio:.3f}" for name, ratio in ratios.items()), flush=True)
    summary = _summary(runs)
    print("choices:", summary["counts"])
    for name, s in summary["ratio_spread"].items():
        print(f"{name}: ratio min {s['min']:.3f}, median {s['median']:.3f}, max {s['max']:.3f}")
    most = max(summary["counts"].values())
    print(f"most common choice in {most} of {len(runs)} runs (target >= 9 of 10)")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump({"model": FLAGS.model, **summary, "runs": runs}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
