"""Step timing of the fit loop and the retracing check, as built-in callbacks.

[`StepTimer`][tfcustom.callbacks.timing.StepTimer] counts examples and seconds of one epoch's training steps
and the seconds those steps spent waiting for their batches (the train step
reports them as ``input_wait_s``). Its epoch summary answers the question
"is the input pipeline or the model the bottleneck?": a large
``input_wait_share`` means the model waits for data.

[`check_retracing`][tfcustom.callbacks.timing.check_retracing] warns when a ``tf.function`` was traced more often
than the number of input signatures it was called with: retracing (e.g. a
Python number passed where a tensor should be) silently makes every call slow.

[`StepTiming`][tfcustom.callbacks.timing.StepTiming] and [`RetracingCheck`][tfcustom.callbacks.timing.RetracingCheck] run them in the
Trainer's loop (an epoch's timing line in the log; the warning).

Examples:
    >>> timer = StepTimer(batch_size=128, num_examples=1000)
    >>> timer.start(done=0)
    >>> timer.record(steps=2, input_wait_s=0.01)
    >>> sorted(timer.epoch_summary())
    ['examples_per_second', 'input_wait_share', 'train_seconds']
"""

from __future__ import annotations

import time
from typing import Dict, Optional

from absl import logging

from tfcustom.callbacks.loop_callback import LoopCallback, Step


class StepTimer:
    """Examples/s and input-wait share of the steps of one epoch.

    Args:
      batch_size: global batch size (None if unknown: rates are then in steps).
      num_examples: examples per epoch, to count the last partial batch exactly
        (None: every batch counts ``batch_size``).

    Examples:
        >>> timer = StepTimer(batch_size=128, num_examples=300)
        >>> timer.start(done=0)
        >>> timer.record(steps=3, input_wait_s=None)   # 3 batches: 128 + 128 + the last 44
        >>> s = timer.epoch_summary()
        >>> round(s["examples_per_second"] * s["train_seconds"]), "input_wait_share" in s
        (300, False)
    """

    def __init__(self, batch_size: Optional[int], num_examples: Optional[int] = None):
        self.batch_size = batch_size
        self.num_examples = num_examples

    def _examples(self, steps_done: int) -> int:
        if self.batch_size is None:
            return steps_done
        n = steps_done * self.batch_size
        return min(n, self.num_examples) if self.num_examples is not None else n

    def start(self, done: int) -> None:
        """The epoch's steps begin (after ``done`` steps already run, on resume)."""
        self._first = self._done = done
        self._wait: Optional[float] = 0.0
        self._t0 = self._interval_t = time.perf_counter()
        self._interval_done = done
        self._t_end = None

    def record(self, steps: int, input_wait_s: Optional[float]) -> None:
        """``steps`` more steps ran; they waited ``input_wait_s`` for input (None: not measured)."""
        self._done += steps
        self._wait = None if input_wait_s is None or self._wait is None else self._wait + float(input_wait_s)
        self._t_end = time.perf_counter()

    def interval_rate(self) -> float:
        """Examples (or steps) per second since the previous call (or the start)."""
        now = time.perf_counter()
        examples = self._examples(self._done) - self._examples(self._interval_done)
        rate = examples / max(now - self._interval_t, 1e-9)
        self._interval_t, self._interval_done = now, self._done
        return rate

    def epoch_summary(self) -> Dict[str, float]:
        """``examples_per_second``, ``input_wait_share`` (0..1; absent when not
        measured) and ``train_seconds`` of the steps run."""
        seconds = max((self._t_end or time.perf_counter()) - self._t0, 1e-9)
        examples = self._examples(self._done) - self._examples(self._first)
        out = {"examples_per_second": examples / seconds, "train_seconds": seconds}
        if self._wait is not None:
            out["input_wait_share"] = min(self._wait / seconds, 1.0)
        return out

    def log_line(self, epoch: int) -> str:
        s = self.epoch_summary()
        unit = "examples/s" if self.batch_size is not None else "steps/s"
        wait = (f"{100 * s['input_wait_share']:.1f}% of the step time waiting for input" if "input_wait_share" in s
                else "input wait not measured (op determinism refuses tf.timestamp)")
        return f"epoch {epoch} timing: {s['examples_per_second']:.0f} {unit}, {wait} ({self._done - self._first} steps in {s['train_seconds']:.2f} s)"


