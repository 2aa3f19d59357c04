"""``tfcustom.doctor``: check a user's model for distributed and checkpoint bugs on logical CPUs.

>>> import tfcustom.doctor   # doctest: +SKIP
>>> report = tfcustom.doctor.check(lambda: tfcustom.models.get("mlp", 10), "sparse_categorical_crossentropy",
...                                lambda: keras.optimizers.Adam(1e-3), (x, y))   # doctest: +SKIP
>>> print(report.table())   # doctest: +SKIP

Each check is one module (its ``run(setup) -> CheckResult``). The multi-replica
checks need 4 logical CPU devices, configured before TensorFlow initialises
([`tfcustom.distribute.strategy.configure_cpu_replicas`][tfcustom.distribute.strategy.configure_cpu_replicas]; ``tfcustom-doctor`` does it at start).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from tfcustom.doctor import checkpoint, metrics, nonfinite, replica_state, replicas, retracing, variables, xla
from tfcustom.doctor.harness import Setup
from tfcustom.doctor.result import CheckResult, Report
from tfcustom.errors import check as _require

CHECKS = {m.NAME: m.run for m in (replicas, metrics, variables, checkpoint, retracing, replica_state, xla, nonfinite)}

__all__ = ["CHECKS", "CheckResult", "Report", "Setup", "check"]


def check(model_fn: Callable, loss, optimizer_fn: Callable, data, *, metrics: Sequence = ("accuracy",), batch_size: int = 8,
          steps: int = 3, seed: int = 0, tolerance: float = 1e-5, trainer_cls=None, checks: Optional[Sequence[str]] = None) -> Report:
    """Run the doctor's checks on ``model_fn()`` trained with ``loss`` and ``optimizer_fn()`` on ``data = (x, y)``.

    Args:
      model_fn: builds a fresh ``keras.Model`` (called under each strategy's scope).
      loss: a Keras loss object, name or function, as ``tfcustom.Trainer`` takes it.
      optimizer_fn: builds a fresh optimizer.
      data: NumPy ``(x, y)`` with at least ``batch_size * steps`` examples.
      metrics: metric names or objects as the Trainer takes them, or a function returning them.
      batch_size: the global batch (divisible by 4); ``steps``: train steps per check.
      tolerance: largest difference accepted where the result is not bitwise.
      trainer_cls: a ``tfcustom.Trainer`` subclass (your own step) to check instead of the Trainer.
      checks: names of `CHECKS` to run (default: all).

    Returns:
      A [`Report`][tfcustom.doctor.Report] (``report.passed``, ``report.table()``, ``report.timing()``).

    Examples:
        The checkpoint check needs one device (the multi-replica ones need 4 logical CPUs):

        >>> import keras, numpy as np
        >>> x, y = np.random.default_rng(0).normal(size=(24, 4)).astype("float32"), np.arange(24) % 3
        >>> report = check(lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]),
        ...                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...                lambda: keras.optimizers.SGD(0.1), (x, y), checks=["checkpoint coverage"])
        >>> report.passed, report["checkpoint coverage"].measured
        (True, '2 of 2 weights saved; restored predictions differ by 0')
    """
    from tfcustom.training.trainer import Trainer

    names = list(CHECKS) if checks is None else list(checks)
    unknown = sorted(set(names) - set(CHECKS))
    _require(not unknown, "unknown doctor check(s)", unknown, "choose from: " + ", ".join(CHECKS))
    x, y = data
    setup = Setup(model_fn, loss, optimizer_fn, x, y, metrics=metrics, batch_size=batch_size, steps=steps, seed=seed,
                  trainer_cls=trainer_cls or Trainer, tolerance=tolerance)
    results = []
    for name in names:
        start = time.perf_counter()
        results.append(CHECKS[name](setup))
        results[-1].seconds = time.perf_counter() - start
    return Report(results)
