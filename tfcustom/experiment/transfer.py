"""Transfer learning: restore a backbone, freeze layers, two learning rates.

Layers are selected by **name pattern** (``fnmatch``: ``*``, ``?``,
``[...]``) matched against the names of a model's top-level layers
(``[layer.name for layer in model.layers]``; for the CNN: ``stage0_conv0``,
``stage1_conv0``, ``flatten``, ``hidden``, ``logits``).

* [`restore_backbone`][tfcustom.experiment.transfer.restore_backbone] copies the weights (trainable and not, e.g.
  BatchNorm statistics) of matching layers from a pretrained model, a
  ``.keras`` file, a run directory or a checkpoint into a new model, e.g. one
  with a different head.
* [`freeze`][tfcustom.experiment.transfer.freeze] / [`unfreeze`][tfcustom.experiment.transfer.unfreeze] set ``trainable`` by pattern. A frozen
  BatchNorm also runs in inference mode (Keras 3). Build the
  [`Trainer`][tfcustom.Trainer] (and its optimizer) **after** freezing or
  unfreezing: both capture ``model.trainable_variables`` when built.
* [`BackboneHeadOptimizer`][tfcustom.experiment.transfer.BackboneHeadOptimizer] is a Keras optimizer that holds two inner
  optimizers and routes each variable to one of them by its layer's name,
  so backbone and head train with different learning rates inside the
  ordinary Trainer step.
* [`transfer_experiment`][tfcustom.experiment.transfer.transfer_experiment] is the fine-tuning lesson end to end
  (``examples/transfer_learning.py``): pretrain on some classes, fine-tune on
  few labelled examples of the others, compare with training from scratch.

Examples:
    >>> new = tfcustom.models.get("cnn", num_classes=5)
    >>> new.build((None, 28, 28, 1))
    >>> restore_backbone(new, "runs/pretrain/model.keras", exclude=("logits",))
    ['stage0_conv0', 'stage1_conv0', 'hidden']
    >>> freeze(new, ["stage*"])
    ['stage0_conv0', 'stage1_conv0']
    >>> opt = BackboneHeadOptimizer(keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-3), backbone=["stage*", "hidden"])
"""

from __future__ import annotations

import functools
import os
import time
from typing import Dict, List, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom import data as data_lib
from tfcustom import models as models_lib
from tfcustom.training.trainer import Trainer
from tfcustom.optimizers.backbone_head import BackboneHeadOptimizer, variable_layer_name
from tfcustom.errors import check, config_error
from tfcustom.experiment import run_dir as run_dir_lib
from tfcustom.experiment.builders import seed_everything
from tfcustom.models.layer_patterns import check_patterns, layer_names, match_layers

__all__ = [
    "BackboneHeadOptimizer", "freeze", "unfreeze", "layer_names", "match_layers",
    "restore_backbone", "variable_layer_name", "transfer_experiment", "subset_classes",
]


# --------------------------------------------------------------------------
# restore a backbone
# --------------------------------------------------------------------------


def _find_run_dir(path: str) -> Optional[str]:
    d = os.path.abspath(path if os.path.isdir(path) else os.path.dirname(path))
    for _ in range(4):
        if os.path.isfile(os.path.join(d, run_dir_lib.CONFIG_FILE)):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return None


