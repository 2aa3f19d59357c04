"""Use a run directory without training: find its checkpoints, rebuild its
model (final ``model.keras``, or the latest / best checkpoint) and evaluate
it on a split. Re-exported by [`tfcustom.experiment.export`][tfcustom.experiment.export].
"""

from __future__ import annotations

import os
import re
from typing import Dict, Optional

import keras
import tensorflow as tf

from tfcustom import data as data_lib
from tfcustom.errors import check, check_one_of, config_error, data_error
from tfcustom.training import steps as steps_lib
from tfcustom.training.checkpoint import listed_checkpoints, model_checkpoint
from tfcustom.training.compile_args import metric_from_spec
from tfcustom.training.metric_state import scalar_results  # a metric's result as scalars (vector results per element)
from tfcustom.run_json import read_json
from tfcustom.experiment.builders import build_loss, model_from_config
from tfcustom.experiment.config import TrainConfig
from tfcustom.experiment.run_files import BEST_SUBDIR, CHECKPOINT_CHOICES, CHECKPOINT_DIR, CONFIG_FILE, KERAS_FILE, RESULTS_FILE, SPLITS


def read_run_config(run_dir: str) -> TrainConfig:
    """The ``config.json`` of a run directory (one clear error if there is none)."""
    check(os.path.isdir(run_dir), "run directory does not exist", run_dir, "pass the --output_dir of a training run")
    path = os.path.join(run_dir, CONFIG_FILE)
    check(os.path.isfile(path), "run directory has no config.json (not a tfcustom run)", run_dir,
          "pass the --output_dir of a training run")
    return TrainConfig.read(path)


def _check_which(which: str, choices=CHECKPOINT_CHOICES) -> None:
    """``which`` is one of ``choices`` or a checkpoint name ``ckpt-N``."""
    if not (isinstance(which, str) and re.fullmatch(r"ckpt-\d+", which)):
        check_one_of("checkpoint", which, (*choices, "ckpt-N"))


def find_checkpoint(run_dir: str, which: str) -> str:
    """The checkpoint path of ``which`` (``latest``, ``best`` or ``ckpt-N``) in ``run_dir``.

    ``latest`` is the newest checkpoint of ``<run_dir>/checkpoints``
    (``tf.train.latest_checkpoint``), ``best`` the newest of
    ``<run_dir>/checkpoints/best``, ``ckpt-N`` the checkpoint of that name
    in ``<run_dir>/checkpoints`` if its index lists it (it is complete).

    Args:
      run_dir: a training run's output directory.
      which: ``"latest"``, ``"best"`` or ``"ckpt-N"``.

    Returns:
      The checkpoint's path prefix (e.g. ``<run_dir>/checkpoints/ckpt-12``).

    Examples:
        >>> import tempfile
        >>> from tfcustom.training.checkpoint import model_checkpoint
        >>> run = tempfile.mkdtemp()
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> manager = tf.train.CheckpointManager(model_checkpoint(model), os.path.join(run, "checkpoints"), max_to_keep=3)
        >>> _ = manager.save(), manager.save()
        >>> os.path.basename(find_checkpoint(run, "latest")), os.path.basename(find_checkpoint(run, "ckpt-1"))
        ('ckpt-2', 'ckpt-1')
        >>> find_checkpoint(run, "best")
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: run has no best checkpoint ...
    """
    _check_which(which, ("latest", "best"))
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    if which.startswith("ckpt-"):
        listed = listed_checkpoints(directory)
        check(which in listed, "the run's checkpoint index does not list this checkpoint (never written, incomplete or deleted)",
              which, f"pass one of {listed}" if listed else "train with checkpoints enabled")
        return os.path.join(directory, which)
    if which == "best":
        directory = os.path.join(directory, BEST_SUBDIR)
    path = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    check(path is not None, f"run has no {which} checkpoint", directory,
          "train with checkpoints enabled, or pass --checkpoint=final to use the run's model.keras")
    return path


