"""Restore a backbone: copy the weights of matching layers from a pretrained model into a new one.

The pretrained weights come from a ``keras.Model``, a ``.keras`` file, a run
directory or a checkpoint inside one; layers are selected by name pattern
(`tfcustom.models.layer_patterns`). Re-exported by
[`tfcustom.experiment.transfer`][tfcustom.experiment.transfer], the transfer-learning module.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Union

import keras
import tensorflow as tf
from absl import logging

from tfcustom.errors import check, config_error
from tfcustom.experiment import run_dir as run_dir_lib
from tfcustom.models.layer_patterns import match_layers


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

    Examples:
        >>> def classifier(classes):
        ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden"),
        ...                              keras.layers.Dense(classes, name="logits")])
        >>> pretrained, new = classifier(5), classifier(2)
        >>> restore_backbone(new, pretrained, exclude=("logits",))
        ['hidden']
        >>> bool((new.get_layer("hidden").kernel.numpy() == pretrained.get_layer("hidden").kernel.numpy()).all())
        True
        >>> restore_backbone(new, pretrained)   # the heads differ: nothing is copied
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: restoring a backbone: shape mismatch in layer 'logits' (logits/kernel: model (3, 2) vs source (3, 5)) ...
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