def _source_model(source) -> keras.Model:
    """A keras.Model from a model, a ``.keras`` file, a run directory, or a checkpoint."""
    if isinstance(source, keras.Model):
        return source
    check(isinstance(source, (str, os.PathLike)), "the pretrained source must be a keras.Model or a path", type(source).__name__,
          "pass a model, a .keras file, a run directory or a checkpoint path")
    path = os.fspath(source)
    if path.endswith(".keras"):
        check(os.path.isfile(path), "pretrained .keras file does not exist", path, "check the path")
        return run_dir_lib.load_keras(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, run_dir_lib.KERAS_FILE)):
        return run_dir_lib.load_keras(os.path.join(path, run_dir_lib.KERAS_FILE))
    # A checkpoint (prefix, or a directory of checkpoints) inside a run directory:
    # rebuild the run's model from its config.json and restore it.
    ckpt = tf.train.latest_checkpoint(path) if os.path.isdir(path) else (path if tf.io.gfile.glob(path + ".index") else None)
    check(ckpt is not None, "pretrained source is neither a .keras file, a run directory nor a checkpoint", path,
          "pass a model, a .keras file, a run directory (with model.keras) or a checkpoint prefix such as run/checkpoints/ckpt-100")
    run_dir = _find_run_dir(path)
    check(run_dir is not None, "a checkpoint can only be restored inside its run directory (config.json rebuilds the model)", path,
          "pass the checkpoint of a tfcustom run, or the pretrained model / .keras file")
    config = run_dir_lib.read_run_config(run_dir)
    names = run_dir_lib.results_class_names(run_dir)
    model = run_dir_lib.build_run_model(config, len(names) if names else 10)
    run_dir_lib.restore_checkpoint(model, ckpt)
    return model


def restore_backbone(
    model: keras.Model,
    checkpoint_path_or_model: Union[keras.Model, str],
    *,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
) -> List[str]:
    """Copy the weights of matching layers of a pretrained model into ``model``.

    Args:
      model: the new, **built** model (e.g. the same architecture with a new head).
      checkpoint_path_or_model: the pretrained ``keras.Model``; or a ``.keras``
        file; or a run directory (its ``model.keras``); or a checkpoint prefix /
        checkpoint directory inside a run directory (the run's model is rebuilt
        from its ``config.json`` and restored).
      include: patterns over ``model``'s top-level layer names; every pattern
        other than ``"*"`` must match a layer.
      exclude: patterns of layers not to restore (e.g. the head, ``"logits"``).

    Returns:
      The names of the layers whose weights were copied. Selected layers the
      source does not have, or that have no weights, are skipped (logged).

    Raises:
      ConfigError: nothing matches / nothing restored, or a selected layer's
        weights differ in number or shape from the source's (naming the layer
        and both shapes).
    """
    check(isinstance(model, keras.Model), "restore_backbone needs a keras.Model to restore into", type(model).__name__, "pass the new model")
    # A model built by Keras' default build() (no build of its own) is "built" with no weights.
    check(model.built and model.weights, "the model to restore into is not built (it has no weights yet)", model.name,
          "call model.build(input_shape), e.g. model.build((None, 28, 28, 1)), or call it on a batch first")
    source = _source_model(checkpoint_path_or_model)
    check(source.built, "the pretrained model is not built", source.name, "call it on a batch first")
    selected = match_layers(model, include, exclude, what="restoring a backbone: layer patterns")
    src_layers = {l.name: l for l in source.layers}
    plan = []
    for layer in selected:
        src = src_layers.get(layer.name)
        if src is None:
            logging.info("restore_backbone: the source has no layer %r; it keeps its initial weights", layer.name)
            continue
        dst_w, src_w = layer.weights, src.weights
        if not dst_w and not src_w:
            continue
        if len(dst_w) != len(src_w):
            raise config_error(f"restoring a backbone: layer {layer.name!r} has {len(dst_w)} weights but the source's has {len(src_w)}",
                               {"model": [w.path for w in dst_w], "source": [w.path for w in src_w]},
                               f"exclude it (exclude=({layer.name!r},)) or use a source of the same architecture")
        for d, s in zip(dst_w, src_w):
            if tuple(d.shape) != tuple(s.shape):
                raise config_error(
                    f"restoring a backbone: shape mismatch in layer {layer.name!r} ({d.path.split('/', 1)[-1]}: model {tuple(d.shape)} vs source {tuple(s.shape)})",
                    {"model": tuple(d.shape), "source": tuple(s.shape)},
                    f"exclude it (exclude=({layer.name!r},)), e.g. a head with a different number of classes",
                )
        plan.append((layer, src))
    check(plan, "restoring a backbone whose layer names match nothing in the source", [l.name for l in selected],
          f"the source's layers with weights are: {', '.join(l.name for l in source.layers if l.weights) or '(none)'}")
    for layer, src in plan:  # copy only once every shape is known to match
        for d, s in zip(layer.weights, src.weights):
            d.assign(s.numpy())
    restored = [layer.name for layer, _ in plan]
    logging.info("Restored %d layer(s) from the pretrained model: %s", len(restored), ", ".join(restored))
    return restored