def _untracked_weights(model: keras.Model, checkpoint: tf.train.Checkpoint):
    tracked = {id(t) for t in tf.train.TrackableView(checkpoint).descendants()}
    # A Keras variable counts as tracked when it, or the tf.Variable it wraps, is.
    return [w.path for w in model.weights
            if not any(id(v) in tracked for v in (w, getattr(w, "_value", None)) if v is not None)]


def restore_checkpoint(model: keras.Model, path: str) -> None:
    """Restore ``model`` (built) from a training or model checkpoint at ``path``
    (``tfcustom.training.checkpoint.model_checkpoint(model).restore(path).expect_partial()``).

    Everything else in the checkpoint (optimizer, step counters, ...) is
    ignored. Raises [`ConfigError`][tfcustom.ConfigError] if the checkpoint does not hold this
    model, or if some of the model's weights are invisible to
    ``tf.train.Checkpoint`` (they would silently keep their initial values).

    Args:
      model: the built model to restore into.
      path: a checkpoint path prefix (e.g. from [`find_checkpoint`][tfcustom.experiment.run_dir.find_checkpoint]).

    Examples:
        >>> import tempfile
        >>> from tfcustom.training.checkpoint import model_checkpoint
        >>> trained, fresh = (keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]) for _ in range(2))
        >>> path = model_checkpoint(trained).save(os.path.join(tempfile.mkdtemp(), "ckpt"))
        >>> restore_checkpoint(fresh, path)
        >>> bool((fresh.layers[0].kernel.numpy() == trained.layers[0].kernel.numpy()).all())
        True
        >>> restore_checkpoint(keras.Sequential([keras.Input((2,)), keras.layers.Dense(5)]), path)
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: checkpoint does not hold this run's model ...
    """
    checkpoint = model_checkpoint(model)  # the run's own layout: the model plus an explicit map of its variables
    untracked = _untracked_weights(model, checkpoint)
    check(not untracked, f"{len(untracked)} weight(s) of the model are not tracked by tf.train.Checkpoint, so a checkpoint cannot restore them",
          untracked[:3], "restore from the run's model.keras (--checkpoint=final), or make the model track these layers")
    try:
        status = checkpoint.restore(path).expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise config_error(f"checkpoint does not hold this run's model ({str(e).splitlines()[0][:200]})", path,
                           "pass the checkpoint of this run, or a run directory whose config.json matches it") from None
    except (tf.errors.OpError, OSError) as e:
        raise config_error(f"checkpoint cannot be read ({type(e).__name__})", path, "the file is corrupt or truncated; use another checkpoint") from None


def load_run_model(run_dir: str, which: str = "final", *, num_classes: Optional[int] = None, input_shape=None) -> keras.Model:
    """The model of a run directory.

    ``which="final"``: ``<run_dir>/model.keras`` (``safe_mode=True``).
    ``which="latest"`` / ``"best"`` / ``"ckpt-N"``: the model rebuilt from
    ``<run_dir>/config.json`` and restored from the newest checkpoint of
    ``<run_dir>/checkpoints`` / ``<run_dir>/checkpoints/best`` / that checkpoint (see
    [`find_checkpoint`][tfcustom.experiment.run_dir.find_checkpoint]). ``num_classes`` and ``input_shape`` (per
    example) build it; by default from the run's results.json (class count)
    and (28, 28, 1).

    Args:
      run_dir: a training run's output directory (has ``config.json``).
      which: ``"final"``, ``"latest"``, ``"best"`` or ``"ckpt-N"``.
      num_classes: the classes of a model rebuilt for a checkpoint (default: from results.json, else 10).
      input_shape: its per-example input shape (default: (28, 28, 1)).

    Returns:
      The ``keras.Model``.

    Examples:
        >>> import tempfile
        >>> from tfcustom import TrainConfig
        >>> from tfcustom.training.checkpoint import model_checkpoint
        >>> run, config = tempfile.mkdtemp(), TrainConfig(model="logistic_regression")
        >>> _ = open(os.path.join(run, "config.json"), "w").write(config.to_json())
        >>> trained = build_run_model(config, 10)
        >>> trained.save(os.path.join(run, "model.keras"))
        >>> _ = model_checkpoint(trained).save(os.path.join(run, "checkpoints", "ckpt"))
        >>> for which in ("final", "latest"):
        ...     model = load_run_model(run, which)
        ...     print(which, all(bool((a.numpy() == b.numpy()).all()) for a, b in zip(model.weights, trained.weights)))
        final True
        latest True
    """
    _check_which(which)
    config = read_run_config(run_dir)
    if which == "final":
        path = os.path.join(run_dir, KERAS_FILE)
        check(os.path.isfile(path), "run directory has no model.keras (training did not finish)", run_dir,
              "pass --checkpoint=latest to use its newest checkpoint, or finish the run")
        return load_keras(path)
    path = find_checkpoint(run_dir, which)
    if num_classes is None:
        names = results_class_names(run_dir)
        num_classes = len(names) if names else 10
    model = build_run_model(config, num_classes, input_shape or (28, 28, 1))
    restore_checkpoint(model, path)
    return model


