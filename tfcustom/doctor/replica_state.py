"""Check: every replica holds the same copy of every model variable after training (BatchNorm statistics, counters)."""

from __future__ import annotations

import numpy as np

from tfcustom.doctor.harness import Setup, describe_error, train
from tfcustom.doctor.result import CheckResult

NAME = "replica state"
FIX = ("update per-replica state the same on every replica: all-reduce the statistic "
       "(tf.distribute.get_replica_context().all_reduce) or keep it a float variable, which tfcustom.Trainer averages")


def _spread(strategy, variable) -> float:
    copies = [np.asarray(c, np.float64) for c in strategy.experimental_local_results(variable.value)]
    return max(float(np.max(np.abs(c - copies[0]))) if c.size else 0.0 for c in copies)


def run(setup: Setup) -> CheckResult:
    try:
        trainer = train(setup, 4)
    except Exception as e:
        return CheckResult(NAME, False, f"training raised {describe_error(e)}", FIX)
    spreads = {v.path: _spread(trainer.strategy, v) for v in trainer.model.variables}
    differ = {k: s for k, s in spreads.items() if s > 0}
    if differ:
        name = max(differ, key=differ.get)
        return CheckResult(NAME, False, f"{len(differ)} variable(s) differ across 4 replicas, most {name} by {differ[name]:.3g}", FIX)
    return CheckResult(NAME, True, f"{len(spreads)} variables identical on 4 replicas")
