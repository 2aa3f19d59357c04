"""Checkpoints that hold everything the next step depends on, and restoring them.

One ``tf.train.Checkpoint`` (built by [`training_checkpoint`][tfcustom.training.checkpoint.training_checkpoint]) holds the
model (weights, BatchNorm statistics, dropout RNG states), the optimizer (slots
and iteration count), the loop position (global step, epoch, step within the
epoch — with the seeded per-epoch data order this is the position in the data),
the running train metrics of the current epoch, the early-stopping state, the
state of ``fit``'s callbacks (`tfcustom.callbacks.state`), the weight
averages (`tfcustom.callbacks.weight_averaging`) and, with ``on_nonfinite="rollback"``,
the skip list and learning-rate scale (`tfcustom.training.rollback`).
Restoring it and starting the same loop again continues bit for bit.

``tf.train.CheckpointManager`` writes the index file (``checkpoint``) only after
a checkpoint's data files are complete, so a save killed halfway is never the
one listed; [`restore_latest`][tfcustom.training.checkpoint.restore_latest] also falls back to older checkpoints when the
newest cannot be read, and says so.

Examples:
    >>> ckpt = training_checkpoint(trainer, early_stopping)
    >>> manager = tf.train.CheckpointManager(ckpt, "runs/x/checkpoints", max_to_keep=3)
    >>> restore_latest(ckpt, manager)        # None on a fresh start
    >>> trainer.fit(train, epochs=10, checkpoint_manager=manager, checkpoint_every_steps=500)
"""

from __future__ import annotations

import base64
import glob
import io
import os
import re
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.errors import TfcustomError, check, format_error
from tfcustom.disk_errors import writing

INDEX_FILE = "checkpoint"  # tf.train.CheckpointManager's index of a checkpoint directory


class CheckpointError(TfcustomError, RuntimeError):
    """No checkpoint could be restored, or one does not fit the model.

    Examples:
        >>> import tempfile, keras
        >>> small = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> manager = tf.train.CheckpointManager(model_checkpoint(small), tempfile.mkdtemp(), max_to_keep=1)
        >>> _ = manager.save()
        >>> big = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> restore_latest(model_checkpoint(big), manager)
        Traceback (most recent call last):
        ...
        tfcustom.training.checkpoint.CheckpointError: checkpoint ...ckpt-1 does not fit this model ...
    """


def _tf_variables(keras_variables):
    return [v.value if hasattr(v, "value") and not isinstance(v, tf.Variable) else v for v in keras_variables]


def model_variables(model) -> list:
    """Every variable of ``model`` (weights, BatchNorm statistics, RNG states),
    in ``model.variables`` order.

    Keras 3 models that keep layers in Python lists are not fully tracked by
    ``tf.train.Checkpoint(model=model)``; this explicit list is. It is keyed by
    position, not by name, because Keras' automatic names (``dense_1``,
    ``seed_generator_2``) depend on what else the process has built.

    Args:
      model: a built ``keras.Model``.

    Returns:
      Its variables as ``tf.Variable`` objects, trainable or not.

    Examples:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
        >>> [tuple(v.shape) for v in model_variables(model)]  # kernel, bias; gamma, beta, moving mean and variance
        [(3, 2), (2,), (2,), (2,), (2,), (2,)]
        >>> all(isinstance(v, tf.Variable) for v in model_variables(model))
        True
    """
    return _tf_variables(model.variables)