def build_run_model(config, num_classes: int, input_shape=(28, 28, 1)) -> keras.Model:
    """The run's model, freshly built from its config (named as in a fresh
    training process, whatever models this process built before).

    Args:
      config: the run's `tfcustom.TrainConfig` (its model and ``model_kwargs``).
      num_classes: the model's output classes.
      input_shape: the per-example input shape it is built on.

    Returns:
      A new, built ``keras.Model``.

    Examples:
        >>> from tfcustom import TrainConfig
        >>> config = TrainConfig(model="mlp", model_kwargs={"hidden_units": [8]})
        >>> first, second = build_run_model(config, 3, (4, 4, 1)), build_run_model(config, 3, (4, 4, 1))
        >>> first.name == second.name, first.count_params()   # 16 * 8 + 8, 8 * 3 + 3
        (True, 163)
    """
    return model_from_config(config, num_classes, input_shape, fresh_name=True)


def load_keras(path: str) -> keras.Model:
    """A ``.keras`` file (``safe_mode=True``; tfcustom's objects are registered); one clear error if it cannot be loaded."""
    import tfcustom  # noqa: F401  (registers the custom objects for safe_mode loading)

    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as e:  # zip / h5 / deserialization errors
        raise config_error(f"cannot load the .keras file ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})", path,
                           "pass a .keras file written by tfcustom (or keras.Model.save)") from None


def results_class_names(run_dir: str):
    """The ``class_names`` of a run's ``results.json``, or None (no file, or none recorded)."""
    path = os.path.join(run_dir, RESULTS_FILE)
    if not os.path.exists(path):
        return None
    names = read_json(path, dict, "restore the file, or pass the number of classes (num_classes=)").get("class_names")
    return list(names) if names else None


