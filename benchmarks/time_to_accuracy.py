"""Time to accuracy of training configs, several seeds, interleaved: the table of docs/guides/performance.md.

Runs ``tfcustom-train --flagfile=CONFIG --seed=S`` for every seed and config
(seed by seed, the configs in turn within each seed, so that a shared
machine's drifting load falls on all of them alike), each with
``--target_accuracy_test`` so the test split is evaluated after every epoch
(that evaluation is not counted as training time). From each run's
``results.json`` it takes the training time (the history's ``time_s``:
training plus validation, summed over epochs) at which **test** accuracy first
reached each threshold (:func:`tfcustom.experiment.time_to_accuracy.first_reached`), and
the final test accuracy. Writes JSON and prints the Markdown table: per config,
the mean time to each threshold over the seeds that reached it (with how many
did), the mean ± std final accuracy and the mean training time relative to the
first config's.

    python benchmarks/time_to_accuracy.py \\
        --configs=configs/fashion_mnist_cnn.flags,configs/fashion_mnist_fast.flags,configs/fashion_mnist_best.flags \\
        --seeds=0,1,2 --json_out=benchmarks/time_to_accuracy.json
    python benchmarks/time_to_accuracy.py --table_from=benchmarks/time_to_accuracy.json

Results depend on the machine and its load; they are measurements, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from tfcustom.experiment.time_to_accuracy import first_reached

THRESHOLDS = (0.91, 0.92, 0.93, 0.935, 0.94)


def run_one(config: str, seed: int, workdir: str, extra) -> dict:
    out = os.path.join(workdir, f"{os.path.splitext(os.path.basename(config))[0]}_seed{seed}")
    cmd = ["tfcustom-train", f"--flagfile={config}", f"--seed={seed}", f"--output_dir={out}", "--overwrite",
           f"--target_accuracy={min(THRESHOLDS)}", "--target_accuracy_test", "--verbose=0", *extra]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    records = results["history"]
    return {
        "config": config, "seed": seed, "wall_s": time.time() - start,
        "train_s": sum(r["time_s"] for r in records), "epochs": len(records),
        "test_accuracy": results["test"]["accuracy"],
        "test_accuracy_per_epoch": [r["test_accuracy"] for r in records],
        "reached": {f"{t:g}": first_reached(records, "test_accuracy", t) for t in THRESHOLDS},
        "autotune": results.get("autotune"),
    }


def table(runs) -> str:
    configs = list(dict.fromkeys(r["config"] for r in runs))
    base = statistics.mean(r["train_s"] for r in runs if r["config"] == configs[0])
    head = "| config | " + " | ".join(f"time to {100 * t:g} %" for t in THRESHOLDS) + " | final test accuracy | training time (vs first) |"
    lines = [head, "|" + "---|" * (len(THRESHOLDS) + 3)]
    for config in configs:
        mine = [r for r in runs if r["config"] == config]
        cells = []
        for t in THRESHOLDS:
            times = [r["reached"][f"{t:g}"]["time_s"] for r in mine if r["reached"][f"{t:g}"]["reached"]]
            cells.append("not reached" if not times else f"{statistics.mean(times):.0f} s" + ("" if len(times) == len(mine) else f" ({len(times)}/{len(mine)} seeds)"))
        accs = [100 * r["test_accuracy"] for r in mine]
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        train = statistics.mean(r["train_s"] for r in mine)
        lines.append(f"| `{config}` | " + " | ".join(cells) + f" | {statistics.mean(accs):.2f} %{spread} | {train:.0f} s ({train / base:.2f}) |")
    seeds = sorted({r["seed"] for r in runs})
    return "\n".join(lines) + f"\n\nMean over seeds {', '.join(map(str, seeds))}; times are training + validation seconds, test evaluations excluded."


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="configs/fashion_mnist_cnn.flags,configs/fashion_mnist_fast.flags,configs/fashion_mnist_best.flags")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", default="/tmp/tfcustom_time_to_accuracy")
    parser.add_argument("--json_out", default=None)
    parser.add_argument("--table_from", default=None, help="Only print the table of this JSON (no training).")
    args, extra = parser.parse_known_args()
    if args.table_from:
        with open(args.table_from) as f:
            print(table(json.load(f)["runs"]))
        return
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for config in args.configs.split(","):
            run = run_one(config, seed, args.workdir, extra)
            runs.append(run)
            print(f"{config} seed {seed}: {100 * run['test_accuracy']:.2f} % after {run['train_s']:.0f} s of training", flush=True)
            if args.json_out:  # after every run: a stopped benchmark keeps what it measured
                with open(args.json_out, "w") as f:
                    json.dump({"command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]), "runs": runs}, f, indent=1)
    print(table(runs))


if __name__ == "__main__":
    main()
