"""Check: the weights after K steps are the same on 1, 2 and 4 replicas.

The K steps are plain SGD steps (the user's model, loss and step; ``SGD(1e-3)`` for the
optimizer): an SGD update is proportional to the gradient, so the weights' difference is
the gradients' difference. With Adam it is not: Adam divides by the gradient's own size, so
a loss reduced per replica (gradients 4x too large on 4 replicas) moved the weights after
3 steps of ``Adam(1e-3)`` by 7.8e-6 against one device's (inside the 1e-5 tolerance), while
a rounding-level difference in a near-zero gradient (a BatchNorm offset) moved them by
2.6e-4 at ``Adam(1e-2)`` (measured; tests/test_doctor.py plants the first). The user's optimizer is
trained by the other checks. The rate is small because rounding has discrete effects too:
BatchNorm statistics summed in another order on 4 replicas move pre-activations by a
rounding error, the few ReLUs that sit that close to zero flip, and each flip changes the
gradient by a finite amount, which the learning rate scales; the shipped ResNet at 28x28x1
(batch 8, 3 steps) differed by 6.6e-4 at ``SGD(0.1)`` and by 1.0e-6 at ``SGD(1e-3)``.

A model with per-replica BatchNorm statistics or dropout masks differs across replica counts
by design (`tfcustom.doctor.replica_dependence`); for it the SGD runs use the same model with
BatchNorm synchronised and dropout off (everything else, the loss reduction and the gradient
all-reduce included, unchanged), and the line reports the as-built difference beside.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tfcustom.doctor import replica_dependence
from tfcustom.doctor.harness import Setup, describe_error, max_difference, train
from tfcustom.doctor.result import CheckResult

NAME = "replica agreement"
FIX = ("reduce the loss over the global batch (per-example losses / global batch size, as keras.losses.Loss with "
       "tfcustom.Trainer does), and keep per-replica computations to per-example ones (a statistic of the replica's "
       "own batch, an integer counter, a branch on the replica id make the result depend on the replica count)")
SGD_LEARNING_RATE = 1e-3


def _diffs(setup: Setup) -> dict:
    weights = {n: train(setup, n).model.get_weights() for n in (1, 2, 4)}
    return {n: max_difference(weights[1], weights[n]) for n in (2, 4)}


def _as_built_note(setup: Setup, dependent: dict) -> str:
    """The 4-replica difference of the model as built, with the user's optimizer (Trainers shared with the other checks)."""
    diff = max_difference(train(setup, 1).model.get_weights(), train(setup, 4).model.get_weights())
    kinds = ", ".join(f"{kind} ({n} layer{'s' * (n > 1)})" for kind, n in dependent.items())
    hint = "; BatchNormalization(synchronized=True) makes BatchNorm replica-independent" if replica_dependence.BATCH_NORM in dependent else ""
    return f"; as built, 4 replicas differ by {diff:.3g} by design ({kinds}{hint})"


def run(setup: Setup) -> CheckResult:
    sgd = dataclasses.replace(setup, optimizer_fn=lambda: keras.optimizers.SGD(SGD_LEARNING_RATE), trained={},
                              variables_before={})
    try:
        dependent = replica_dependence.find(train(setup, 1).model)
        if dependent:
            sgd.model_fn = replica_dependence.neutralised(setup.model_fn, setup.x[:1])
            note = _as_built_note(setup, dependent)
        else:
            note = ""
        diffs = _diffs(sgd)
    except Exception as e:  # the model does not train on N replicas at all
        return CheckResult(NAME, False, f"training raised {describe_error(e)}", FIX)
    worst = max(diffs.values())
    exact = "bitwise" if worst == 0 else f"tolerance {setup.tolerance:g}"
    how = ", BatchNorm synchronised and dropout off" if dependent else ""
    measured = (f"max |w_N - w_1| after {setup.steps} steps of SGD({SGD_LEARNING_RATE:g}){how}: "
                f"2 replicas {diffs[2]:.3g}, 4 replicas {diffs[4]:.3g} ({exact}){note}")
    return CheckResult(NAME, bool(np.isfinite(worst)) and worst <= setup.tolerance, measured, FIX)
