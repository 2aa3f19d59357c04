"""The rollback policy in the loop (``on_nonfinite="rollback"``): a diverged step sends training back to the last checkpoint.

The compiled step already refused the diverged update and ended its call there
(`tfcustom.training.steps.make_train_step` with a ``divergence`` guard);
[`RollbackOnDivergence`][tfcustom.callbacks.divergence.RollbackOnDivergence], in ``check_step``:

* counts the steps of the skip list the call read without applying them;
* at a divergence, has the Trainer's [`tfcustom.training.rollback.Rollback`][tfcustom.training.rollback.Rollback] restore
  the newest checkpoint, list the step and lower the learning rate (or raise
  [`NonFiniteLossError`][tfcustom.NonFiniteLossError] after ``max_rollbacks``), and sets ``step.restart``: the
  Trainer starts the epoch's input again at the restored position. The TensorBoard points
  written after the restored step are dropped, as on a resume (they are written again).

Before the first step it saves a checkpoint when the run has none yet (the state to roll back to).
The guide is ``docs/guides/rollback.md``.

Examples:
    >>> RollbackOnDivergence(rollback=None, manager=None)
    Traceback (most recent call last):
    ...
    tfcustom.errors.ConfigError: on_nonfinite='rollback' needs a checkpoint to roll back to (received: None). ...
"""

from __future__ import annotations

from absl import logging

from tfcustom.callbacks.loop_callback import LoopCallback, Step
from tfcustom.data.pipeline import EpochInput
from tfcustom.errors import check


class RollbackOnDivergence(LoopCallback):
    """Roll back to ``manager``'s newest checkpoint when a step diverges; see the module docstring.

    Built by [`Trainer.loop_callbacks`][tfcustom.training.loop.FitLoop.loop_callbacks] with ``on_nonfinite="rollback"``.

    Args:
      rollback: the Trainer's built [`tfcustom.training.rollback.Rollback`][tfcustom.training.rollback.Rollback].
      manager: ``fit``'s ``checkpoint_manager`` (of ``training_checkpoint(trainer)``).
      train: ``fit``'s training data, as resolved (an ``EpochInput`` restarts mid-epoch; a plain dataset cannot).
      preemption: ``fit``'s cluster preemption (refused: rollback runs on one machine).

    Examples:
        >>> import tensorflow as tf, tempfile
        >>> manager = tf.train.CheckpointManager(tf.train.Checkpoint(), tempfile.mkdtemp(), max_to_keep=1)
        >>> RollbackOnDivergence(rollback=None, manager=manager).manager is manager
        True
    """

    def __init__(self, rollback, manager, train=None, preemption=None):
        check(manager is not None, "on_nonfinite='rollback' needs a checkpoint to roll back to", None,
              "pass fit(checkpoint_manager=tf.train.CheckpointManager(training_checkpoint(trainer), DIR, max_to_keep=3)), "
              "or use on_nonfinite='skip'")
        check(train is None or isinstance(train, EpochInput),
              "on_nonfinite='rollback' restarts the input mid-epoch, which a plain tf.data.Dataset cannot", type(train).__name__,
              "pass a tfcustom.data.InputPipeline (or NumPy arrays) as the training data")
        check(preemption is None, "on_nonfinite='rollback' runs on one machine (one or more replicas), not on a cluster",
              type(preemption).__name__, "use on_nonfinite='skip' or 'stop' on a multi-worker cluster")
        self.rollback, self.manager = rollback, manager

    def on_steps_begin(self, epoch: int, done: int, iterator) -> None:
        if not self.manager.checkpoints:
            self.run.save(self.manager, "on_nonfinite=rollback: the state to roll back to before any checkpoint")

    def check_step(self, step: Step) -> None:
        listed = int(step.out["skip_listed"])
        step.ran += listed
        if listed:
            logging.info("Skipped %d step(s) of the skip list (read, not applied) in epoch %d", listed, step.epoch + 1)
        if not bool(step.out["nonfinite"]):
            return
        before = int(step.out["steps_run"]) + listed  # the call's steps before the diverged one
        global_step = int(self.run.trainer.global_step.numpy()) + before + 1
        self.rollback.roll_back(self.manager, global_step, float(step.out["loss"]),
                                f"epoch {step.epoch + 1}, batch {step.batch + before + 1} of {self.run.steps}")
        writer = getattr(self.run.trainer, "summary_writer", None)
        if writer is not None:  # as on resume: drop the TensorBoard points of the steps rolled back (they are written again)
            writer.start(int(self.run.trainer.global_step.numpy()), int(self.run.trainer.epoch.numpy()))
        step.restart = True
