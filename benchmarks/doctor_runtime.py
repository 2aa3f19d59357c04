"""How long ``tfcustom-doctor`` takes, all checks, on each shipped model at the Fashion-MNIST shape (28x28x1, 10 classes).

Each model runs ``tfcustom-doctor --model=NAME --input_shape=28,28,1 --num_classes=10``
(the registry's default architecture, the CLI's default batch of 8 and 3 steps) in its own
subprocess, so every wall time includes TensorFlow's start-up, as a user's run does. With
``--repeats`` the models run in turn within each repeat (a shared machine's drifting load
falls on all alike). Writes JSON (per model: wall seconds of each repeat, the exit code, and
the doctor's own seconds per check from its ``--json_out``) and prints a Markdown table.

    python benchmarks/doctor_runtime.py --repeats=2      # writes benchmarks/doctor_runtime.json
    python benchmarks/doctor_runtime.py --table_from=benchmarks/doctor_runtime.json

Issue #24 asks for at most 2 minutes per shipped model on this CPU. Results depend on the
machine and its load; they are measurements, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from runs_json import load_runs, save_runs


def run_one(model: str, workdir: str) -> dict:
    report_path = os.path.join(workdir, f"{model}.json")
    cmd = [sys.executable, "-m", "tfcustom.cli.doctor", f"--model={model}", "--input_shape=28,28,1", "--num_classes=10",
           f"--json_out={report_path}"]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    wall = time.time() - start
    if proc.returncode not in (0, 1):  # 1: a check failed (recorded); anything else: the doctor did not run
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(report_path) as f:
        report = json.load(f)
    return {"model": model, "wall_s": wall, "exit_code": proc.returncode, "checks_s": report["seconds"],
            "per_check_s": {c["name"]: c["seconds"] for c in report["checks"]},
            "failed": [c["name"] for c in report["checks"] if not c["passed"]]}


def table(runs) -> str:
    checks = list(runs[0]["per_check_s"])
    lines = ["| model | wall time | of which checks | slowest check | failed |", "|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        per_check = {c: statistics.mean(r["per_check_s"][c] for r in mine) for c in checks}
        slowest = max(per_check, key=per_check.get)
        failed = sorted({c for r in mine for c in r["failed"]})
        walls = ", ".join(f"{r['wall_s']:.0f}" for r in mine)
        lines.append(f"| `{model}` | {statistics.mean(r['wall_s'] for r in mine):.0f} s ({walls}) | "
                     f"{statistics.mean(r['checks_s'] for r in mine):.0f} s | {slowest} {per_check[slowest]:.0f} s | "
                     f"{', '.join(failed) or 'none'} |")
    return "\n".join(lines) + "\n\nWall time: the whole subprocess (TensorFlow start-up included), mean (each repeat)."


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="Comma-separated (default: every model of tfcustom.models.names()).")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json_out", default="benchmarks/doctor_runtime.json")
    parser.add_argument("--table_from", default=None, help="Only print the table of this JSON (no runs).")
    args = parser.parse_args()
    if args.table_from:
        print(table(load_runs(args.table_from)))
        return
    if args.models is None:
        from tfcustom.models import names
        args.models = ",".join(names())
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeats):
            for model in args.models.split(","):
                runs.append(run_one(model, workdir))
                print(f"{model}: {runs[-1]['wall_s']:.0f} s, exit {runs[-1]['exit_code']}", flush=True)
                if args.json_out:  # after every run: a stopped benchmark keeps what it measured
                    save_runs(args.json_out, runs)
    print(table(runs))


if __name__ == "__main__":
    main()
