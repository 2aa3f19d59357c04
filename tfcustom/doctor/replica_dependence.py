"""Layers whose training output depends on the replica by design, and the same model without that dependence.

On N replicas each ``BatchNormalization`` layer normalises with the statistics of its
replica's share of the global batch (Keras' default, ``synchronized=False``), and each
dropout or noise layer draws its replica's own mask (tfcustom's ``Dropout`` seeds with
the replica index; Keras' layers draw from per-replica generator states). So the weights
after K steps on 4 replicas differ from one device's without any bug in the loss
reduction or the gradient all-reduce. [`neutralise`][tfcustom.doctor.replica_dependence.neutralise] removes exactly that
dependence, leaving every weight and every other op as it is: BatchNorm synchronised
(mean and variance all-reduced over the replicas: the global batch's statistics on any
replica count) and dropout/noise rates 0. The ``replica agreement`` check compares
replica counts on that model; only layers of these Keras/tfcustom classes are touched,
never a user's own layer.

Examples:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
    ...                           keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    >>> find(model)
    {'per-replica BatchNorm statistics': 1, 'per-replica dropout/noise masks': 1}
    >>> neutralise(model), find(model), model.layers[1].synchronized, model.layers[2].rate
    (2, {}, True, 0.0)
"""

from __future__ import annotations

from typing import Callable, Dict, List

import keras
import tensorflow as tf

from tfcustom.layers.dropout import Dropout
from tfcustom.training.batch_norm_stats import batch_norm_layers

BATCH_NORM = "per-replica BatchNorm statistics"
NOISE = "per-replica dropout/noise masks"

# Layer classes whose training call draws random numbers, with the attribute that switches it off at 0.
_NOISE_ATTRIBUTE = ((keras.layers.Dropout, "rate"), (keras.layers.GaussianDropout, "rate"),
                    (keras.layers.AlphaDropout, "rate"), (keras.layers.GaussianNoise, "stddev"), (Dropout, "rate"))


def _layers(model: keras.Model) -> list:
    return list(model._flatten_layers(include_self=False, recursive=True))  # noqa: SLF001 -- Keras' own walk


def _noise_attribute(layer) -> str:
    return next((attr for cls, attr in _NOISE_ATTRIBUTE if isinstance(layer, cls) and getattr(layer, attr, 0) > 0), "")


def _dependent(model: keras.Model) -> Dict[str, List]:
    found = {BATCH_NORM: [layer for layer in batch_norm_layers(model) if not layer.synchronized],
             NOISE: [layer for layer in _layers(model) if _noise_attribute(layer)]}
    return {kind: layers for kind, layers in found.items() if layers}


def find(model: keras.Model) -> Dict[str, int]:
    """How many layers of ``model`` (nested ones too) depend on the replica in training, by kind (kinds with none left out).

    Args:
      model: a built Keras model.

    Returns:
      ``{BATCH_NORM: n, NOISE: m}`` without the zero counts.
    """
    return {kind: len(layers) for kind, layers in _dependent(model).items()}


def neutralise(model: keras.Model) -> int:
    """Make ``model``'s training call independent of the replica: BatchNorm synchronised, dropout/noise off.

    Args:
      model: a built Keras model (layers created in ``build`` exist only then).

    Returns:
      The number of layers changed.
    """
    changed = 0
    for kind, layers in _dependent(model).items():
        for layer in layers:
            if kind == BATCH_NORM:
                layer.synchronized = True
            else:
                setattr(layer, _noise_attribute(layer), 0.0)
            changed += 1
    return changed


def neutralised(model_fn: Callable[[], keras.Model], example) -> Callable[[], keras.Model]:
    """A model builder like ``model_fn`` whose models are built on ``example`` (a batch) and then neutralised."""

    def make():
        model = model_fn()
        model(tf.constant(example), training=False)
        neutralise(model)
        return model

    return make
