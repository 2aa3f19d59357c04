"""Check: a planted NaN batch stops training (on_nonfinite="stop") or is skipped ("skip"), weights left finite."""

from __future__ import annotations

import numpy as np

from tfcustom.doctor.harness import Setup, build, describe_error, strategy
from tfcustom.doctor.result import CheckResult
from tfcustom.errors import NonFiniteLossError

NAME = "nan batch"
FIX = "make the loss reach the NaN (no tf.where/clipping that hides it) and keep state updates after the finite check"


def _weights_finite(trainer) -> bool:
    return all(np.all(np.isfinite(w)) for w in trainer.model.get_weights() if np.issubdtype(np.asarray(w).dtype, np.floating))


def run(setup: Setup) -> CheckResult:
    x, y = setup.train_data()
    x = np.array(x, dtype=np.float32, copy=True)
    x[setup.batch_size: 2 * setup.batch_size] = np.nan  # every example of one batch (the data are not shuffled apart: all of them)
    outcomes = []
    for policy in ("stop", "skip"):
        trainer = build(setup, strategy(2), on_nonfinite=policy)
        try:
            trainer.fit((x, y), epochs=1, batch_size=setup.batch_size)
            outcome = "completed"
        except NonFiniteLossError:
            outcome = "stopped"
        except Exception as e:
            return CheckResult(NAME, False, f"on_nonfinite={policy}: {describe_error(e)}", FIX)
        outcomes.append((policy, outcome, _weights_finite(trainer)))
    ok = outcomes[0][1] == "stopped" and outcomes[1][1] == "completed" and all(f for _, _, f in outcomes)
    measured = "; ".join(f"{p}: {o}, weights {'finite' if f else 'NOT finite'}" for p, o, f in outcomes)
    return CheckResult(NAME, ok, measured, FIX)
