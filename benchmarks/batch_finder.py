"""What ``--batch_size=find`` buys on this CPU for the default config: speed, training time and test accuracy.

    python benchmarks/batch_finder.py --seeds=0,1,2 --json_out=benchmarks/batch_finder.json
    python benchmarks/batch_finder.py --table_from=benchmarks/batch_finder.json

Four variants of ``configs/fashion_mnist_cnn.flags``, interleaved (seed by seed, the variants
in turn within each seed, so that a shared machine's drifting load falls on all alike):

* ``given``: the config as it is (batch 128, ``steps_per_execution`` 10, Adam 2e-3, cosine);
* ``find``: ``--batch_size=find`` (the largest batch up to the cap, 1024 or a sixteenth of
  the training examples, and the fastest ``steps_per_execution``); the learning rate stays;
* ``find, sqrt lr``: the batch and ``steps_per_execution`` that ``find`` found for the same
  seed (``--autotune_from`` its run: not measured again) with the learning rate scaled by
  ``sqrt(batch / 128)``, the square-root rule usual for Adam;
* ``find, lr find``: ``--batch_size=find --learning_rate=find``, the finders guide's way
  (the range test runs at the batch found).

XLA off and float32 for all, so autotune's timing-based choices do not differ between them.
Reported per run: the Trainer's logged training examples/s (mean over the epochs after the
first, which compiles; all epochs when there is one), the fit's seconds (``train_time_s``:
validation and checkpoints included), the whole process' seconds (finders, data loading and
the test evaluation included) and the final test accuracy. Other arguments go to every
``tfcustom-train`` run, e.g. a smoke run:
``python benchmarks/batch_finder.py --seeds=0 --json_out=/tmp/bf.json --epochs=1 --train_subset=4000 --validation_size=500``.

Results depend on the machine and its load; they are measurements, not assertions.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile

from runs_json import load_runs, save_runs
from train_runs import train

CONFIG = "configs/fashion_mnist_cnn.flags"
VARIANTS = ("given", "find", "find, sqrt lr", "find, lr find")
FIXED = ("--nojit_compile", "--precision=float32")


def _flags(variant: str, seed: int, runs: dict, extra) -> list:
    """The variant's tfcustom-train flags; ``runs``: this seed's earlier runs, by variant."""
    flags = [f"--flagfile={CONFIG}", f"--seed={seed}", *FIXED, *extra]
    if variant == "find":
        return flags + ["--batch_size=find"]
    if variant == "find, sqrt lr":
        found = runs["find"]
        rate = found["learning_rate"] * math.sqrt(found["batch_size"] / runs["given"]["batch_size"])
        return flags + ["--batch_size=find", f"--autotune_from={found['run_dir']}", f"--learning_rate={rate:.6g}"]
    if variant == "find, lr find":
        return flags + ["--batch_size=find", "--learning_rate=find"]
    return flags


def run_one(variant: str, seed: int, runs: dict, workdir: str, extra) -> dict:
    out = os.path.join(workdir, f"seed{seed}-{variant.replace(', ', '-').replace(' ', '_')}")
    run = train(out, *_flags(variant, seed, runs, extra))
    results, found = run["results"], run["results"]["autotune"].get("finders", {})
    used = {key: found.get(key, run["config"][key]) for key in ("batch_size", "steps_per_execution", "learning_rate")}
    rates = [e["examples_per_s"] for e in run["epochs"]]
    return {"variant": variant, "seed": seed, "run_dir": out, **used,
            "examples_per_s": statistics.mean(rates[1:] or rates), "examples_per_s_per_epoch": rates,
            "train_time_s": results["train_time_s"], "wall_s": run["wall_s"], "epochs": results["epochs_run"],
            "test_accuracy": results["test"]["accuracy"]}


def _cell(values, fmt: str) -> str:
    values = sorted(set(values))
    return ", ".join(fmt.format(v) for v in values)


def table(runs) -> str:
    lines = ["| variant | batch | steps/exec | learning rate | training examples/s | training time | whole run | test accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        accs = [100 * r["test_accuracy"] for r in mine]
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        lines.append(
            f"| {variant} | {_cell([r['batch_size'] for r in mine], '{}')} | {_cell([r['steps_per_execution'] for r in mine], '{}')} "
            f"| {_cell([r['learning_rate'] for r in mine], '{:.3g}')} | {statistics.mean(r['examples_per_s'] for r in mine):.0f} "
            f"| {statistics.mean(r['train_time_s'] for r in mine):.0f} s | {statistics.mean(r['wall_s'] for r in mine):.0f} s "
            f"| {statistics.mean(accs):.2f} %{spread} ({', '.join(f'{a:.2f}' for a in accs)}) |")
    seeds = sorted({r["seed"] for r in runs})
    return "\n".join(lines) + f"\n\nMean over seeds {', '.join(map(str, seeds))} ({runs[0]['epochs']} epochs); XLA off, float32."


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json_out", default="benchmarks/batch_finder.json")
    parser.add_argument("--table_from", default=None, help="Only print the table of this JSON (no training).")
    args, extra = parser.parse_known_args()
    if args.table_from:
        print(table(load_runs(args.table_from)))
        return
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in [int(s) for s in args.seeds.split(",")]:
            this_seed = {}
            for variant in VARIANTS:
                this_seed[variant] = run_one(variant, seed, this_seed, workdir, extra)
                runs.append(this_seed[variant])
                r = runs[-1]
                print(f"seed {seed} {variant}: batch {r['batch_size']}, lr {r['learning_rate']:.3g}, {r['examples_per_s']:.0f} "
                      f"examples/s, {r['train_time_s']:.0f} s, {100 * r['test_accuracy']:.2f} %", flush=True)
                if args.json_out:  # after every run: a stopped benchmark keeps what it measured
                    save_runs(args.json_out, runs)
    print(table(runs))


if __name__ == "__main__":
    main()
