"""One ``tfcustom-train`` run for a benchmark: its ``results.json`` and the epoch timings it logged.

Used by benchmarks/lr_finder.py, benchmarks/batch_finder.py and benchmarks/input_wait.py
(which run from the repository root as ``python benchmarks/NAME.py``: this directory is then
on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

# The Trainer's epoch log line (tfcustom.callbacks.timing.StepTimer.log_line).
TIMING = re.compile(r"epoch (\d+) timing: ([\d.]+) examples/s, ([\d.]+)% of the step time waiting for input")


def epoch_timings(log: str) -> list:
    """Per epoch, the logged training examples/s and % of the step time waiting for input."""
    return [{"epoch": int(e), "examples_per_s": float(r), "wait_percent": float(w)} for e, r, w in TIMING.findall(log)]


def train(output_dir: str, *flags: str) -> dict:
    """Run ``tfcustom-train FLAGS --output_dir=OUTPUT_DIR --overwrite --verbose=0`` (exit on failure).

    Returns:
      ``{"results": results.json, "config": config.json, "epochs": epoch_timings(log),
      "wall_s": the subprocess' seconds}``.
    """
    cmd = [sys.executable, "-m", "tfcustom.cli.train", *flags, f"--output_dir={output_dir}", "--overwrite", "--verbose=0",
           "--alsologtostderr"]  # after FLAGS: a flagfile's own --output_dir must not win
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    run = {"epochs": epoch_timings(proc.stderr), "wall_s": wall}
    for key in ("results", "config"):  # what the run measured; what it was asked (config.json keeps "find")
        with open(os.path.join(output_dir, f"{key}.json")) as f:
            run[key] = json.load(f)
    return run
