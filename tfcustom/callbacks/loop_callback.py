"""The built-in callbacks' interface: the Trainer's loop features as pieces a user can replace.

The progress bar, the checkpoints, the TensorBoard summaries, early stopping and
the rest are [`LoopCallback`][tfcustom.callbacks.loop_callback.LoopCallback]s that
[`Trainer.loop_callbacks`][tfcustom.training.loop.FitLoop.loop_callbacks] builds for each ``fit`` from its
arguments. They are not Keras callbacks: they see more than Keras' hooks give
(the compiled step's outputs, the loop's counters, a checkpoint save), and
their hooks have fixed places around the user's Keras callbacks (``U``), so
that the user's callbacks see exactly the logs ``keras.Model.fit`` gives them::

    fit:    B.on_fit_begin()                  U.on_train_begin
            ... epochs ...
            B.on_fit_end()                    U.on_train_end             B.close()  (always)
    epoch:  B.on_epoch_begin(epoch)           U.on_epoch_begin
            B.on_steps_begin(epoch, done, iterator)                      (the epoch's input is made)
    step:   B.on_step_begin(batch, n)         U.on_train_batch_begin     (the compiled step runs)
            B.check_step(step)                                           (before the counters: the non-finite policy)
            B.on_step_end(step)               U.on_train_batch_end       B.after_step(step)  (skipped once U stops training)
    end:                                      U.on_epoch_end             B.on_epoch_end(epoch, record)

``B.hook`` calls the hook of every built-in in list order. ``set_run`` gives
each one the [`FitRun`][tfcustom.callbacks.loop_callback.FitRun] of the ``fit`` first.

Examples:
    >>> class CountSteps(LoopCallback):
    ...     def on_fit_begin(self):
    ...         self.steps = 0
    ...     def on_step_end(self, step):
    ...         self.steps += step.ran
    >>> counter = CountSteps()
    >>> hooks = LoopCallbacks([counter], FitRun(trainer=None, epochs=1, steps=4))
    >>> hooks.on_fit_begin()
    >>> step = Step({"steps_run": 2}, epoch=0, batch=0)
    >>> hooks.on_step_end(step)
    >>> counter.steps
    2
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

# The hooks of LoopCallback, in the order the loop first calls them.
HOOKS = ("on_fit_begin", "on_epoch_begin", "on_steps_begin", "on_step_begin", "check_step", "on_step_end",
         "after_step", "on_epoch_end", "on_fit_end", "close")


@dataclasses.dataclass
class FitRun:
    """What the built-in callbacks of one ``fit`` share.

    Args:
      trainer: the [`tfcustom.Trainer`][tfcustom.Trainer]; the built-ins read its ``model``, ``optimizer``,
        ``global_step``, ``epoch``, ``step_in_epoch``, ``history`` and ``train_step``.
      epochs: the epoch ``fit`` trains up to.
      steps: batches per epoch.
      callbacks: the user's [`CallbackList`][tfcustom.callbacks.CallbackList] (or None).
      save: ``save(manager, reason, scheduled=True)``: the Trainer's checkpoint save.
      stop: set at an epoch's end: why training stops after it (a log line), None to go on.

    Examples:
        >>> run = FitRun(trainer=None, epochs=3, steps=10)
        >>> run.stop is None
        True
    """

    trainer: Any
    epochs: int
    steps: int
    callbacks: Any = None
    save: Optional[Callable[..., None]] = None
    stop: Optional[str] = None

    def position(self) -> str:
        """Where the loop is, for a message: ``at epoch E, step S of the epoch``."""
        return f"at epoch {int(self.trainer.epoch.numpy()) + 1}, step {int(self.trainer.step_in_epoch.numpy())} of the epoch"


class Step:
    """One call of the compiled train step (``steps_per_execution`` steps), as the built-ins see it.

    Args:
      out: the train step's outputs (``steps_run``, ``skipped``, ``nonfinite``, ``loss``,
        ``replica_losses``, ``input_wait_s``, ``grad_norm`` with clipping, ...).
      epoch: the epoch (from 0).
      batch: the epoch's batches done before this call.
      logs: a function giving the epoch's running ``loss`` and metrics (read once, when first asked).

    Attributes:
      ran: steps to count (set by `check_step`; default ``out["steps_run"]``).
      done: the epoch's batches done after it; ``global_step``: the global step after it.
      end_epoch: set by `check_step` to end the epoch after counting the steps.
      restart: set by `check_step` after a rollback restored a checkpoint: the epoch starts again
        at the restored position, nothing of this call is counted.

    Examples:
        >>> step = Step({"steps_run": 4}, epoch=0, batch=8, logs=lambda: {"loss": 0.5})
        >>> step.ran, step.logs
        (4, {'loss': 0.5})
    """

    def __init__(self, out: Dict[str, Any], epoch: int, batch: int, logs: Optional[Callable[[], Dict[str, float]]] = None):
        self.out, self.epoch, self.batch = out, epoch, batch
        self.ran = int(out["steps_run"])
        self.done, self.global_step, self.end_epoch, self.restart = batch, None, False, False
        self._read_logs, self._logs = logs, None

    @property
    def logs(self) -> Dict[str, float]:
        """The epoch's running ``loss`` and metrics after this call (what ``on_train_batch_end`` gets)."""
        if self._logs is None:
            self._logs = self._read_logs() if self._read_logs is not None else {}
        return self._logs