# --------------------------------------------------------------------------
# freeze / unfreeze
# --------------------------------------------------------------------------


def _set_trainable(model, patterns, trainable: bool, verb: str) -> List[str]:
    patterns = check_patterns(patterns, f"{verb} patterns")
    check(patterns, f"{verb} needs at least one layer-name pattern", patterns, "pass e.g. ['stage*']")
    layers = match_layers(model, patterns, (), what=f"{verb}: layer patterns")
    for layer in layers:
        layer.trainable = trainable
    return [l.name for l in layers]


def freeze(model: keras.Model, patterns: Sequence[str]) -> List[str]:
    """Set ``trainable = False`` on the top-level layers matching ``patterns``;
    returns their names. Build the Trainer / optimizer afterwards."""
    return _set_trainable(model, patterns, False, "freeze")


def unfreeze(model: keras.Model, patterns: Sequence[str] = ("*",)) -> List[str]:
    """Set ``trainable = True`` on the top-level layers matching ``patterns``;
    returns their names. Build a new Trainer / optimizer afterwards."""
    return _set_trainable(model, patterns, True, "unfreeze")


# --------------------------------------------------------------------------
# the fine-tuning lesson
# --------------------------------------------------------------------------


def subset_classes(split, classes: Sequence[int], per_class: Optional[int] = None, seed: int = 0):
    """The examples of ``classes`` (labels remapped to 0..len(classes)-1), optionally
    ``per_class`` of each, drawn with ``seed``; returns a [`tfcustom.data.Split`][tfcustom.data.Split]."""
    classes = list(classes)
    rng = np.random.default_rng(seed)
    idx = []
    for c in classes:
        where = np.flatnonzero(split.y == c)
        if per_class is not None:
            check(len(where) >= per_class, f"class {c} has fewer than {per_class} examples", len(where), "pass a smaller per_class")
            where = np.sort(rng.choice(where, per_class, replace=False))
        idx.append(where)
    idx = np.sort(np.concatenate(idx))
    remap = np.full(int(max(classes)) + 1, -1, np.int32)
    remap[classes] = np.arange(len(classes), dtype=np.int32)
    return data_lib.Split(split.x[idx], remap[split.y[idx]])


def _fit(model, train, test, optimizer, epochs, batch_size, seed, verbose):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainer = Trainer(model, loss, optimizer, ["accuracy"], verbose=verbose)
    pipe = data_lib.InputPipeline(train, min(batch_size, len(train)), shuffle=True, seed=seed)
    trainer.fit(pipe, epochs)
    return trainer.evaluate(data_lib.InputPipeline(test, min(1000, len(test))))


def _check_lesson(pretrain_classes, target_classes, shots, seeds, head_epochs, finetune_epochs) -> List[int]:
    """The lesson's arguments checked; the seeds as a list."""
    check(not set(pretrain_classes) & set(target_classes), "pretrain and target classes overlap",
          sorted(set(pretrain_classes) & set(target_classes)), "use disjoint class sets")
    check(isinstance(shots, int) and shots >= 1, "shots must be a positive integer", shots, "pass e.g. 100")
    seeds = list(seeds)
    check(seeds and all(isinstance(s, int) and s >= 0 for s in seeds), "seeds must be a non-empty list of integers >= 0", seeds, "pass e.g. seeds=(0, 1, 2)")
    check(head_epochs + finetune_epochs >= 1, "fine-tuning needs at least one epoch", (head_epochs, finetune_epochs),
          "pass finetune_epochs >= 1 (and/or head_epochs >= 1)")
    return seeds