def tracing_count(fn) -> Optional[int]:
    """How many times the ``tf.function`` ``fn`` was traced (None if it is not one).

    Args:
      fn: a ``tf.function``, or anything else.

    Returns:
      Its ``experimental_get_tracing_count()``, or None.

    Examples:
        >>> import tensorflow as tf
        >>> f = tf.function(lambda x: x + 1)
        >>> tracing_count(f), tracing_count(len)
        (0, None)
        >>> _ = f(tf.constant(1.0)), f(tf.constant(2.0)), f(3.0)   # a Python float: a trace of its own
        >>> tracing_count(f)
        2
    """
    get = getattr(fn, "experimental_get_tracing_count", None)
    return int(get()) if callable(get) else None


def check_retracing(fn, num_signatures: int, name: str = "train step", warned_at: int = 0) -> int:
    """Warn (absl WARNING) if ``fn`` was traced more than once per input
    signature it was called with, and more often than when it last warned
    (``warned_at``).

    Args:
      fn: the ``tf.function`` (anything else is never warned about).
      num_signatures: the distinct input signatures it was called with.
      name: what it is, in the warning.
      warned_at: the trace count of the previous warning (0: none yet).

    Returns:
      The trace count it warned at, else ``warned_at``.

    Examples:
        >>> import tensorflow as tf
        >>> f = tf.function(lambda x: x + 1)
        >>> _ = f(1.0), f(2.0)                      # two traces for one signature (a float)
        >>> check_retracing(f, num_signatures=1)    # warns
        2
        >>> check_retracing(f, num_signatures=1, warned_at=2), check_retracing(f, num_signatures=2)   # quiet
        (2, 0)
    """
    traces = tracing_count(fn)
    if traces is None or traces <= max(num_signatures, warned_at):
        return warned_at
    logging.warning(
        "the %s was traced %d times for %d input signature(s): each retrace recompiles the step and slows training. "
        "Usual causes: a Python number or object passed where a tensor belongs, or a new tf.function or "
        "variable created per call; see https://www.tensorflow.org/guide/function#controlling_retracing",
        name, traces, num_signatures,
    )
    return traces


class StepTiming(LoopCallback):
    """Time each epoch's steps ([`StepTimer`][tfcustom.callbacks.timing.StepTimer]) and log its timing line at the epoch's end.

    ``timer`` is the current epoch's [`StepTimer`][tfcustom.callbacks.timing.StepTimer] (the TensorBoard summaries read
    their ``examples_per_second`` and ``input_wait_share`` from it).

    A subclass passed in ``fit(callbacks=[...])`` replaces it (the summaries then read its ``timer``).

    Args:
      batch_size: the global batch size of the training data (None if unknown).
      num_examples: examples per epoch (None: unknown).

    Examples:
        >>> StepTiming(batch_size=32, num_examples=100).timer is None
        True
    """

    def __init__(self, batch_size: Optional[int] = None, num_examples: Optional[int] = None):
        self.batch_size, self.num_examples = batch_size, num_examples
        self.timer: Optional[StepTimer] = None

    def on_steps_begin(self, epoch: int, done: int, iterator) -> None:
        self.timer = StepTimer(self.batch_size, self.num_examples)
        self.timer.start(done=done)

    def on_step_end(self, step: Step) -> None:
        self.timer.record(step.ran, step.out.get("input_wait_s"))

    def on_epoch_end(self, epoch: int, record: Dict[str, float]) -> None:
        logging.info("%s", self.timer.log_line(epoch + 1))


class RetracingCheck(LoopCallback):
    """Warn at an epoch's end when the train step was traced more often than it had input signatures.

    The Trainer keeps one for all its ``fit`` calls (the signatures add up).

    Examples:
        >>> check = RetracingCheck()
        >>> check.signatures, check.warned_at
        (set(), 0)
    """

    def __init__(self):
        self.signatures = set()  # input signatures the train step was called with
        self.warned_at = 0

    def on_steps_begin(self, epoch: int, done: int, iterator) -> None:
        self.signatures.add(repr(iterator.element_spec))

    def on_epoch_end(self, epoch: int, record: Dict[str, float]) -> None:
        self.warned_at = check_retracing(self.run.trainer.train_step, len(self.signatures), warned_at=self.warned_at)
