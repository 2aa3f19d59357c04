"""Check: no variable is created after the first step or outside the strategy scope."""

from __future__ import annotations

from tfcustom.doctor.harness import Setup, build, describe_error, strategy
from tfcustom.doctor.result import CheckResult

NAME = "variables in scope"
FIX = ("create every weight in the layer's build() (or __init__), not in call(); build the model and the optimizer "
       "under strategy.scope() before the first step")


def run(setup: Setup) -> CheckResult:
    try:
        trainer = build(setup, strategy(2))
    except Exception as e:  # tfcustom's own scope checks (check_model_in_scope, ...) raise here
        return CheckResult(NAME, False, describe_error(e), FIX)
    before = {id(v) for v in trainer.model.variables + list(trainer.optimizer.variables)}
    try:
        trainer.fit(setup.train_data(), epochs=1, batch_size=setup.batch_size)
    except Exception as e:  # tf.function refuses a variable created on a later call
        return CheckResult(NAME, False, f"the first step raised {describe_error(e)}", FIX)
    late = [v.path for v in trainer.model.variables + list(trainer.optimizer.variables) if id(v) not in before]
    if late:
        return CheckResult(NAME, False, f"{len(late)} variable(s) created during training: {', '.join(late[:3])}", FIX)
    return CheckResult(NAME, True, f"{len(before)} variables, all created before the first step under the scope")
