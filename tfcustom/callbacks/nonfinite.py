"""The non-finite policy in the loop: a step whose loss or gradient was NaN or Inf.

The compiled step already refused the update (``on_nonfinite="stop"``) or
skipped and counted it (``"skip"``); [`NonFiniteSteps`][tfcustom.callbacks.nonfinite.NonFiniteSteps] decides
what the loop does next, in ``check_step``, before the loop counts the steps:

* ``"stop"``: raise [`NonFiniteLossError`][tfcustom.NonFiniteLossError] (the last checkpoint is intact),
  unless a user callback (e.g. ``keras.callbacks.TerminateOnNaN``), shown the
  step as ``on_train_batch_end(batch, {..., "loss": nan})``, stops training:
  then the epoch ends there, as in ``keras.Model.fit``;
* ``"skip"``: count the skipped steps as run, and log how many;
* ``"rollback"``: nothing (`tfcustom.callbacks.divergence.RollbackOnDivergence` rolls back).

Examples:
    >>> policy = NonFiniteSteps("skip")
    >>> policy.on_nonfinite
    'skip'
"""

from __future__ import annotations

from absl import logging

from tfcustom.callbacks.loop_callback import LoopCallback, Step
from tfcustom.errors import NonFiniteLossError


class NonFiniteSteps(LoopCallback):
    """What the loop does after a non-finite step; see the module docstring.

    Args:
      on_nonfinite: the Trainer's ``on_nonfinite`` (``"stop"`` or ``"skip"``).

    To act differently, subclass it, override ``check_step`` and pass the
    instance in ``fit(callbacks=[...])``: it replaces the built-in one. Do not
    remove it: under ``"skip"`` it is what counts the skipped steps as run.

    Examples:
        >>> NonFiniteSteps("stop").on_nonfinite
        'stop'
    """

    def __init__(self, on_nonfinite: str = "stop"):
        self.on_nonfinite = on_nonfinite

    def check_step(self, step: Step) -> None:
        if self.on_nonfinite == "rollback":
            return  # tfcustom.callbacks.divergence.RollbackOnDivergence's
        if self.on_nonfinite == "skip":
            step.ran += int(step.out["skipped"])
        if not bool(step.out["nonfinite"]):
            return
        if self.on_nonfinite == "stop":
            batch = step.batch + int(step.out["steps_run"])
            if self._stopped_by_callbacks(step, batch):
                step.end_epoch = True
                return
            global_step = int(self.run.trainer.global_step.numpy()) + int(step.out["steps_run"])
            raise NonFiniteLossError(
                f"non-finite loss or gradient at epoch {step.epoch + 1}, step {global_step + 1} "
                f"(batch {batch} of the epoch); the update was not applied and the last checkpoint is intact. "
                "Lower the learning rate, enable --clip_global_norm, check the inputs for NaN/Inf, "
                "or pass --on_nonfinite=skip to skip such steps"
            )
        logging.warning("Skipped %d non-finite step(s) in epoch %d", int(step.out["skipped"]), step.epoch + 1)

    def _stopped_by_callbacks(self, step: Step, batch: int) -> bool:
        """Show the step to the user's callbacks as ``loss=nan``; True when one of them stopped training."""
        callbacks = self.run.callbacks
        if not callbacks:
            return False
        callbacks.on_train_batch_end(batch, {**step.logs, "loss": float("nan")})
        if callbacks.stop_training:
            logging.warning("Non-finite loss at epoch %d, batch %d: a callback stopped training (the update was not applied)",
                            step.epoch + 1, batch + 1)
        return callbacks.stop_training
