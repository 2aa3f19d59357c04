"""The callbacks' state in the training checkpoint: a resumed run continues where the killed one was.

``keras.callbacks`` keep their state in Python attributes that ``on_train_begin``
resets (``EarlyStopping``'s ``wait``/``best``/``best_epoch``/``best_weights``,
``ReduceLROnPlateau``'s ``wait``/``cooldown_counter``/``best``,
``ModelCheckpoint``'s ``best``), and ``keras.callbacks.BackupAndRestore`` does
not save them. [`CallbackState`][tfcustom.callbacks.state.CallbackState] is a ``PythonState`` of the training
checkpoint ([`tfcustom.training.checkpoint.training_checkpoint`][tfcustom.training.checkpoint.training_checkpoint]): at each save it
records, per callback (keyed by position and class name):

* a user callback's ``get_state()`` (a JSON-able dict), given back with ``set_state(state)``;
* the attributes above for Keras' callbacks;
* the value of every ``tf.Variable`` / ``keras.Variable`` attribute.

The learning rate a callback set lives in the optimizer, which the checkpoint
already holds. After a restore the state waits until the next ``fit`` has run
``on_train_begin`` and is then given back ([`CallbackState.attach`][tfcustom.callbacks.state.CallbackState.attach]).
Callbacks with state it cannot save (e.g. ``CSVLogger``'s open file,
``TensorBoard``'s writers) are named in one warning line at the first save.

Examples:
    >>> import json, keras
    >>> early = keras.callbacks.EarlyStopping(patience=2)
    >>> early.wait = 1                      # as after an epoch without improvement
    >>> state = CallbackState()
    >>> state.attach([early])
    >>> saved = state.serialize()           # what the checkpoint holds
    >>> json.loads(saved)["0:EarlyStopping"]["wait"]
    1
    >>> restored, fresh = CallbackState(), keras.callbacks.EarlyStopping(patience=2)
    >>> restored.deserialize(saved)         # the checkpoint's restore
    >>> restored.attach([fresh])            # the next fit, after on_train_begin
    >>> fresh.wait
    1
"""

from __future__ import annotations

import base64
import io
import json
from typing import Dict, List, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

# Attributes of Keras' stateful callbacks that decide what they do next.
KERAS_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch", "best_weights"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
    keras.callbacks.ModelCheckpoint: ("best",),
}
# Callbacks without state that changes what they do after a restart.
STATELESS = (keras.callbacks.LambdaCallback, keras.callbacks.LearningRateScheduler, keras.callbacks.TerminateOnNaN,
             keras.callbacks.History, keras.callbacks.ProgbarLogger)


