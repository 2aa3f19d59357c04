"""The largest global batch that fits, and the fastest ``steps_per_execution`` (``--batch_size=find``).

A throw-away copy of the model takes one training step (forward, backward,
update) at growing global batch sizes: doubling from ``start`` until a step
raises ``tf.errors.ResourceExhaustedError`` (out of device memory) or the
cap is reached, then bisecting between the last size that fitted and the
first that did not. Every size is a multiple of the replicas (and of
``multiple_of``), so the strategy splits it evenly.

On a CPU with tens of GiB the memory rarely binds: the cap does
(``max_batch_size``, default 1024, and at most a sixteenth of the training
examples, so that an epoch keeps at least 16 steps). A larger batch changes
the optimization, not only the speed: run the learning-rate range test
(``--learning_rate=find``) after it, on the batch size found, as the CLI does.

Then, at that batch size, the compiled step runs ``steps_per_execution``
steps per call for each candidate (1, 4, 16, 64, at most an epoch); the
fastest by more than ``margin`` over the smaller value wins (interleaved
rounds, best of each).

Examples:
    >>> import tensorflow as tf
    >>> from tfcustom.experiment import batch_finder
    >>> def try_batch(batch_size):  # a device that holds at most 300 examples
    ...     if batch_size > 300:
    ...         raise tf.errors.ResourceExhaustedError(None, None, "OOM")
    >>> batch_finder.largest_batch_size(try_batch, start=32, max_batch_size=4096)
    296
"""

from __future__ import annotations

import dataclasses
import gc
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import tensorflow as tf
from absl import logging

from tfcustom.training import steps as steps_lib
from tfcustom.errors import check

STEPS_PER_EXECUTION_CANDIDATES = (1, 4, 16, 64)


@dataclasses.dataclass
class BatchFinderResult:
    """The batch size and ``steps_per_execution`` found, and what was tried.

    Attributes:
      batch_size: the global batch size found.
      steps_per_execution: the fastest steps per call at that size.
      tried: ``str(batch size) -> fitted``, every size tried.
      step_s: ``str(steps_per_execution) -> seconds per step`` (best round).
      reason: one line: the cap and the candidates.

    ``to_dict()`` and ``from_dict()`` carry it through ``autotune.json``.

    Examples:
        >>> result = BatchFinderResult(256, 4, {"128": True, "256": True, "512": False}, {"1": 2e-3, "4": 1e-3}, "...")
        >>> BatchFinderResult.from_dict(result.to_dict()) == result, result.to_dict()["batch_size"]
        (True, 256)
    """

    batch_size: int
    steps_per_execution: int
    tried: Dict[str, bool]  # batch size -> fitted
    step_s: Dict[str, float]  # steps_per_execution -> seconds per step (best round)
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BatchFinderResult":
        return cls(**d)


def _round_down(value: int, multiple: int) -> int:
    return max(multiple, value - value % multiple)


def _fits(try_batch: Callable[[int], None], batch_size: int, tried: Dict[str, bool]) -> bool:
    try:
        try_batch(batch_size)
        fitted = True
    except tf.errors.ResourceExhaustedError:
        fitted = False
        gc.collect()  # drop the failed attempt's tensors before the next one
    tried[str(batch_size)] = fitted
    logging.info("Batch finder: global batch %d %s", batch_size, "fits" if fitted else "is out of memory")
    return fitted


