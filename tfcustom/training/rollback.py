"""Rollback on divergence (``on_nonfinite="rollback"``, ``--on_nonfinite=rollback``).

A step diverges when its loss or a gradient is NaN/Inf or, with a loss-spike
factor, when its loss jumps above the recent ones (`tfcustom.training.loss_spike`).
Its update is never applied (the compiled step checks before applying, per
step, also inside a ``steps_per_execution`` loop). The Trainer then:

1. restores the newest checkpoint of its ``checkpoint_manager`` (the last good
   state: a checkpoint only ever holds applied, finite steps);
2. records the diverged step's global number in the skip list
   (`tfcustom.training.skip_list`, saved in the training checkpoint);
3. multiplies the learning rate by ``lr_factor`` (a float rate: the
   optimizer's variable; a schedule: a scale on its output,
   `tfcustom.optimizers.scaled_schedule`), when it is not 1;
4. starts the epoch's input again at the restored position (the resume path),
   and logs one line: the step, the checkpoint restored, the new rate, the
   rollbacks left.

When training reaches a step of the skip list, its batch is read and not
applied (exactly as ``on_nonfinite="skip"`` treats a NaN step), so the data
order after it stays a function of the seed: a rollback run equals, bit for
bit, an uninterrupted ``"skip"`` run that skips the same steps. After
``max_rollbacks`` rollbacks the next divergence raises
[`NonFiniteLossError`][tfcustom.NonFiniteLossError] (one line; the update
not applied, the checkpoints untouched).

Examples:
    >>> rollback = Rollback(max_rollbacks=3, lr_factor=0.5, loss_spike=5.0)
    >>> trainer = tfcustom.Trainer(model, loss, "adam", on_nonfinite="rollback", rollback=rollback)
    >>> manager = tf.train.CheckpointManager(training_checkpoint(trainer), "ckpts", max_to_keep=3)
    >>> trainer.fit(train, epochs=3, checkpoint_manager=manager, checkpoint_every_steps=100)
"""

from __future__ import annotations

from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.errors import NonFiniteLossError, check, format_error
from tfcustom.optimizers.scaled_schedule import ScaledSchedule
from tfcustom.training.checkpoint import restore_latest
from tfcustom.training.loss_spike import LossSpike
from tfcustom.training.skip_list import CAPACITY, SkipList


class _NoDivergence:
    """The step's guard without rollback: nothing is listed, no loss is a spike."""

    def judge(self, offset, loss_value):
        return tf.constant(False), tf.constant(False)

    def observe(self, loss_value, applied) -> None:
        return None


NO_DIVERGENCE = _NoDivergence()


def _rate_holders(optimizer) -> list:
    """The optimizers that hold a learning rate: a ``LossScaleOptimizer``'s inner one, both of a
    ``BackboneHeadOptimizer``, else ``optimizer`` itself."""
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        return _rate_holders(inner)
    parts = [getattr(optimizer, name, None) for name in ("backbone_optimizer", "head_optimizer")]
    if all(p is not None for p in parts):
        return [h for p in parts for h in _rate_holders(p)]
    return [optimizer]


def _rate(optimizer):
    return getattr(optimizer, "_learning_rate", None)  # noqa: SLF001 -- Keras keeps the variable or schedule there


