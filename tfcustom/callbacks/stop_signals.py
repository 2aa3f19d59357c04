"""SIGTERM / Ctrl-C and a cluster's preemption in the Trainer's loop: save, then raise ``TrainingInterrupted``.

One process: [`StopSignals`][tfcustom.distribute.preemption.StopSignals] turns the signal into a flag; after
the current train-step call the loop saves the training checkpoint and raises
[`TrainingInterrupted`][tfcustom.distribute.preemption.TrainingInterrupted] (at an epoch's end: after the end-of-epoch
save). A cluster: [`ClusterPreemption`][tfcustom.distribute.preemption.ClusterPreemption] makes every worker save at
the step they agreed on, then stop.

Examples:
    >>> StopOnSignals().preemption is None
    True
"""

from __future__ import annotations

from typing import Dict

from tfcustom.callbacks.loop_callback import LoopCallback, Step
from tfcustom.distribute.preemption import StopSignals, interrupted


class StopOnSignals(LoopCallback):
    """Stop on SIGTERM / SIGINT (or a cluster's termination notice) without losing work.

    Built from ``fit(checkpoint_manager=, preemption=)``; the signal handlers
    are installed for the length of the ``fit`` (from the main thread).

    A subclass passed in ``fit(callbacks=[...])`` replaces it (e.g. to stop at epoch ends only).

    Args:
      manager: the training checkpoint's ``tf.train.CheckpointManager`` (None: stop without saving).
      preemption: a [`ClusterPreemption`][tfcustom.distribute.preemption.ClusterPreemption] on a multi-worker cluster, else None.

    Examples:
        >>> StopOnSignals(manager=None).manager is None
        True
    """

    def __init__(self, manager=None, preemption=None):
        self.manager = manager
        self.preemption = preemption
        self.signals = StopSignals()

    def on_fit_begin(self) -> None:
        self.signals.__enter__()
        if self.preemption is not None:
            self.preemption.attach(
                should_stop=lambda: self.signals.received is not None,
                save=lambda: self.manager is not None and self.run.save(self.manager, "cluster preemption", scheduled=False),
                stop=lambda: self._raise(self.signals.received or "a termination notice to another worker"),
            )

    def _raise(self, signal_name: str) -> None:
        raise interrupted(signal_name, self.run.position(), self.manager is not None)

    def after_step(self, step: Step) -> None:
        if self.preemption is not None:
            self.preemption.after_step()  # on the step the cluster agreed on: saves, then raises
        elif self.signals.received and step.done < self.run.steps:
            if self.manager is not None:
                self.run.save(self.manager, self.signals.received, scheduled=False)
            self._raise(self.signals.received)

    def on_epoch_end(self, epoch: int, record: Dict[str, float]) -> None:
        if self.preemption is None and self.signals.received and epoch + 1 < self.run.epochs and not self.run.stop:
            raise interrupted(self.signals.received, f"after epoch {epoch + 1}", self.manager is not None)

    def close(self) -> None:
        try:
            if self.preemption is not None:
                self.preemption.detach()
        finally:
            self.signals.__exit__(None, None, None)
