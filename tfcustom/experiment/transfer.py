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
import time
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom import data as data_lib
from tfcustom import models as models_lib
from tfcustom.training.trainer import Trainer
from tfcustom.optimizers.backbone_head import BackboneHeadOptimizer, variable_layer_name
from tfcustom.errors import check
from tfcustom.experiment.builders import seed_everything
from tfcustom.models.layer_patterns import check_patterns, layer_names, match_layers
from tfcustom.experiment.backbone import restore_backbone

__all__ = [
    "BackboneHeadOptimizer", "freeze", "unfreeze", "layer_names", "match_layers",
    "restore_backbone", "variable_layer_name", "transfer_experiment", "subset_classes",
]


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
    """Set ``trainable = False`` on the top-level layers matching ``patterns``.

    Build the Trainer / optimizer afterwards: both capture ``model.trainable_variables``.

    Args:
      model: the model.
      patterns: ``fnmatch`` patterns over its top-level layer names (one string or several);
        each must match a layer.

    Returns:
      The names of the layers frozen.

    Examples:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="stage0"),
        ...                           keras.layers.Dense(3, name="stage1"), keras.layers.Dense(2, name="logits")], name="net")
        >>> freeze(model, ["stage*"])
        ['stage0', 'stage1']
        >>> [v.path for v in model.trainable_variables]
        ['net/logits/kernel', 'net/logits/bias']
    """
    return _set_trainable(model, patterns, False, "freeze")


def unfreeze(model: keras.Model, patterns: Sequence[str] = ("*",)) -> List[str]:
    """Set ``trainable = True`` on the top-level layers matching ``patterns``.

    Build a new Trainer / optimizer afterwards.

    Args:
      model: the model.
      patterns: ``fnmatch`` patterns over its top-level layer names (default: every layer).

    Returns:
      The names of the layers unfrozen.

    Examples:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="stage0"), keras.layers.Dense(2, name="logits")])
        >>> freeze(model, "*")
        ['stage0', 'logits']
        >>> unfreeze(model, ["stage0"]), len(model.trainable_variables)
        (['stage0'], 2)
    """
    return _set_trainable(model, patterns, True, "unfreeze")


# --------------------------------------------------------------------------
# the fine-tuning lesson
# --------------------------------------------------------------------------


def subset_classes(split, classes: Sequence[int], per_class: Optional[int] = None, seed: int = 0):
    """The examples of ``classes`` (labels remapped to 0..len(classes)-1), optionally ``per_class`` of each.

    Args:
      split: a [`tfcustom.data.Split`][tfcustom.data.Split].
      classes: the labels kept; ``classes[i]`` becomes label ``i``.
      per_class: draw this many examples of each class (None: all of them).
      seed: the draw's seed.

    Returns:
      A new [`tfcustom.data.Split`][tfcustom.data.Split], its examples in ``split``'s order.

    Examples:
        >>> split = data_lib.Split(np.arange(6).reshape(6, 1), np.array([0, 1, 2, 1, 2, 0]))
        >>> few = subset_classes(split, [2, 1])
        >>> few.x.ravel().tolist(), few.y.tolist()   # class 2 is now 0, class 1 is 1
        ([1, 2, 3, 4], [1, 0, 1, 0])
        >>> subset_classes(split, [2, 1], per_class=1).y.tolist()
        [1, 0]
    """
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

    Args:
      data_dir: Fashion-MNIST's directory (when ``dataset`` is None).
      pretrain_classes: the classes pretrained on.
      target_classes: the classes fine-tuned on (disjoint from ``pretrain_classes``).
      shots: labelled training images per target class.
      model_kwargs: the CNN's arguments (default ``{"filters": [16, 32]}``).
      pretrain_epochs: epochs of pretraining.
      head_epochs: epochs of the head alone, backbone frozen (0: none).
      head_learning_rate: the head's learning rate then.
      finetune_epochs: epochs of fine-tuning everything.
      scratch_epochs: epochs of the model trained from scratch (None: ``head_epochs + finetune_epochs``).
      learning_rate: pretraining's, the head's in fine-tuning, and from scratch.
      backbone_learning_rate: the backbone's in fine-tuning.
      batch_size: the batch size of fine-tuning and of training from scratch.
      pretrain_batch_size: pretraining's batch size.
      backbone: layer-name patterns of the backbone (restored, frozen, at its own rate).
      seeds: one fine-tuning and one from-scratch run per seed.
      verbose: the Trainers' verbosity.
      dataset: a [`tfcustom.data.Dataset`][tfcustom.data.Dataset] to use instead of Fashion-MNIST.

    Returns:
      ``{"finetune_accuracy", "scratch_accuracy"`` (means over the seeds),
      ``"runs"`` (one dict per seed), ``"pretrain_accuracy"`` (on the pretrain
      classes' test images), ``"restored_layers"``, example counts, timings}.

    Examples:
        >>> transfer_experiment(pretrain_classes=(0, 1, 2), target_classes=(2, 3))   # checked before any data is read
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: pretrain and target classes overlap (received: [2]). Use disjoint class sets.
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
