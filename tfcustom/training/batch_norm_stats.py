"""BatchNormalization statistics recomputed for the current weights: one pass over the training data.

Averaged weights (EMA, SWA: `tfcustom.callbacks.weight_averaging`) never ran
forward during training, so the moving statistics the BatchNormalization layers
hold belong to other weights. [`reestimate_batch_norm`][tfcustom.training.batch_norm_stats.reestimate_batch_norm] runs the model
with ``training=True`` over every batch of the data and sets each layer's
``moving_mean`` / ``moving_variance`` to the **mean over the batches** of the
batch mean / variance, as ``torch.optim.swa_utils.update_bn`` does (its
``momentum=None``: a cumulative average; batch ``k`` enters with momentum
``(k - 1) / k``). The variance is the biased batch variance, the one Keras'
layer itself accumulates. In training mode a layer normalizes with the
batch's own moments, so the pass is the same whatever the moving statistics
were; only they change (and the dropout layers' random states advance).

Under N replicas each replica runs its own share of every global batch (as in
training, where each replica's layers see their share) and accumulates that
share's moments; the replicas' results are then averaged, so every replica
holds the mean over all ``(batch, replica)`` shares — what a NumPy
recomputation over the same shares gives. A replica whose share of the final
batch is empty skips it. Layers that are frozen (``trainable=False``: they do
not update their statistics in training) are left as they are.

Examples:
    >>> import keras, numpy as np, tensorflow as tf
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    >>> x = np.arange(12, dtype="float32").reshape(4, 3)
    >>> data = tf.data.Dataset.from_tensor_slices((x, np.zeros(4))).batch(2)
    >>> reestimate_batch_norm(model, data)          # batches [[0,1,2],[3,4,5]] and [[6,7,8],[9,10,11]]
    2
    >>> model.layers[0].moving_mean.numpy().tolist(), model.layers[0].moving_variance.numpy().tolist()
    ([4.5, 5.5, 6.5], [2.25, 2.25, 2.25])
"""

from __future__ import annotations

from typing import List, Optional

import keras
import tensorflow as tf

from tfcustom.training.distributed_input import distribute
from tfcustom.training.steps import unpack_batch


def batch_norm_layers(model: keras.Model) -> List[keras.layers.BatchNormalization]:
    """The BatchNormalization layers of ``model`` (nested ones too) that update their statistics in training.

    Args:
      model: a Keras model.

    Returns:
      The trainable ``keras.layers.BatchNormalization`` layers (subclasses
      included), in the model's layer order.

    Examples:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
        >>> [type(layer).__name__ for layer in batch_norm_layers(model)]
        ['BatchNormalization']
    """
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)  # noqa: SLF001 -- Keras' own walk
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def _statistics(layers) -> list:
    return [getattr(v, "value", v) for layer in layers for v in (layer.moving_mean, layer.moving_variance)]


def _pass_function(model, strategy, momentum):
    """The compiled pass: per batch, set ``momentum`` to ``(k - 1) / k`` and run every replica's share."""

    def replica_fn(batch):
        x, _, _ = unpack_batch(batch)
        size = tf.shape(tf.nest.flatten(x)[0])[0]
        if size > 0:  # an empty share of the final batch would give NaN moments
            model(x, training=True)

    @tf.function
    def run_pass(iterator):
        k = tf.constant(0.0)
        while tf.constant(True):
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                break
            k += 1.0
            momentum.assign((k - 1.0) / k)
            strategy.run(replica_fn, args=(optional.get_value(),))
        return k

    return run_pass


def _average_replicas(strategy, variables) -> None:
    """Set every replica's copy of ``variables`` to their mean over the replicas."""

    @tf.function
    def sync():
        local = strategy.run(lambda: [tf.identity(v) for v in variables])
        for v, value in zip(variables, local):
            v.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))

    sync()


def reestimate_batch_norm(model: keras.Model, data, *, strategy: Optional[tf.distribute.Strategy] = None) -> int:
    """Recompute the moving statistics of ``model``'s BatchNormalization layers from one pass over ``data``.

    Args:
      model: the model, with the weights to compute the statistics for.
      data: the training data: a [`tfcustom.data.InputPipeline`][tfcustom.data.InputPipeline] (its epoch 0
        order and augmentation) or a batched ``tf.data.Dataset`` of ``(x, y[, w])``.
      strategy: the model's strategy (default: the current one).

    Returns:
      The number of (global) batches the pass ran; 0 when the model has no such layer (nothing runs).

    Examples:
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.BatchNormalization()])
        >>> data = tf.data.Dataset.from_tensor_slices((tf.constant([[0.0], [2.0], [4.0]]), tf.zeros(3))).batch(2)
        >>> reestimate_batch_norm(model, data)   # batches [0, 2] and [4]: means 1 and 4, variances 1 and 0
        2
        >>> float(model.layers[0].moving_mean[0]), float(model.layers[0].moving_variance[0])
        (2.5, 0.5)
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        momentum = tf.Variable(0.0, trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        object.__setattr__(layer, "momentum", momentum)  # read in the traced pass; not tracked by the layer
    try:
        batches = int(_pass_function(model, strategy, momentum)(iter(distribute(strategy, data))).numpy())
    finally:
        for layer, value in zip(layers, saved):
            object.__setattr__(layer, "momentum", value)
    if strategy.num_replicas_in_sync > 1:
        _average_replicas(strategy, _statistics(layers))
    return batches