def _fine_tune(model, few, target_test, backbone, seed, verbose, *, head_epochs, head_learning_rate, finetune_epochs,
               backbone_learning_rate, learning_rate, batch_size) -> Dict[str, Optional[float]]:
    """Optionally the head alone (backbone frozen), then everything at two learning rates:
    ``{"head_only_accuracy", "finetune_accuracy"}``."""
    run = {"head_only_accuracy": None}
    if head_epochs:
        freeze(model, backbone)
        run["head_only_accuracy"] = _fit(model, few, target_test, keras.optimizers.Adam(head_learning_rate), head_epochs, batch_size, seed, verbose)["accuracy"]
        unfreeze(model, backbone)
    run["finetune_accuracy"] = run["head_only_accuracy"]
    if finetune_epochs:
        optimizer = BackboneHeadOptimizer(keras.optimizers.Adam(backbone_learning_rate), keras.optimizers.Adam(learning_rate), backbone=backbone)
        run["finetune_accuracy"] = _fit(model, few, target_test, optimizer, finetune_epochs, batch_size, seed + 1, verbose)["accuracy"]
    return run


def _fresh_cnn(num_classes: int, seed: int, *, shape, model_kwargs) -> keras.Model:
    """A new CNN drawn with ``seed``, built on ``shape``."""
    seed_everything(seed, False)
    model = models_lib.get("cnn", num_classes=num_classes, **model_kwargs)
    model(tf.zeros(shape), training=False)
    return model


def _one_seed(fresh, pretrained, few, target_test, backbone, seed, verbose, *, n_target, scratch_epochs, learning_rate,
              batch_size, **fine_tuning):
    """One seed of the lesson: fine-tune a restored backbone, then train the same model from scratch;
    ``(restored layer names, the seed's results)``."""
    t = time.time()
    model = fresh(n_target, seed + 1)
    restored = restore_backbone(model, pretrained, include=backbone)
    run = {"seed": seed}
    run.update(_fine_tune(model, few, target_test, backbone, seed, verbose, learning_rate=learning_rate, batch_size=batch_size,
                          **fine_tuning))
    run["finetune_s"] = time.time() - t
    t = time.time()
    scratch = fresh(n_target, seed + 1)
    run["scratch_accuracy"] = _fit(scratch, few, target_test, keras.optimizers.Adam(learning_rate), scratch_epochs, batch_size, seed, verbose)["accuracy"]
    run["scratch_s"] = time.time() - t
    logging.info("seed %d: fine-tuned %.4f, from scratch %.4f", seed, run["finetune_accuracy"], run["scratch_accuracy"])
    return restored, run