class ReplicaState(tf.train.experimental.PythonState):
    """Each replica's own copy of state that differs between replicas, in a checkpoint.

    Under a multi-replica strategy two kinds of state are per replica:

    * ``"metrics"``: the running train metrics. TF saves the sum over the
      replicas and restores it split evenly, which changes later float
      rounding; their copies are kept at every save.
    * ``"model"``: BatchNormalization's moving statistics, updated by each
      replica from its own batches. The Trainer averages them at scheduled
      points (each epoch end and each periodic checkpoint) and the checkpoint
      stores the average as the model; a save at any other step (SIGTERM, a
      cluster preemption) keeps every replica's copy too.

    ``values`` maps a group name to one array per variable, shape
    ``[replicas, *variable.shape]``; a resumed run with the same number of
    replicas gives each replica back its own copy.

    Examples:
        >>> state = ReplicaState()
        >>> state.values = {"metrics": [np.array([[1.0], [2.0]])]}  # one variable, 2 replicas
        >>> restored = ReplicaState()
        >>> restored.deserialize(state.serialize())
        >>> restored.values["metrics"][0].tolist()
        [[1.0], [2.0]]
    """

    def __init__(self):
        self.values: Dict[str, List[np.ndarray]] = {}

    def serialize(self) -> str:
        if not self.values:
            return ""
        arrays = {f"{group}_{i}": a for group, copies in self.values.items() for i, a in enumerate(copies)}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def deserialize(self, string) -> None:
        string = string.decode("ascii") if isinstance(string, bytes) else string
        self.values = {}
        if not string:
            return
        with np.load(io.BytesIO(base64.b64decode(string))) as f:
            for key in sorted(f.files, key=lambda k: (k.rsplit("_", 1)[0], int(k.rsplit("_", 1)[1]))):
                self.values.setdefault(key.rsplit("_", 1)[0], []).append(f[key])


def training_checkpoint(trainer, early_stopping=None) -> tf.train.Checkpoint:
    """The checkpoint of a [`tfcustom.Trainer`][tfcustom.Trainer]'s full training state.

    Model and optimizer variables, global step, epoch and step in the epoch,
    the running train metrics, per-replica state, callback state, weight
    averages, rollback state and (given) early stopping.

    Args:
      trainer: the [`Trainer`][tfcustom.Trainer].
      early_stopping: an [`EarlyStopping`][tfcustom.EarlyStopping] to save too.

    Returns:
      A ``tf.train.Checkpoint``, for a ``tf.train.CheckpointManager``.

    Examples:
        >>> import tempfile, keras, tfcustom
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> trainer = tfcustom.Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...                            "sgd", verbose=0)
        >>> ckpt = training_checkpoint(trainer)
        >>> manager = tf.train.CheckpointManager(ckpt, tempfile.mkdtemp(), max_to_keep=1)
        >>> _ = trainer.fit((np.ones((4, 2), "float32"), np.zeros(4, "int64")), epochs=1, batch_size=2,
        ...                 checkpoint_manager=manager)
        >>> model2 = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])  # a resumed run
        >>> trainer2 = tfcustom.Trainer(model2, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...                             "sgd", verbose=0)
        >>> restore_latest(training_checkpoint(trainer2), manager) is not None, int(trainer2.global_step)
        (True, 2)
        >>> all(np.array_equal(u, v) for u, v in zip(model.get_weights(), model2.get_weights()))
        True
    """
    metric_vars = []
    for m in trainer.train_metrics:
        check(getattr(m, "num_classes", 0) is not None, "a metric has no state yet to checkpoint (its num_classes is not known)",
              m.name, "pass num_classes= to the metric or to tfcustom.Trainer(num_classes=...)")
    for m in [trainer.train_loss, *trainer.train_metrics]:
        metric_vars.extend(_tf_variables(m.variables))
    items = dict(
        model_variables=model_variables(trainer.model),
        optimizer=trainer.optimizer,
        global_step=trainer.global_step,
        epoch=trainer.epoch,
        step_in_epoch=trainer.step_in_epoch,
        train_metrics=metric_vars,
        replica_state=trainer.replica_state,
    )
    if getattr(trainer, "callback_state", None) is not None:
        items["callbacks"] = trainer.callback_state  # the state of fit's callbacks (tfcustom.callbacks.state)
    if early_stopping is not None:
        items["early_stopping"] = early_stopping
    averages = [a.variables for a in getattr(trainer, "weight_averaging", [])]
    if averages:
        items["weight_averaging"] = averages  # EMA / SWA: each one's count and averages (tfcustom.callbacks.weight_averaging)
    if getattr(trainer, "rollback", None) is not None:
        items["rollback"] = trainer.rollback.variables  # the skip list, learning-rate scale, loss-spike mean (tfcustom.training.rollback)
    return tf.train.Checkpoint(**items)