class RunEvaluation:
    """The data, loss and metrics of a run's evaluation on a split, built once;
    [`evaluate`][tfcustom.experiment.run_dir.RunEvaluation.evaluate] runs them on a model
    (what [`evaluate_run`][tfcustom.experiment.run_dir.evaluate_run] does once and the
    sidecar, `tfcustom.experiment.sidecar`, once per checkpoint).

    Args: as [`evaluate_run`][tfcustom.experiment.run_dir.evaluate_run]'s.
    """

    def __init__(self, run_dir: str, data_dir: Optional[str] = None, split: str = "test", *, dataset=None):
        check_one_of("split", split, SPLITS)
        self.run_dir, self.split = run_dir, split
        self.config = config = read_run_config(run_dir)
        if dataset is None:
            dataset = data_lib.load(config.dataset, data_dir or config.data_dir)
        if not isinstance(dataset, data_lib.ShardedDataset):  # the examples the run used (--train_subset, --test_subset)
            dataset = data_lib.subset(dataset, config.train_subset, config.test_subset)
        if split == "test":
            examples = dataset.test
        else:
            train, val = data_lib.split_validation(dataset.train, config.validation_size, config.seed)
            check(split == "train" or val is not None, "the run used no validation split", config.validation_size, "evaluate --split=test or train")
            examples = train if split == "train" else val
        self.dataset, self.examples = dataset, examples
        self.loss = build_loss(config)
        self.metrics = [metric_from_spec(m, dataset.num_classes) for m in config.metrics]
        self.tracker = keras.metrics.Mean(name="loss")
        self._model, self._test_loop = None, None

    def build_model(self) -> keras.Model:
        """The run's model, freshly built (restore a checkpoint into it)."""
        return build_run_model(self.config, self.dataset.num_classes, self.dataset.input_shape)

    def metric_names(self) -> list:
        """The keys [`evaluate`][tfcustom.experiment.run_dir.RunEvaluation.evaluate] returns besides ``examples``."""
        names = ["loss"]
        for m in self.metrics:
            names.extend(scalar_results(m))
        return names

    def evaluate(self, model: keras.Model) -> Dict[str, float]:
        """``{"loss": ..., <metric>: ..., "examples": n}`` of ``model`` over every example of the split."""
        shape = tuple(self.dataset.input_shape)
        out_dim = int(model(tf.zeros((1,) + shape, tf.float32), training=False).shape[-1])
        if out_dim != self.dataset.num_classes:
            raise data_error("the model's number of outputs differs from the dataset's number of classes", (out_dim, self.dataset.num_classes),
                             "evaluate on the dataset the run was trained on")
        if model is not self._model:  # one traced loop per model; a restored checkpoint keeps it
            self._model = model
            self._test_loop = steps_lib.make_test_step(model, self.loss, self.metrics, loss_tracker=self.tracker)
        for m in [self.tracker, *self.metrics]:
            m.reset_state()
        pipe = data_lib.InputPipeline(self.examples, min(self.config.eval_batch_size, len(self.examples)))
        self._test_loop(iter(pipe.dataset()))
        logs = {"loss": float(self.tracker.result())}
        for m in self.metrics:
            logs.update(scalar_results(m))
        logs["examples"] = len(self.examples)
        return logs


def evaluate_run(run_dir: str, which: str = "final", data_dir: Optional[str] = None, split: str = "test",
                 *, dataset=None) -> Dict[str, float]:
    """Evaluate a run's model on a split, without training.

    Args:
      run_dir: a training run's output directory (has ``config.json``).
      which: ``"final"`` (``model.keras``), ``"latest"``, ``"best"`` or
        ``"ckpt-N"`` (checkpoints; see [`load_run_model`][tfcustom.experiment.run_dir.load_run_model]).
      data_dir: the data directory (default: the run's ``data_dir``).
      split: ``"test"``, ``"validation"`` (the run's held-out part of train,
        rebuilt from its seed and validation_size) or ``"train"`` (the rest);
        of the examples the run used (its ``train_subset`` / ``test_subset``).
      dataset: an in-memory [`tfcustom.data.Dataset`][tfcustom.data.Dataset] instead of loading
        the run's dataset.

    Returns:
      ``{"loss": ..., <metric>: ...}`` with the run's loss and metrics, over
      every example of the split; also ``"examples"`` (the count).

    Examples:
        >>> import numpy as np, tempfile
        >>> from tfcustom import TrainConfig
        >>> run, config = tempfile.mkdtemp(), TrainConfig(model="logistic_regression")
        >>> _ = open(os.path.join(run, "config.json"), "w").write(config.to_json())
        >>> model = build_run_model(config, 10)
        >>> for w in model.weights:
        ...     _ = w.assign(np.zeros(w.shape, "float32"))   # logits all 0: loss ln 10, every prediction class 0
        >>> model.save(os.path.join(run, "model.keras"))
        >>> x = np.zeros((4, 28, 28, 1), np.uint8)
        >>> dataset = data_lib.from_numpy(x, [0, 1, 2, 3], x, [0, 0, 5, 9], num_classes=10)
        >>> logs = evaluate_run(run, dataset=dataset)
        >>> round(logs["loss"], 4), logs["accuracy"], logs["examples"]
        (2.3026, 0.5, 4)
    """
    check_one_of("split", split, SPLITS)
    _check_which(which)
    evaluation = RunEvaluation(run_dir, data_dir, split, dataset=dataset)
    model = load_run_model(run_dir, which, num_classes=evaluation.dataset.num_classes, input_shape=evaluation.dataset.input_shape)
    return evaluation.evaluate(model)
