"""Early stopping on a monitored validation metric, with patience and restore-best.

Its state (best value, epochs without improvement, best epoch) is kept in
``tf.Variable``s so that a checkpoint can carry it across a restart.

[`EarlyStoppingCallback`][tfcustom.callbacks.early_stopping.EarlyStoppingCallback] runs it in the Trainer's loop.

Examples:
    >>> es = EarlyStopping(monitor="val_loss", patience=3, restore_best=True)
    >>> es.update(0.52, epoch=1)   # True when training should stop
    False
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.callbacks.loop_callback import LoopCallback
from tfcustom.errors import check, check_one_of


def auto_mode(monitor: str) -> str:
    """``mode="auto"``'s choice for a monitored name.

    Args:
      monitor: a metric name, e.g. ``"val_loss"``.

    Returns:
      ``"min"`` for a loss, an error or ``ece``, else ``"max"`` (accuracy-like names, as Keras does).

    Examples:
        >>> auto_mode("val_loss"), auto_mode("val_accuracy")
        ('min', 'max')
    """
    return "min" if ("loss" in monitor or "error" in monitor or monitor.endswith("ece")) else "max"


class EarlyStopping(tf.Module):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Args:
      monitor: a key of the epoch logs, e.g. ``"val_loss"`` or ``"val_accuracy"``.
      patience: epochs without improvement before stopping (>= 0); None only
        tracks the best value (for a "best" checkpoint) and never stops.
      mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like names).
      min_delta: smallest change that counts as an improvement.
      restore_best: at the end of training, put back the weights of the best epoch.

    Its state (best value, epochs waited) is a ``tf.Module``'s variables, so the
    training checkpoint holds it and a resumed run stops at the same epoch.
    Pass it to [`Trainer.fit`][tfcustom.Trainer.fit] as ``early_stopping=``.

    Examples:
        >>> stop = EarlyStopping("val_accuracy", patience=2)
        >>> stop.mode
        'max'
        >>> [stop.update(v, epoch) for epoch, v in enumerate([0.80, 0.85, 0.84, 0.83], 1)]
        [False, False, False, True]
        >>> int(stop.best_epoch.numpy())
        2
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, mode: str = "auto", min_delta: float = 0.0, restore_best: bool = True):
        super().__init__(name="early_stopping")
        check(patience is None or (isinstance(patience, int) and patience >= 0), "patience must be an integer >= 0", patience, "pass patience=0 or more, or None to never stop")
        check_one_of("early-stopping mode", mode, ("auto", "min", "max"))
        check(min_delta >= 0, "min_delta must be >= 0", min_delta, "pass a non-negative min_delta")
        if mode == "auto":
            mode = auto_mode(monitor)
        self.monitor = monitor
        self.patience = patience
        self.mode = mode
        self.min_delta = float(min_delta)
        self.restore_best = restore_best
        worst = np.inf if mode == "min" else -np.inf
        self.best = tf.Variable(worst, dtype=tf.float64, trainable=False, name="best")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="wait")
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
        self.best_weights = None

    def improved(self, value: float) -> bool:
        best = float(self.best.numpy())
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def update(self, value: float, epoch: int, model=None) -> bool:
        """Record the epoch's value; return True if training should stop.

        Args:
          value: the epoch's ``monitor`` value (None or NaN count as the worst).
          epoch: the epoch number, recorded as ``best_epoch`` on an improvement.
          model: with ``restore_best``, its weights are kept on an improvement.

        Returns:
          True once ``patience`` epochs in a row did not improve.
        """
        if value is None or not np.isfinite(value):
            value = np.inf if self.mode == "min" else -np.inf
        if self.improved(value):
            self.best.assign(value)
            self.best_epoch.assign(epoch)
            self.wait.assign(0)
            if model is not None and self.restore_best:
                self.best_weights = [np.array(w) for w in model.get_weights()]
            return False
        self.wait.assign_add(1)
        if self.patience is None:
            return False
        return int(self.wait.numpy()) >= self.patience  # as keras.callbacks.EarlyStopping

    def restore(self, model) -> bool:
        """Put back the best weights, if kept; return whether it did."""
        if self.restore_best and self.best_weights is not None:
            model.set_weights(self.best_weights)
            return True
        return False


class EarlyStoppingCallback(LoopCallback):
    """Run an [`EarlyStopping`][tfcustom.callbacks.early_stopping.EarlyStopping] in the Trainer's loop.

    Built from ``fit(early_stopping=, best_checkpoint_manager=)``. At each
    epoch's end it feeds the monitored value to ``early_stopping`` (refusing
    in one line a name the epoch's record lacks), saves a new best to
    ``best_manager`` (else keeps the best weights in memory, with
    ``restore_best``) and ends training when patience runs out. After the last
    epoch it restores the best weights when ``restore_best`` asks for it.

    A subclass passed in ``fit(callbacks=[...])`` replaces it (give it the same ``early_stopping`` and managers).

    Args:
      early_stopping: the ``EarlyStopping`` state (in the training checkpoint), or None: nothing.
      best_manager: a ``tf.train.CheckpointManager`` of the model's "best" checkpoint, or None.
      save: ``save(manager, number)`` that writes ``best_manager``'s checkpoint
        (`tfcustom.training.checkpoint.save_checkpoint`).

    Examples:
        >>> EarlyStoppingCallback(None).early_stopping is None
        True
    """

    def __init__(self, early_stopping: Optional[EarlyStopping] = None, best_manager=None, save=None):
        self.early_stopping, self.best_manager, self.save = early_stopping, best_manager, save

    def on_epoch_end(self, epoch: int, record: Dict[str, float]) -> None:
        es = self.early_stopping
        if es is None:
            return
        check(es.monitor in record, "early stopping monitors a value the epoch logs do not have", es.monitor,
              f"monitor one of: {', '.join(k for k in record if k != 'epoch')}")
        stop = es.update(record[es.monitor], epoch + 1, self.run.trainer.model if self.best_manager is None else None)
        if self.best_manager is not None and int(es.best_epoch.numpy()) == epoch + 1:
            self.save(self.best_manager, epoch + 1)
            logging.debug("New best %s=%.4g: saved %s", es.monitor, record[es.monitor], self.best_manager.latest_checkpoint)
        if stop and self.run.stop is None:
            self.run.stop = (f"Early stopping after epoch {epoch + 1}: {es.monitor} did not improve for {es.patience} epochs "
                             f"(best {float(es.best.numpy()):.4g} at epoch {int(es.best_epoch.numpy())})")

    def on_fit_end(self) -> None:
        es, best = self.early_stopping, self.best_manager
        if es is None or not es.restore_best:
            return
        if best is not None and best.latest_checkpoint:
            best.checkpoint.restore(best.latest_checkpoint).assert_existing_objects_matched()
            logging.info("Restored the best weights (epoch %d, %s) from %s", int(es.best_epoch.numpy()), es.monitor, best.latest_checkpoint)
        elif es.restore(self.run.trainer.model):
            logging.info("Restored the weights of epoch %d (best %s)", int(es.best_epoch.numpy()), es.monitor)