def model_checkpoint(model) -> tf.train.Checkpoint:
    """A checkpoint of the model alone (the "best" checkpoint, evaluation).

    Restores from a [`training_checkpoint`][tfcustom.training.checkpoint.training_checkpoint] too (use ``.expect_partial()``).

    Args:
      model: a built ``keras.Model``.

    Returns:
      A ``tf.train.Checkpoint`` of [`model_variables`][tfcustom.training.checkpoint.model_variables].

    Examples:
        >>> import os, tempfile, keras
        >>> a, b = (keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]) for _ in range(2))
        >>> path = model_checkpoint(a).save(os.path.join(tempfile.mkdtemp(), "best"))
        >>> _ = model_checkpoint(b).restore(path)
        >>> all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
        True
    """
    return tf.train.Checkpoint(model_variables=model_variables(model))


def saved_checkpoints(directory: str) -> List[str]:
    """The ``ckpt-N`` prefixes whose ``.index`` file is in ``directory``, oldest first.

    Args:
      directory: a checkpoint directory (``<run>/checkpoints``).

    Returns:
      The names, e.g. ``["ckpt-8", "ckpt-12"]``, sorted by number, whether the
      index lists them or not.

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> for n in (12, 8):
        ...     _ = open(os.path.join(d, f"ckpt-{n}.index"), "w")
        >>> saved_checkpoints(d)
        ['ckpt-8', 'ckpt-12']
    """
    found = [os.path.basename(p)[: -len(".index")] for p in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index"))]
    return sorted((n for n in found if re.fullmatch(r"ckpt-\d+", n)), key=lambda n: int(n.split("-")[1]))


def listed_checkpoints(directory: str) -> List[str]:
    """The ``ckpt-N`` names the index (``checkpoint``) of ``directory`` lists, oldest first.

    ``tf.train.CheckpointManager`` writes the index (atomically) only after a
    checkpoint's files are complete, so these are the complete checkpoints; a
    save killed halfway is in [`saved_checkpoints`][tfcustom.training.checkpoint.saved_checkpoints] at most.

    Args:
      directory: a checkpoint directory (``<run>/checkpoints``).

    Returns:
      The names, e.g. ``["ckpt-8", "ckpt-12"]``; ``[]`` without an index.

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> listed_checkpoints(d)
        []
        >>> _ = open(os.path.join(d, "checkpoint"), "w").write(
        ...     'model_checkpoint_path: "ckpt-12" all_model_checkpoint_paths: "ckpt-8" all_model_checkpoint_paths: "ckpt-12"')
        >>> listed_checkpoints(d)
        ['ckpt-8', 'ckpt-12']
    """
    if not os.path.isfile(os.path.join(directory, INDEX_FILE)):
        return []
    state = tf.train.get_checkpoint_state(directory)
    names = {os.path.basename(p) for p in (state.all_model_checkpoint_paths if state is not None else [])}
    return sorted((n for n in names if re.fullmatch(r"ckpt-\d+", n)), key=lambda n: int(n.split("-")[1]))


def check_index(directory: str) -> None:
    """Refuse a checkpoint directory whose index (``checkpoint``) is damaged.

    ``tf.train.CheckpointManager`` ignores an index it cannot parse (a
    warning) and so would start the run over, writing new ``ckpt-N`` over the
    old ones; an index missing beside two or more checkpoints is the same. Raises
    [`CheckpointError`][tfcustom.training.checkpoint.CheckpointError] (one line: the file, the newest checkpoint found
    and the fix).

    Args:
      directory: a checkpoint directory (``<run>/checkpoints``); a missing or
        empty one passes (a fresh run).

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> check_index(d)  # nothing yet: fine
        >>> _ = open(os.path.join(d, "checkpoint"), "w").write('model_checkpoint_path: "ckpt-')
        >>> check_index(d)
        Traceback (most recent call last):
        ...
        tfcustom.training.checkpoint.CheckpointError: the checkpoint index checkpoint is damaged (not a checkpoint index: ...
    """
    index = os.path.join(directory, INDEX_FILE)
    found = saved_checkpoints(directory) if os.path.isdir(directory) else []
    if os.path.exists(index):
        try:
            state = tf.train.get_checkpoint_state(directory)
        except Exception:  # noqa: BLE001 -- unreadable (a directory, no permission): damaged for this purpose
            state = None
        if state is not None and state.model_checkpoint_path:
            return
        what = "is damaged (not a checkpoint index: truncated or edited?)"
    elif len(found) >= 2:
        what = f"is missing beside {len(found)} checkpoints"
    else:
        return
    fix = (f'write the line model_checkpoint_path: "{found[-1]}" into it to resume from the newest checkpoint {found[-1]}, '
           "or pass --overwrite to start over") if found else "delete it, or pass --overwrite to start over"
    raise CheckpointError(format_error(f"the checkpoint index {INDEX_FILE} {what}", index, fix))


def save_checkpoint(manager: tf.train.CheckpointManager, number: int) -> str:
    """``manager.save(checkpoint_number=number)``; return the path.

    A full disk or an I/O error is one ``tfcustom.disk_errors.DiskError``
    naming ``ckpt-<number>``, after removing what the failed save left: TF's
    ``ckpt-<number>_temp/`` directory, and the checkpoint's files unless the
    index lists them (an index write that failed keeps the old index, which
    does not). The checkpoints listed in the index are never touched.

    Args:
      manager: the run's ``tf.train.CheckpointManager``.
      number: the checkpoint's number (tfcustom uses the global step).

    Returns:
      The path prefix of the new checkpoint, e.g. ``".../ckpt-40"``.

    Examples:
        >>> import tempfile
        >>> manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), tempfile.mkdtemp(), max_to_keep=2)
        >>> os.path.basename(save_checkpoint(manager, 40))
        'ckpt-40'
    """
    directory, name = manager.directory, f"ckpt-{number}"

    def temporaries():
        here = glob.escape(directory)
        paths = [os.path.join(here, f"{name}_temp*"), os.path.join(here, f"{INDEX_FILE}.tmp*")]
        if name not in {os.path.basename(p) for p in manager.checkpoints}:
            paths.append(os.path.join(here, f"{name}.*"))
        return paths

    with writing(f"checkpoint {name}", directory, cleanup=temporaries):
        return manager.save(checkpoint_number=number)


def restore_latest(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager) -> Optional[str]:
    """Restore the newest readable checkpoint of ``manager``; return its path.

    Returns None when there is none. A checkpoint that cannot be read (corrupt,
    truncated) is skipped with a warning and the next older one is tried; if
    checkpoints exist but none can be restored, raises [`CheckpointError`][tfcustom.training.checkpoint.CheckpointError].
    A checkpoint of a different model raises [`CheckpointError`][tfcustom.training.checkpoint.CheckpointError] naming
    the mismatch, and a damaged index file (see [`check_index`][tfcustom.training.checkpoint.check_index]) too.

    Args:
      checkpoint: e.g. [`training_checkpoint`][tfcustom.training.checkpoint.training_checkpoint]'s.
      manager: the ``tf.train.CheckpointManager`` over the run's directory.

    Returns:
      The restored checkpoint's path, or None when there is none.

    Examples:
        >>> import tempfile
        >>> step = tf.Variable(0)
        >>> manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step), tempfile.mkdtemp(), max_to_keep=2)
        >>> print(restore_latest(tf.train.Checkpoint(step=step), manager))
        None
        >>> _ = step.assign(7), manager.save(), step.assign(0)
        >>> restore_latest(tf.train.Checkpoint(step=step), manager).endswith("ckpt-1"), int(step)
        (True, 7)
    """
    check_index(manager.directory)
    paths = list(reversed(manager.checkpoints))
    if not paths:
        return None
    errors = []
    for path in paths:
        try:
            status = checkpoint.restore(path)
            status.assert_existing_objects_matched()
        except Exception as e:  # corrupt files surface as OpError, IndexError, DataLossError, ...
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            if isinstance(e, (AssertionError, ValueError)) and ("shape" in message.lower() or "match" in message.lower()):
                raise CheckpointError(
                    f"checkpoint {path} does not fit this model ({message[:300]}) (received: {path!r}). "
                    "It was written by a different model or config: pass --overwrite to start over, or use the matching --model"
                ) from None
            logging.warning("Checkpoint %s cannot be restored (%s); trying an older one", path, message[:200])
            errors.append((path, message))
            continue
        if errors:
            logging.warning("Restored %s after skipping %d unreadable newer checkpoint(s)", path, len(errors))
        return path
    raise CheckpointError(
        f"none of the {len(paths)} checkpoint(s) in {os.path.dirname(paths[0])} can be restored "
        f"(newest: {errors[0][1][:200]}) (received: {paths[0]!r}). Delete the directory or pass --overwrite to start over"
    )
