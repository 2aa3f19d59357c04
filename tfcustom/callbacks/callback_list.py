"""The Trainer's callback seam: Keras' ``CallbackList`` with the model the callbacks expect.

``keras.callbacks`` reach the training state through their ``model``:
``model.optimizer`` (learning-rate callbacks, TensorBoard's step counter),
``model.stop_training`` (EarlyStopping, TerminateOnNaN), ``model.save`` /
``save_weights`` / ``get_weights`` (ModelCheckpoint, restore_best_weights).
The Trainer's model is not compiled, so [`CallbackList.attached`][tfcustom.callbacks.callback_list.CallbackList.attached] gives
it those attributes for the length of a ``fit``/``evaluate``/``predict`` and
takes them away afterwards (a model saved later is as before).

The hooks run where ``keras.Model.fit`` runs them (keras/src/backend/
tensorflow/trainer.py): ``on_train_begin``; per epoch ``on_epoch_begin(epoch)``,
per compiled execution of ``steps_per_execution`` steps
``on_train_batch_begin(first_step)`` / ``on_train_batch_end(last_step, logs)``,
the validation as ``on_test_begin`` / ``on_test_end``, then
``on_epoch_end(epoch, logs)`` with ``loss``, the metrics, ``val_*`` and
``learning_rate``; ``on_train_end``. Logs are the Trainer's exact all-replica
values.

``keras.callbacks.BackupAndRestore`` is refused in one line: the Trainer's
training checkpoint (``checkpoint_manager=``) already resumes exactly, with the
callbacks' state (`tfcustom.callbacks.state`).

Examples:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> hooks = CallbackList([keras.callbacks.EarlyStopping(patience=1)], model=model,
    ...                      optimizer=keras.optimizers.SGD(0.1), epochs=3, steps=10)
    >>> with hooks.attached():
    ...     hooks.on_train_begin()
    ...     print(type(model.optimizer).__name__, hooks.stop_training)
    SGD False
    >>> hasattr(model, "optimizer")   # detached again
    False
"""

from __future__ import annotations

import contextlib
from typing import Dict, Sequence

import keras

from tfcustom.callbacks.weight_averaging import WeightAverage
from tfcustom.errors import check

# Keys of the Trainer's epoch records that are not metrics (Keras passes the epoch as an argument).
NOT_LOGGED = ("epoch", "time_s")


def epoch_logs_for_callbacks(record: Dict[str, float]) -> Dict[str, float]:
    """The logs ``on_epoch_end`` gets from a Trainer epoch record.

    Args:
      record: one record of [`tfcustom.History`][tfcustom.History] (``epoch``, ``loss``, metrics, ``val_*``,
        ``learning_rate``, ``time_s``).

    Returns:
      Every key but ``epoch`` and ``time_s`` (Keras passes the epoch as an argument).

    Examples:
        >>> epoch_logs_for_callbacks({"epoch": 1, "loss": 0.5, "time_s": 2.0})
        {'loss': 0.5}
    """
    return {k: v for k, v in record.items() if k not in NOT_LOGGED}


def check_callbacks(callbacks: Sequence) -> None:
    """Refuse, in one line, what is not a ``keras.callbacks.Callback`` and ``BackupAndRestore``.

    Args:
      callbacks: the callbacks given to ``fit``, ``evaluate`` or ``predict``.

    Raises:
      ConfigError: one line naming the offending callback's class and the fix.

    Examples:
        >>> check_callbacks([keras.callbacks.EarlyStopping()])   # accepted: nothing happens
        >>> check_callbacks([lambda epoch, logs: None])
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: callbacks must be keras.callbacks.Callback instances (received: 'function'). ...
    """
    for c in callbacks:
        check(isinstance(c, keras.callbacks.Callback), "callbacks must be keras.callbacks.Callback instances",
              type(c).__name__, "subclass keras.callbacks.Callback (or use keras.callbacks.LambdaCallback)")
        check(not isinstance(c, keras.callbacks.BackupAndRestore),
              "keras.callbacks.BackupAndRestore does not resume a Trainer (it would restore the weights, not the epoch, "
              "step or data order)", type(c).__name__,
              "drop it and pass checkpoint_manager=tf.train.CheckpointManager(tfcustom.training.checkpoint.training_checkpoint(trainer), ...) "
              "to fit: it resumes exactly, with the callbacks' state")


