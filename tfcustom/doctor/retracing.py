"""Check: the train step is traced once, not again on later calls (1 and 2 replicas).

Two replicas are enough to show retracing that only several devices cause (each
more replica adds one more trace of the replica function to every trace)."""

from __future__ import annotations

from tfcustom.doctor.harness import Setup, build, describe_error, strategy
from tfcustom.doctor.result import CheckResult

NAME = "retracing"
FIX = ("call the step with tensors, not Python numbers or new objects, and with one batch shape "
       "(drop_remainder=True); keep Python state out of the step")
REPLICAS = 2


def _traces(setup: Setup, replicas: int) -> int:
    """How often the model's ``call`` is traced by ``setup.steps`` more steps after the first epoch.

    Python code of ``call`` runs only while tracing (once per replica), so counting its calls counts traces."""
    trainer = build(setup, strategy(replicas))
    data = setup.train_data()
    trainer.fit(data, epochs=1, batch_size=setup.batch_size)
    model, calls = trainer.model, [0]
    inner = model.call

    def counted(*args, **kwargs):
        calls[0] += 1
        return inner(*args, **kwargs)

    model.call = counted
    try:
        trainer.fit(data, epochs=2, batch_size=setup.batch_size)
    finally:
        del model.call
    return calls[0] // replicas


def run(setup: Setup) -> CheckResult:
    try:
        traces = {n: _traces(setup, n) for n in (1, REPLICAS)}
    except Exception as e:
        return CheckResult(NAME, False, f"training raised {describe_error(e)}", FIX)
    measured = f"new traces over {setup.steps} later steps: {traces[1]} on 1 replica, {traces[REPLICAS]} on {REPLICAS}"
    return CheckResult(NAME, not any(traces.values()), measured, FIX)
