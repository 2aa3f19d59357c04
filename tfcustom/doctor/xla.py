"""Check: the per-replica step compiles with XLA (jit_compile=True), and what each choice costs per step."""

from __future__ import annotations

import time

from tfcustom.doctor.harness import Setup, build, describe_error, strategy
from tfcustom.doctor.result import CheckResult

NAME = "xla"
FIX = "run with jit_compile=False, or replace the op XLA cannot compile (the error names it)"


def _ms_per_step(setup: Setup, jit: bool) -> float:
    trainer = build(setup, strategy(1), jit_compile=jit)
    data = setup.train_data()
    trainer.fit(data, epochs=1, batch_size=setup.batch_size)  # compiles
    start = time.perf_counter()
    trainer.fit(data, epochs=2, batch_size=setup.batch_size)
    return (time.perf_counter() - start) * 1000 / setup.steps


def run(setup: Setup) -> CheckResult:
    plain = _ms_per_step(setup, False)
    try:
        jit = _ms_per_step(setup, True)
    except Exception as e:
        return CheckResult(NAME, False, f"jit_compile=True failed: {describe_error(e)}", FIX)
    return CheckResult(NAME, True, f"compiles; {jit:.1f} ms/step with XLA vs {plain:.1f} ms without (1 replica; "
                                   "measure on a quiet machine, or let tfcustom.experiment.autotune choose)")