class LoopCallback:
    """A built-in callback of the Trainer's loop; every hook does nothing unless overridden.

    See the module docstring for where each hook runs. ``self.run`` is the
    [`FitRun`][tfcustom.callbacks.loop_callback.FitRun] of the current ``fit``.

    Examples:
        >>> class Hello(LoopCallback):
        ...     def on_epoch_begin(self, epoch):
        ...         print("epoch", epoch)
        >>> Hello().on_epoch_begin(0)
        epoch 0
    """

    run: Optional[FitRun] = None

    def set_run(self, run: FitRun) -> None:
        self.run = run

    def on_fit_begin(self) -> None: ...
    def on_epoch_begin(self, epoch: int) -> None: ...
    def on_steps_begin(self, epoch: int, done: int, iterator) -> None: ...
    def on_step_begin(self, batch: int, num_steps: int) -> None: ...
    def check_step(self, step: Step) -> None: ...
    def on_step_end(self, step: Step) -> None: ...
    def after_step(self, step: Step) -> None: ...
    def on_epoch_end(self, epoch: int, record: Dict[str, float]) -> None: ...
    def on_fit_end(self) -> None: ...
    def close(self) -> None: ...


class LoopCallbacks:
    """The built-ins of one ``fit``: ``hooks.on_step_end(step)`` calls every one's hook, in order.

    Args:
      callbacks: [`LoopCallback`][tfcustom.callbacks.loop_callback.LoopCallback]s.
      run: the ``fit``'s [`FitRun`][tfcustom.callbacks.loop_callback.FitRun], given to each one's ``set_run``.

    Examples:
        >>> class Hello(LoopCallback):
        ...     def on_epoch_begin(self, epoch):
        ...         print("epoch", epoch, "of", self.run.epochs)
        >>> LoopCallbacks([Hello(), Hello()], FitRun(trainer=None, epochs=2, steps=1)).on_epoch_begin(0)
        epoch 0 of 2
        epoch 0 of 2
    """

    def __init__(self, callbacks: Sequence[LoopCallback], run: FitRun):
        self.callbacks: List[LoopCallback] = list(callbacks)
        for c in self.callbacks:
            c.set_run(run)

    def __getattr__(self, hook: str):
        if hook not in HOOKS:
            raise AttributeError(hook)

        def call(*args):
            for c in self.callbacks:
                getattr(c, hook)(*args)
        return call

    def close(self) -> None:
        """Every one's ``close``, also when one of them raises (the first error is raised after)."""
        error = None
        for c in self.callbacks:
            try:
                c.close()
            except BaseException as e:  # noqa: B902 -- re-raised below
                error = error or e
        if error is not None:
            raise error


def replace_builtins(builtins: Sequence[LoopCallback], given: Sequence[LoopCallback]) -> List[LoopCallback]:
    """``builtins`` with each of ``given`` in the place of the built-in whose class it is an instance of.

    Args:
      builtins: [`Trainer.loop_callbacks`][tfcustom.training.loop.FitLoop.loop_callbacks]' list.
      given: the `LoopCallback`s passed to ``fit(callbacks=...)``.

    Returns:
      The list to run: a given one replaces the built-in of its class (or a base class of it);
      one that replaces none comes last.

    Examples:
        >>> class A(LoopCallback): pass
        >>> class B(LoopCallback): pass
        >>> class MyA(A): pass
        >>> [type(c).__name__ for c in replace_builtins([A(), B()], [MyA()])]
        ['MyA', 'B']
    """
    out = list(builtins)
    for c in given:
        i = next((i for i, b in enumerate(out) if isinstance(c, type(b))), None)
        if i is None:
            out.append(c)
        else:
            out[i] = c
    return out


def learning_rate(optimizer) -> float:
    """The optimizer's current learning rate as a Python float (a schedule's value at the current step).

    Args:
      optimizer: a Keras optimizer.

    Returns:
      The learning rate.

    Examples:
        >>> import keras
        >>> learning_rate(keras.optimizers.SGD(0.5))
        0.5
    """
    lr = optimizer.learning_rate
    return float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr))
