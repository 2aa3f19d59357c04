"""Time to accuracy of training configs, several seeds, interleaved: the table of docs/guides/performance.md.

Runs ``tfcustom-train --flagfile=CONFIG --seed=S`` for every seed and config
(seed by seed, the configs in turn within each seed, so that a shared
machine's drifting load falls on all of them alike), each with
``--target_accuracy_test`` so the test split is evaluated after every epoch
(that evaluation is not counted as training time). With ``--with_fit`` each
config also runs as plain ``keras.Model.fit`` (``benchmarks/fit_recipe.py``:
the same model, data, augmentation, optimizer, schedule, batch size,
``steps_per_execution`` and seed; fit's defaults where the config says
``auto``), right beside its tfcustom run (which of the two goes first
alternates with the seed), in its own process like tfcustom's, its test split
evaluated after every epoch outside the timed span too. From each run's
``results.json`` it takes the training time (the history's ``time_s``:
training plus validation, summed over epochs) at which **test** accuracy first
reached each threshold (:func:`tfcustom.experiment.time_to_accuracy.first_reached`), and
the final test accuracy. Writes JSON and prints the Markdown table: per config
(and variant), the mean time to each threshold over the seeds that reached it
(with how many did), the mean ± std final accuracy and the mean training time
relative to the first config's; with fit runs, a row of tfcustom's time over
fit's (per threshold: over the seeds where both reached it).

    python benchmarks/time_to_accuracy.py --with_fit \\
        --configs=configs/fashion_mnist_cnn.flags,configs/fashion_mnist_fast.flags,configs/fashion_mnist_best.flags \\
        --seeds=0,1,2 --json_out=benchmarks/time_to_accuracy.json
    python benchmarks/time_to_accuracy.py --table_from=benchmarks/time_to_accuracy.json \\
        --update_readme=docs/guides/performance.md

Extra flags go to every run (e.g. ``--train_subset=2000 --epochs=1`` to try
the benchmark in a minute). Results depend on the machine and its load; they
are measurements, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from doc_table import replace_between
from runs_json import load_runs, save_runs
from tfcustom.experiment.time_to_accuracy import first_reached

THRESHOLDS = (0.91, 0.92, 0.93, 0.935, 0.94)
FIT_RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fit_recipe.py")


def command(variant: str, config: str, seed: int, out: str, extra) -> list:
    """The run's command line: ``tfcustom-train`` (test accuracy each epoch) or ``fit_recipe.py`` (always does)."""
    common = [f"--flagfile={config}", f"--seed={seed}", f"--output_dir={out}", "--overwrite", "--verbose=0"]
    if variant == "fit":
        return [sys.executable, FIT_RECIPE, *common, *extra]
    return ["tfcustom-train", *common, f"--target_accuracy={min(THRESHOLDS)}", "--target_accuracy_test", *extra]


def run_one(config: str, seed: int, workdir: str, extra, variant: str = "tfcustom") -> dict:
    name = f"{os.path.splitext(os.path.basename(config))[0]}_seed{seed}" + ("_fit" if variant == "fit" else "")
    out = os.path.join(workdir, name)
    cmd = command(variant, config, seed, out, extra)
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    records = results["history"]
    return {
        "config": config, "variant": variant, "seed": seed, "wall_s": time.time() - start,
        "train_s": sum(r["time_s"] for r in records), "epochs": len(records),
        "test_accuracy": results["test"]["accuracy"],
        "test_accuracy_per_epoch": [r["test_accuracy"] for r in records],
        "reached": {f"{t:g}": first_reached(records, "test_accuracy", t) for t in THRESHOLDS},
        "autotune": results.get("autotune") if variant == "tfcustom" else
        {"jit_compile": results["jit_compile"], "precision": results["precision"], "chosen_by": "keras.Model.fit defaults"},
    }


def _variant(run) -> str:
    return run.get("variant", "tfcustom")  # runs recorded before fit rows existed are tfcustom's


def _reached_times(runs, threshold: float) -> dict:
    """seed -> time to ``threshold``, for the runs that reached it."""
    return {r["seed"]: r["reached"][f"{threshold:g}"]["time_s"] for r in runs if r["reached"][f"{threshold:g}"]["reached"]}


def _time_cell(runs, threshold: float) -> str:
    times = list(_reached_times(runs, threshold).values())
    if not times:
        return "not reached"
    return f"{statistics.mean(times):.0f} s" + ("" if len(times) == len(runs) else f" ({len(times)}/{len(runs)} seeds)")