def _encode(value):
    """A JSON-able form of an attribute value (arrays and weight lists as base64 .npz)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(hasattr(v, "shape") for v in value):
        buffer = io.BytesIO()
        np.savez(buffer, *[np.asarray(v) for v in value])
        return {"npz": base64.b64encode(buffer.getvalue()).decode("ascii")}
    return float(np.asarray(value)) if np.asarray(value).ndim == 0 else np.asarray(value).tolist()


def _decode(value):
    if isinstance(value, dict) and set(value) == {"npz"}:
        with np.load(io.BytesIO(base64.b64decode(value["npz"]))) as f:
            return [f[f"arr_{i}"] for i in range(len(f.files))]
    return value


def _variables(callback) -> Dict[str, object]:
    return {k: v for k, v in vars(callback).items() if isinstance(v, (tf.Variable, keras.Variable))}


def _keras_attributes(callback):
    for cls, names in KERAS_STATE.items():
        if isinstance(callback, cls):
            return names
    return None


def state_of(callback):
    """The saved form of one callback's state.

    Args:
      callback: a ``keras.callbacks.Callback``.

    Returns:
      A JSON-able dict (``get_state()``, the Keras attributes, the variables' values), or None
      when it has no state this module can save.
    """
    if hasattr(callback, "get_state") and hasattr(callback, "set_state"):
        return {"get_state": callback.get_state()}
    state = {}
    names = _keras_attributes(callback)
    if names:
        state.update({n: _encode(getattr(callback, n, None)) for n in names})
    state.update({f"variable:{k}": np.asarray(v.numpy()).tolist() for k, v in _variables(callback).items()})
    return state or None


def set_state_of(callback, state) -> None:
    """Give ``callback`` back the state `state_of` recorded.

    Args:
      callback: a callback of the same class and position as the one saved.
      state: what `state_of` returned for it.
    """
    if "get_state" in state:
        callback.set_state(state["get_state"])
        return
    variables = _variables(callback)
    for key, value in state.items():
        if key.startswith("variable:"):
            variables[key[len("variable:"):]].assign(value)
        else:
            setattr(callback, key, _decode(value))


def unsaved(callbacks: Sequence) -> List[str]:
    """Class names of the callbacks whose state is not saved.

    Args:
      callbacks: the callbacks of a ``fit``.

    Returns:
      Those neither known to be stateless, nor Keras callbacks this module knows, nor with
      ``get_state``/``set_state`` or ``tf.Variable`` attributes.
    """
    return [type(c).__name__ for c in callbacks
            if not isinstance(c, STATELESS) and not hasattr(c, "get_state") and _keras_attributes(c) is None and not _variables(c)]


class CallbackState(tf.train.experimental.PythonState):
    """The state of the callbacks of the current ``fit``, saved and restored with the training checkpoint.

    ``Trainer.callback_state`` is one; [`tfcustom.training.checkpoint.training_checkpoint`][tfcustom.training.checkpoint.training_checkpoint]
    tracks it as ``callbacks``. Callbacks are matched by position and class name,
    so pass the same callbacks in the same order when resuming.

    Examples:
        >>> plateau = keras.callbacks.ReduceLROnPlateau(patience=3)
        >>> plateau.wait = 2                    # two epochs without improvement so far
        >>> state = CallbackState()
        >>> state.attach([plateau])
        >>> saved = state.serialize()           # what the checkpoint holds
        >>> restored, fresh = CallbackState(), keras.callbacks.ReduceLROnPlateau(patience=3)
        >>> restored.deserialize(saved)         # at the restore: kept until the next fit attaches
        >>> restored.attach([fresh])
        >>> fresh.wait
        2
    """

    def __init__(self):
        self.callbacks: List = []
        self.pending: Dict[str, object] = {}  # restored, not yet given to a callback
        self._warned = False

    @staticmethod
    def _key(i: int, callback) -> str:
        return f"{i}:{type(callback).__name__}"

    def attach(self, callbacks: Sequence) -> None:
        """Use ``callbacks`` from now on; give them any restored state (call after ``on_train_begin``).

        Args:
          callbacks: the callbacks of this ``fit``.
        """
        self.callbacks = list(callbacks)
        self._warned = False
        for i, c in enumerate(self.callbacks):
            state = self.pending.pop(self._key(i, c), None)
            if state is not None:
                set_state_of(c, state)
                logging.info("Restored the state of callback %s from the checkpoint", self._key(i, c))

    def _warn_unsaved(self) -> None:
        names = unsaved(self.callbacks)
        if names and not self._warned:
            logging.warning("Callback state not saved in the checkpoint (a resumed run starts it afresh): %s; "
                            "define get_state()/set_state() on a callback to save its state", ", ".join(names))
        self._warned = True

    def serialize(self) -> str:
        """The callbacks' state as JSON (called by the checkpoint at each save); names unsaved state once."""
        self._warn_unsaved()  # once per fit, at its first checkpoint
        states = dict(self.pending)  # restored for callbacks this run has not passed (yet): kept
        states.update({self._key(i, c): state_of(c) for i, c in enumerate(self.callbacks)})
        return json.dumps({k: v for k, v in states.items() if v is not None})

    def deserialize(self, string) -> None:
        """Keep the saved state until [`attach`][tfcustom.callbacks.state.CallbackState.attach] gives it to the next ``fit``'s callbacks."""
        string = string.decode("utf-8") if isinstance(string, bytes) else string
        self.pending = json.loads(string) if string else {}
