"""Check: no variable is created after the first step or outside the strategy scope (4 replicas)."""

from __future__ import annotations

from tfcustom.doctor.harness import Setup, all_variables, describe_error, train
from tfcustom.doctor.result import CheckResult

NAME = "variables in scope"
FIX = ("create every weight in the layer's build() (or __init__), not in call(); build the model and the optimizer "
       "under strategy.scope() before the first step")
REPLICAS = 4


def run(setup: Setup) -> CheckResult:
    try:
        trainer = train(setup, REPLICAS)  # the Trainer shared with the other checks; its variables before fit recorded
    except Exception as e:
        if REPLICAS in setup.variables_before:  # built, so tf.function refused a variable created on a later call
            return CheckResult(NAME, False, f"the first step raised {describe_error(e)}", FIX)
        return CheckResult(NAME, False, describe_error(e), FIX)  # tfcustom's own scope checks raise while building
    before = setup.variables_before[REPLICAS]
    late = [v.path for v in all_variables(trainer) if id(v) not in before]
    if late:
        return CheckResult(NAME, False, f"{len(late)} variable(s) created during training: {', '.join(late[:3])}", FIX)
    return CheckResult(NAME, True, f"{len(before)} variables, all created before the first step under the scope")