def transfer_experiment(
    data_dir: Optional[str] = None,
    *,
    pretrain_classes: Sequence[int] = (0, 1, 2, 3, 4),
    target_classes: Sequence[int] = (5, 6, 7, 8, 9),
    shots: int = 100,
    model_kwargs: Optional[dict] = None,
    pretrain_epochs: int = 3,
    head_epochs: int = 0,
    head_learning_rate: float = 1e-2,
    finetune_epochs: int = 60,
    scratch_epochs: Optional[int] = None,
    learning_rate: float = 1e-3,
    backbone_learning_rate: float = 1e-3,
    batch_size: int = 64,
    pretrain_batch_size: int = 128,
    backbone: Sequence[str] = ("stage*", "hidden"),
    seeds: Sequence[int] = (0, 1, 2),
    verbose: int = 0,
    dataset=None,
) -> Dict[str, object]:
    """Pretrain on ``pretrain_classes``, fine-tune on ``shots`` labelled images per
    class of ``target_classes``, and compare with training from scratch.

    1. Pretrain the CNN (``model_kwargs``, default ``filters=[16, 32]``) on every
       training image of ``pretrain_classes`` (Adam, ``learning_rate``).
    2. For each seed of ``seeds``: draw ``shots`` images per target class, then

       * fine-tune: a new model with a ``len(target_classes)``-way head whose
         ``backbone`` layers are restored from the pretrained model
         ([`restore_backbone`][tfcustom.experiment.transfer.restore_backbone]); optionally ``head_epochs`` with the backbone
         frozen ([`freeze`][tfcustom.experiment.transfer.freeze]; head at ``head_learning_rate``), then
         ``finetune_epochs`` with everything trainable
         ([`BackboneHeadOptimizer`][tfcustom.experiment.transfer.BackboneHeadOptimizer]: Adam at ``backbone_learning_rate`` for
         the backbone, at ``learning_rate`` for the head);
       * scratch: the same model, freshly initialised (same initial head),
         trained on the same images for ``scratch_epochs`` (default: the
         fine-tuning epochs, ``head_epochs + finetune_epochs``) at ``learning_rate``.

    Both are tested on every test image of ``target_classes``.

    Returns:
      ``{"finetune_accuracy", "scratch_accuracy"`` (means over the seeds),
      ``"runs"`` (one dict per seed), ``"pretrain_accuracy"`` (on the pretrain
      classes' test images), ``"restored_layers"``, example counts, timings}.
    """
    seeds = _check_lesson(pretrain_classes, target_classes, shots, seeds, head_epochs, finetune_epochs)
    model_kwargs = dict({"filters": [16, 32]} if model_kwargs is None else model_kwargs)
    scratch_epochs = scratch_epochs if scratch_epochs is not None else head_epochs + finetune_epochs
    if dataset is None:
        dataset = data_lib.load("fashion_mnist", data_dir)
    n_target = len(target_classes)
    fresh = functools.partial(_fresh_cnn, shape=(1,) + tuple(dataset.input_shape), model_kwargs=model_kwargs)
    pre_train = subset_classes(dataset.train, pretrain_classes)
    pre_test = subset_classes(dataset.test, pretrain_classes)
    target_test = subset_classes(dataset.test, target_classes)
    logging.info("pretrain on %d images of classes %s; then, per seed %s, %d labelled images per class of %s; test on %d",
                 len(pre_train), list(pretrain_classes), seeds, shots, list(target_classes), len(target_test))
    t = time.time()
    pretrained = fresh(len(pretrain_classes), seeds[0])
    pre_logs = _fit(pretrained, pre_train, pre_test, keras.optimizers.Adam(learning_rate), pretrain_epochs, pretrain_batch_size, seeds[0], verbose)
    pretrain_s = time.time() - t

    runs, restored = [], []
    for seed in seeds:
        few = subset_classes(dataset.train, target_classes, per_class=shots, seed=seed)
        restored, run = _one_seed(fresh, pretrained, few, target_test, backbone, seed, verbose, n_target=n_target,
                                  head_epochs=head_epochs, head_learning_rate=head_learning_rate, finetune_epochs=finetune_epochs,
                                  backbone_learning_rate=backbone_learning_rate, learning_rate=learning_rate,
                                  batch_size=batch_size, scratch_epochs=scratch_epochs)
        runs.append(run)

    return {
        "finetune_accuracy": float(np.mean([r["finetune_accuracy"] for r in runs])),
        "scratch_accuracy": float(np.mean([r["scratch_accuracy"] for r in runs])),
        "runs": runs,
        "pretrain_accuracy": pre_logs["accuracy"],
        "restored_layers": restored,
        "pretrain_examples": len(pre_train),
        "finetune_examples": n_target * shots,
        "test_examples": len(target_test),
        "pretrain_s": pretrain_s,
        "scratch_epochs": scratch_epochs,
    }