class Rollback:
    """What ``on_nonfinite="rollback"`` does; pass it as ``tfcustom.Trainer(rollback=...)``.

    Args:
      max_rollbacks: rollbacks allowed in the run (at most 64); the next divergence stops training.
      lr_factor: multiply the learning rate by this after each rollback (in (0, 1]; 1: unchanged).
      loss_spike: also a divergence: a step whose loss exceeds this factor times the running
        mean of the recent losses (`tfcustom.training.loss_spike`); None: only NaN/Inf.

    Examples:
        >>> optimizer = keras.optimizers.SGD(0.1)
        >>> rollback = Rollback(max_rollbacks=2, lr_factor=0.5).build(tf.Variable(0, dtype=tf.int64), optimizer,
        ...                                                           tf.distribute.get_strategy())
        >>> rollback.skip_list.add(7)  # what a rollback at global step 7 records
        >>> spike, listed = rollback.judge(6, tf.constant(1.0))  # the step 6 steps after global step 0: step 7
        >>> bool(spike), bool(listed), rollback.skipped_steps
        (False, True, [7])
    """

    def __init__(self, max_rollbacks: int = 3, lr_factor: float = 1.0, loss_spike: Optional[float] = None):
        check(isinstance(max_rollbacks, int) and not isinstance(max_rollbacks, bool) and 1 <= max_rollbacks <= CAPACITY,
              f"max_rollbacks must be an integer from 1 to {CAPACITY}", max_rollbacks, "pass e.g. max_rollbacks=3")
        check(isinstance(lr_factor, (int, float)) and not isinstance(lr_factor, bool) and 0 < lr_factor <= 1,
              "rollback_lr_factor must be in (0, 1]", lr_factor, "pass e.g. 0.5 to halve the learning rate at each rollback, or 1 to keep it")
        if loss_spike is not None:
            LossSpike.check_factor(loss_spike)
        self.max_rollbacks, self.lr_factor, self.loss_spike_factor = max_rollbacks, float(lr_factor), loss_spike
        self.skip_list: Optional[SkipList] = None

    @classmethod
    def from_config(cls, config) -> Optional["Rollback"]:
        """The ``Rollback`` of a [`tfcustom.TrainConfig`][tfcustom.TrainConfig]'s ``max_rollbacks``, ``rollback_lr_factor``
        and ``rollback_loss_spike`` (None unless ``on_nonfinite == "rollback"``; the last two are refused with another policy)."""
        if config.on_nonfinite != "rollback":
            check(config.rollback_lr_factor == 1.0 and config.rollback_loss_spike is None,
                  "rollback_lr_factor and rollback_loss_spike apply to on_nonfinite=rollback", f"on_nonfinite={config.on_nonfinite}",
                  "pass --on_nonfinite=rollback too, or drop --rollback_lr_factor / --rollback_loss_spike")
            return None
        return cls(config.max_rollbacks, config.rollback_lr_factor, config.rollback_loss_spike)

    @classmethod
    def for_policy(cls, on_nonfinite: str, rollback: Optional["Rollback"], global_step, optimizer, strategy) -> Optional["Rollback"]:
        """The Trainer's built ``Rollback`` for ``on_nonfinite`` (None unless ``"rollback"``; ``rollback`` is refused with another policy)."""
        check(rollback is None or isinstance(rollback, Rollback), "rollback must be a tfcustom.training.rollback.Rollback",
              type(rollback).__name__, "pass e.g. Rollback(max_rollbacks=3, lr_factor=0.5)")
        if on_nonfinite != "rollback":
            check(rollback is None, "a Rollback is used with on_nonfinite='rollback'", f"on_nonfinite={on_nonfinite!r}",
                  "pass on_nonfinite='rollback' too, or drop rollback=")
            return None
        return (rollback or cls()).build(global_step, optimizer, strategy)

    def build(self, global_step: tf.Variable, optimizer, strategy) -> "Rollback":
        """Create the state (under ``strategy``'s scope) and scale a scheduled learning rate; return self."""
        check(self.skip_list is None, "this Rollback belongs to another Trainer already", self.max_rollbacks,
              "build one Rollback per Trainer")
        self.global_step, self.optimizer, self.strategy = global_step, optimizer, strategy
        with strategy.scope():
            self.skip_list = SkipList()
            self.lr_scale = tf.Variable(1.0, trainable=False, name="rollback_lr_scale")
            self.loss_spike = None if self.loss_spike_factor is None else LossSpike(self.loss_spike_factor)
        if self.lr_factor != 1.0:
            for holder in _rate_holders(optimizer):
                rate = _rate(holder)
                check(isinstance(rate, (tf.Variable, keras.Variable, keras.optimizers.schedules.LearningRateSchedule)),
                      "rollback_lr_factor needs a float learning rate or a keras LearningRateSchedule", type(rate).__name__,
                      "build the optimizer with one, or pass rollback_lr_factor=1")
                if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
                    holder.learning_rate = ScaledSchedule(rate, self.lr_scale)
        return self

    @property
    def variables(self) -> list:
        """Everything the next step depends on, for the training checkpoint."""
        return [self.skip_list.variable, self.lr_scale] + ([] if self.loss_spike is None else self.loss_spike.variables)

    # -- in the compiled step -------------------------------------------------

    def judge(self, offset, loss_value):
        """``(spike, listed)`` for the step ``offset`` steps after the global step: scalar bools."""
        listed = self.skip_list.contains(tf.convert_to_tensor(self.global_step) + tf.cast(offset, tf.int64) + 1)
        if self.loss_spike is None:
            return tf.constant(False), listed
        return self.loss_spike.is_spike(loss_value) & ~listed, listed

    def observe(self, loss_value, applied) -> None:
        if self.loss_spike is not None:
            self.loss_spike.observe(loss_value, applied)

    # -- on the host ------------------------------------------------------------

    @property
    def skipped_steps(self) -> List[int]:
        return self.skip_list.steps()

    def cause(self, loss: float) -> str:
        """What made step diverge, for the log and the error."""
        if np.isfinite(loss) and self.loss_spike is not None:
            return f"loss spike ({loss:.4g} > {self.loss_spike.factor:g} x running mean {float(self.loss_spike.mean.numpy()):.4g})"
        return "non-finite loss or gradient"

    def roll_back(self, manager: tf.train.CheckpointManager, step: int, loss: float, where: str) -> str:
        """Restore the newest checkpoint of ``manager``, list ``step``, lower the rate; return the checkpoint path.

        Raises:
          NonFiniteLossError: when ``max_rollbacks`` rollbacks were done already (nothing restored).
        """
        done = len(self.skip_list)
        if done >= self.max_rollbacks:
            raise NonFiniteLossError(format_error(
                f"{self.cause(loss)} at global step {step} ({where}) after {done} rollback(s), the most max_rollbacks allows",
                self.skipped_steps,
                f"the update was not applied and the last checkpoint {manager.latest_checkpoint} is intact; lower the learning rate, "
                "enable --clip_global_norm or check the inputs, or resume with a larger --max_rollbacks"))
        listed, scale = self.skipped_steps, float(self.lr_scale.numpy())
        with self.strategy.scope():
            path = restore_latest(manager.checkpoint, manager)
        check(path is not None, "on_nonfinite=rollback found no checkpoint to roll back to", manager.directory,
              "pass the checkpoint_manager of training_checkpoint(trainer) to fit")
        # The checkpoint may predate earlier rollbacks: keep their skipped steps and learning-rate factors.
        self.skip_list.assign(listed + [step])
        rate = ""
        if self.lr_factor != 1.0:
            restored_scale, scale = float(self.lr_scale.numpy()), scale * self.lr_factor
            self.lr_scale.assign(scale)
            for holder in _rate_holders(self.optimizer):
                if not isinstance(_rate(holder), keras.optimizers.schedules.LearningRateSchedule):
                    holder.learning_rate = holder.learning_rate * (scale / restored_scale)
            rate = f"; learning rate x{scale:g} of the original from now on"
        logging.warning("Rollback %d of %d: %s at global step %d (%s); restored %s (global step %d), step %d will be skipped%s; "
                        "%d rollback(s) left", done + 1, self.max_rollbacks, self.cause(loss), step, where, path,
                        int(self.global_step.numpy()), step, rate, self.max_rollbacks - done - 1)
        return path
