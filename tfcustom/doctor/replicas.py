"""Check: the weights after K steps are the same on 1, 2 and 4 replicas."""

from __future__ import annotations

from tfcustom.doctor.harness import Setup, describe_error, max_difference, train
from tfcustom.doctor.result import CheckResult

NAME = "replica agreement"
FIX = ("reduce the loss over the global batch (per-example losses / global batch size, as keras.losses.Loss with "
       "tfcustom.Trainer does), and avoid statistics of the replica's own batch (BatchNormalization: SyncBatchNormalization)")


def run(setup: Setup) -> CheckResult:
    try:
        weights = {n: train(setup, n).model.get_weights() for n in (1, 2, 4)}
    except Exception as e:  # the model does not train on N replicas at all
        return CheckResult(NAME, False, f"training raised {describe_error(e)}", FIX)
    diffs = {n: max_difference(weights[1], weights[n]) for n in (2, 4)}
    worst = max(diffs.values())
    exact = "bitwise" if worst == 0 else f"tolerance {setup.tolerance:g}"
    measured = f"max |w_N - w_1| after {setup.steps} steps: 2 replicas {diffs[2]:.3g}, 4 replicas {diffs[4]:.3g} ({exact})"
    return CheckResult(NAME, worst <= setup.tolerance, measured, FIX)