def resolve_monitor_modes(callbacks: Sequence, metrics: Sequence) -> None:
    """``mode="auto"`` of a monitoring callback from the Trainer's metrics, as Keras resolves it from
    the compiled metrics (whose ``_direction`` says up or down); the Trainer's model has none compiled."""
    directions = {m.name: getattr(m, "_direction", None) for m in metrics}
    for c in callbacks:
        monitors = isinstance(getattr(c, "monitor", None), str) and getattr(c, "mode", None) == "auto"
        if monitors and getattr(c, "monitor_op", None) is None:  # Keras' MonitorCallback (EarlyStopping, ModelCheckpoint)
            name = c.monitor.removeprefix("val_")
            if name != "loss" and directions.get(name) in ("up", "down"):
                c.mode = "max" if directions[name] == "up" else "min"


class CallbackList(keras.callbacks.CallbackList):
    """``keras.callbacks.CallbackList`` for a Trainer run.

    The Trainer builds one per ``fit``/``evaluate``/``predict``; use it
    directly in a loop of your own to call Keras callbacks as ``fit`` does.

    Args:
      callbacks: ``keras.callbacks.Callback`` instances (or None).
      model: the Trainer's model (given to ``set_model``).
      optimizer: the Trainer's optimizer, shown as ``model.optimizer`` while attached.
      metrics: the Trainer's metric objects (resolve ``mode="auto"`` of monitors).
      **params: given to ``set_params`` (``epochs``, ``steps``, ``verbose``), as ``fit`` does.

    Examples:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> seen = []
        >>> log = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append((epoch, logs)))
        >>> callbacks = CallbackList([log], model=model, optimizer=keras.optimizers.SGD(0.1), epochs=1)
        >>> with callbacks.attached():   # model.optimizer and model.stop_training while the loop runs
        ...     callbacks.on_epoch_end(0, {"loss": 0.5})
        >>> seen, callbacks.stop_training, callbacks.params["epochs"]
        ([(0, {'loss': 0.5})], False, 1)
    """

    def __init__(self, callbacks=None, *, model, optimizer, metrics: Sequence = (), **params):
        callbacks = list(callbacks or [])
        check_callbacks(callbacks)
        resolve_monitor_modes(callbacks, metrics)
        self.optimizer = optimizer
        super().__init__(callbacks, add_history=False, add_progbar=False, model=model, **params)

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    @contextlib.contextmanager
    def attached(self):
        """``model.optimizer`` and ``model.stop_training`` (False at the start) while the block runs."""
        model = self.model
        added = [name for name in ("optimizer", "stop_training") if name not in model.__dict__]
        if "optimizer" in added:
            object.__setattr__(model, "optimizer", self.optimizer)  # untracked: the model's own state is unchanged
        object.__setattr__(model, "stop_training", False)
        try:
            yield self
        finally:
            for name in added:
                object.__delattr__(model, name)

    @property
    def stop_training(self) -> bool:
        """Whether a callback asked to stop (``model.stop_training``)."""
        return bool(getattr(self.model, "stop_training", False))


def with_averages(callbacks, averages) -> list:
    """``fit``'s callbacks, then the Trainer's weight averages (refused among ``callbacks``: they are built by the Trainer).

    Args:
      callbacks: the Keras callbacks passed to ``fit``.
      averages: the Trainer's ``weight_averaging`` list.

    Returns:
      ``callbacks + averages``.

    Examples:
        >>> import keras
        >>> stop = keras.callbacks.EarlyStopping()
        >>> with_averages([stop], []) == [stop]
        True
    """
    callbacks = list(callbacks or [])
    check(not any(isinstance(c, WeightAverage) for c in callbacks), "a weight average was passed to fit's callbacks",
          ", ".join(type(c).__name__ for c in callbacks if isinstance(c, WeightAverage)),
          "pass it to tfcustom.Trainer(weight_averaging=[...]) instead: it is then updated in the compiled step "
          "and saved in the training checkpoint")
    return callbacks + list(averages or [])