def _ratio_cell(ours, fits, threshold: float) -> str:
    """tfcustom's mean time over fit's, on the seeds where both reached ``threshold``."""
    a, b = _reached_times(ours, threshold), _reached_times(fits, threshold)
    both = sorted(set(a) & set(b))
    if not both:
        return "—"
    ratio = statistics.mean(a[s] for s in both) / statistics.mean(b[s] for s in both)
    return f"**{ratio:.2f}**" + ("" if len(both) == len(ours) == len(fits) else f" ({len(both)} seed{'s' if len(both) != 1 else ''})")


def _row(label: str, runs, base: float) -> str:
    accs = [100 * r["test_accuracy"] for r in runs]
    spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
    train = statistics.mean(r["train_s"] for r in runs)
    return (f"| {label} | " + " | ".join(_time_cell(runs, t) for t in THRESHOLDS)
            + f" | {statistics.mean(accs):.2f} %{spread} | {train:.0f} s ({train / base:.2f}) |")


def table(runs) -> str:
    configs = list(dict.fromkeys(r["config"] for r in runs))
    by = {(c, v): [r for r in runs if r["config"] == c and _variant(r) == v] for c in configs for v in ("tfcustom", "fit")}
    with_fit = any(by[c, "fit"] for c in configs)
    base = statistics.mean(r["train_s"] for r in by[configs[0], "tfcustom"])
    head = "| config | " + " | ".join(f"time to {100 * t:g} %" for t in THRESHOLDS) + " | final test accuracy | training time (vs first) |"
    lines = [head.replace("| config |", "| config | variant |") if with_fit else head, "|" + "---|" * (len(THRESHOLDS) + 3 + with_fit)]
    for config in configs:
        ours, fits = by[config, "tfcustom"], by[config, "fit"]
        if not with_fit:
            lines.append(_row(f"`{config}`", ours, base))
            continue
        lines.append(_row(f"`{config}` | tfcustom", ours, base))
        if fits:
            lines.append(_row(" | `fit`", fits, base))
            overall = statistics.mean(r["train_s"] for r in ours) / statistics.mean(r["train_s"] for r in fits)
            lines.append("|  | tfcustom / `fit` | " + " | ".join(_ratio_cell(ours, fits, t) for t in THRESHOLDS) + f" |  | **{overall:.2f}** |")
    seeds = sorted({r["seed"] for r in runs})
    return "\n".join(lines) + (f"\n\nMean over seeds {', '.join(map(str, seeds))}; times are training + validation seconds, "
                               "test evaluations excluded." + (" Ratios below 1: tfcustom is faster." if with_fit else ""))


def measure(args, extra) -> list:
    """Every seed, every config in turn, each config's variants beside each other (fit first on odd seeds)."""
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        variants = ("tfcustom", "fit") if args.with_fit else ("tfcustom",)
        for config in args.configs.split(","):
            for variant in (variants if seed % 2 == 0 else variants[::-1]):
                run = run_one(config, seed, args.workdir, extra, variant)
                runs.append(run)
                print(f"{config} {variant} seed {seed}: {100 * run['test_accuracy']:.2f} % after {run['train_s']:.0f} s of training", flush=True)
                if args.json_out:  # after every run: a stopped benchmark keeps what it measured
                    save_runs(args.json_out, runs)
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="configs/fashion_mnist_cnn.flags,configs/fashion_mnist_fast.flags,configs/fashion_mnist_best.flags")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--with_fit", action="store_true", help="Also run each config under plain keras.Model.fit (benchmarks/fit_recipe.py).")
    parser.add_argument("--workdir", default="/tmp/tfcustom_time_to_accuracy")
    parser.add_argument("--json_out", default=None)
    parser.add_argument("--table_from", default=None, help="Only print the table of this JSON (no training).")
    parser.add_argument("--update_readme", default=None,
                        help="Replace the table between the --marker markers of this Markdown file (docs/guides/performance.md).")
    parser.add_argument("--marker", default="time_to_accuracy",
                        help="Name of the table's markers (<!-- NAME:begin --> ... <!-- NAME:end -->): time_to_accuracy_fit for the --with_fit table.")
    args, extra = parser.parse_known_args()
    if args.table_from:
        runs = load_runs(args.table_from)
    else:
        runs = measure(args, extra)
    text = table(runs)
    print(text)
    if args.update_readme:
        replace_between(args.update_readme, args.marker, text)


if __name__ == "__main__":
    main()