def largest_batch_size(try_batch: Callable[[int], None], *, start: int = 32, max_batch_size: int = 1024,
                       multiple_of: int = 8, tried: Optional[Dict[str, bool]] = None) -> int:
    """The largest multiple of ``multiple_of`` up to ``max_batch_size`` for which
    ``try_batch(batch_size)`` does not raise ``tf.errors.ResourceExhaustedError``.

    Args:
      try_batch: runs one training step at that global batch size.
      start: the first size tried (it must fit).
      max_batch_size: the cap.
      multiple_of: every size tried is a multiple of it (the replicas, times 8).
      tried: filled with ``str(size) -> fitted``.

    Returns:
      The batch size.

    Examples:
        >>> def try_batch(batch_size):  # a device that holds at most 100 examples
        ...     if batch_size > 100:
        ...         raise tf.errors.ResourceExhaustedError(None, None, "OOM")
        >>> tried = {}
        >>> largest_batch_size(try_batch, start=32, max_batch_size=1024, multiple_of=16, tried=tried)
        96
        >>> tried   # doubled to 128, then bisected: 96 fits, 112 does not
        {'32': True, '64': True, '128': False, '96': True, '112': False}
    """
    tried = {} if tried is None else tried
    check(1 <= start <= max_batch_size and multiple_of >= 1, "batch finder bounds out of order",
          (start, max_batch_size, multiple_of), "pass 1 <= start <= max_batch_size and multiple_of >= 1")
    start = _round_down(max(start, multiple_of), multiple_of)
    check(_fits(try_batch, start, tried), "not even the smallest batch fits in memory", start,
          "pass a smaller --batch_size, a smaller model, or mixed precision")
    good, bad = start, None
    while good < max_batch_size:
        size = min(_round_down(2 * good, multiple_of), _round_down(max_batch_size, multiple_of))
        if size <= good:
            break
        if not _fits(try_batch, size, tried):
            bad = size
            break
        good = size
    while bad is not None and bad - good > multiple_of:  # bisect the back-off
        middle = _round_down((good + bad) // 2, multiple_of)
        if middle <= good:
            break
        if _fits(try_batch, middle, tried):
            good = middle
        else:
            bad = middle
    return good


def fastest_steps_per_execution(run: Callable[[int], float], candidates: Sequence[int], *, rounds: int = 3,
                                margin: float = 0.05) -> tuple:
    """The fastest ``steps_per_execution``: a larger one must beat the one kept by ``margin``.

    Args:
      run: ``run(k)`` runs ``k`` steps in one call and returns the seconds per step.
      candidates: the counts to time, smallest first.
      rounds: each candidate is timed ``rounds`` times, interleaved; its best counts.
      margin: the fraction by which a larger count must be faster.

    Returns:
      ``(best, seconds_per_step)``: the count chosen, and ``str(k) -> best seconds per step``.

    Examples:
        >>> seconds = {1: 1.0e-3, 4: 0.6e-3, 16: 0.58e-3}   # 16 is within 5 % of 4
        >>> fastest_steps_per_execution(lambda k: seconds[k], [1, 4, 16])
        (4, {'1': 0.001, '4': 0.0006, '16': 0.00058})
    """
    times: Dict[int, List[float]] = {k: [] for k in candidates}
    for _ in range(rounds):
        for k in candidates:
            times[k].append(run(k))
    best_times = {k: min(v) for k, v in times.items()}
    best = candidates[0]
    for k in candidates[1:]:
        if best_times[k] < (1.0 - margin) * best_times[best]:
            best = k
    return best, {str(k): v for k, v in best_times.items()}


def find_batch_size(build: Callable[[], tuple], make_batches: Callable[[int], Iterable], *,
                    strategy: Optional[tf.distribute.Strategy] = None, train_examples: int, start: int = 32,
                    max_batch_size: int = 1024, steps_per_execution: Sequence[int] = STEPS_PER_EXECUTION_CANDIDATES,
                    timer: Callable[[], float] = time.perf_counter) -> BatchFinderResult:
    """Find the batch size, then the fastest ``steps_per_execution`` at it.

    Args:
      build: ``build() -> (model, loss, optimizer)``, fresh objects under the
        strategy's scope (one copy serves every size: the weights a step
        changes do not matter here).
      make_batches: ``make_batches(global_batch_size)`` -> repeated training
        batches of that size (a dataset, distributed for the strategy when it
        has several replicas).
      strategy: the run's strategy (default: the current one).
      train_examples: the training split's size (the cap's second bound).
      start: the first size tried (see `largest_batch_size`).
      max_batch_size: the cap (with ``train_examples // 16``).
      steps_per_execution: the candidates timed (capped at an epoch's steps).
      timer: a clock (tests pass a fake one).

    Returns:
      A `BatchFinderResult`.

    Examples:
        >>> import keras, numpy as np
        >>> x = np.random.default_rng(0).normal(size=(1024, 4)).astype("float32")
        >>> def build():
        ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        ...     return model, keras.losses.MeanSquaredError(), keras.optimizers.SGD(0.01)
        >>> make = lambda b: tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(b, drop_remainder=True).repeat()
        >>> result = find_batch_size(build, make, train_examples=512, start=16, max_batch_size=1024,
        ...                          steps_per_execution=(1,))
        >>> result.batch_size, result.tried   # the cap: 512 examples / 16, so an epoch keeps 16 steps
        (32, {'16': True, '32': True})
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    cap = min(max_batch_size, max(start, train_examples // 16))
    with strategy.scope():
        model, loss, optimizer = build()
    step = steps_lib.make_train_step(model, loss, optimizer, strategy=strategy, on_nonfinite="skip")

    def try_batch(batch_size):
        float(step(iter(make_batches(batch_size)), tf.constant(1))["loss"])

    tried: Dict[str, bool] = {}
    batch_size = largest_batch_size(try_batch, start=start, max_batch_size=cap, multiple_of=8 * replicas, tried=tried)
    epoch_steps = max(1, train_examples // batch_size)
    candidates = [k for k in steps_per_execution if k <= epoch_steps] or [1]
    it = iter(make_batches(batch_size))

    def run(k):
        begin = timer()
        float(step(it, tf.constant(k))["loss"])
        return (timer() - begin) / k

    for k in candidates:
        run(k)  # warm-up: the first call of each count is not timed
    best, step_s = fastest_steps_per_execution(run, candidates)
    reason = (f"largest batch that fits up to the cap {cap} (max_batch_size={max_batch_size}, "
              f"train examples / 16 = {train_examples // 16}); steps_per_execution {best} fastest of {candidates}")
    logging.info("Batch finder: batch_size=%d, steps_per_execution=%d (%s)", batch_size, best, reason)
    return BatchFinderResult(batch_size, best, tried, step_s, reason)
