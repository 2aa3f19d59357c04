"""A benchmark's runs as JSON: written after every run (a stopped benchmark keeps what it measured), read back for its table.

Used by benchmarks/time_to_accuracy.py, benchmarks/batch_finder.py and benchmarks/doctor_runtime.py
(run from the repository root as ``python benchmarks/NAME.py``: this directory is then on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import sys


def save_runs(path: str, runs: list) -> None:
    """Write ``{"command": the benchmark's command line, "runs": runs}`` to ``path``."""
    with open(path, "w") as f:
        json.dump({"command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]), "runs": runs}, f, indent=1)


def load_runs(path: str) -> list:
    """The ``runs`` of a JSON that `save_runs` wrote."""
    with open(path) as f:
        return json.load(f)["runs"]
