"""One replica's part of a training step: its batch, forward and backward pass, loss and metrics.

[`tfcustom.training.steps.make_train_step`][tfcustom.training.steps.make_train_step] runs these on each replica (and
[`make_test_step`][tfcustom.training.steps.make_test_step] the loss and metrics): the batch is unpacked
([`unpack_batch`][tfcustom.training.replica_step.unpack_batch]), the forward and backward pass computes this
replica's share of the global-batch loss and its gradients
([`compute_loss_and_gradients`][tfcustom.training.replica_step.compute_loss_and_gradients], from
[`per_example_loss`][tfcustom.training.replica_step.per_example_loss] and
[`regularization_loss`][tfcustom.training.replica_step.regularization_loss]), and the metrics are updated
([`update_metrics`][tfcustom.training.replica_step.update_metrics]). They are importable from
`tfcustom.training.steps` too.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.training.loss_scaling import unscale


def unpack_batch(batch):
    """``(x, y)`` or ``(x, y, sample_weight)`` -> ``(x, y, sample_weight or None)``.

    Args:
      batch: a tuple ``(x, y)`` or ``(x, y, sample_weight)``, or a dict with ``"x"``, ``"y"`` and
        optionally ``"sample_weight"``.

    Returns:
      ``(x, y, sample_weight)``, ``sample_weight`` None when the batch has none.

    Examples:
        >>> unpack_batch((1, 2)), unpack_batch((1, 2, 0.5)), unpack_batch({"x": 1, "y": 2})
        ((1, 2, None), (1, 2, 0.5), (1, 2, None))
    """
    if isinstance(batch, dict):
        return batch["x"], batch["y"], batch.get("sample_weight")
    if len(batch) == 2:
        return batch[0], batch[1], None
    return batch[0], batch[1], batch[2]


def per_example_loss(loss: keras.losses.Loss, y, y_pred, sample_weight=None):
    """Per-example loss values (shape [batch]), weighted by ``sample_weight``.

    ``loss.call`` is a Keras loss' unreduced computation; reduction is done by
    the step so that it is over the *global* batch.

    Args:
      loss: a ``keras.losses.Loss``.
      y: the targets.
      y_pred: the model's outputs.
      sample_weight: a weight per example (None: 1).

    Returns:
      A float32 ``[batch]`` tensor: each example's loss (the mean over its
      values when the loss returns more than one per example), times its weight.

    Examples:
        >>> mse = keras.losses.MeanSquaredError()
        >>> y, y_pred = tf.constant([[1.0, 1.0], [0.0, 0.0]]), tf.constant([[0.0, 1.0], [2.0, 2.0]])
        >>> per_example_loss(mse, y, y_pred).numpy().tolist()   # (1 + 0) / 2, (4 + 4) / 2
        [0.5, 4.0]
        >>> per_example_loss(mse, y, y_pred, sample_weight=tf.constant([2.0, 0.0])).numpy().tolist()
        [1.0, 0.0]
    """
    values = loss.call(y, y_pred)
    values = tf.cast(values, tf.float32)
    if values.shape.rank is not None and values.shape.rank > 1:
        values = tf.reshape(values, [tf.shape(values)[0], -1])
        values = tf.reduce_mean(values, axis=-1)
    if sample_weight is not None:
        values = values * tf.cast(tf.reshape(sample_weight, [-1]), values.dtype)
    return values


def regularization_loss(model: keras.Model, num_replicas):
    """The model's ``losses`` (weight penalties etc.), divided by the replica count.

    Args:
      model: a Keras model.
      num_replicas: the replica count (each replica adds its share to the summed gradient).

    Returns:
      A float32 scalar tensor (0.0 when the model has no losses).

    Examples:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
        ...     1, kernel_initializer="ones", kernel_regularizer=keras.regularizers.L2(0.1))])
        >>> round(float(regularization_loss(model, num_replicas=2)), 6)   # 0.1 * (1 + 1) / 2
        0.1
    """
    if not model.losses:
        return tf.constant(0.0)
    total = tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
    return total / tf.cast(num_replicas, tf.float32)


def compute_loss_and_gradients(model, loss, x, y, sample_weight, global_examples, num_replicas, loss_scale=None):
    """Forward and backward pass of one replica.

    ``loss_scale`` (mixed float16, given by the step when the optimizer is a
    ``keras.optimizers.LossScaleOptimizer``): the gradient is taken of
    ``loss * loss_scale`` so that small float16 gradients do not underflow,
    then divided by ``loss_scale``; an overflow shows up as Inf/NaN in
    ``grads``.

    This is the default ``gradient_fn`` of [`make_train_step`][tfcustom.make_train_step]; a variant
    (e.g. [`tfcustom.training.sam.SAM`][tfcustom.training.sam.SAM]) takes the same arguments and returns the
    same dict.

    Args:
      model: the Keras model (called with ``training=True``).
      loss: a ``keras.losses.Loss``.
      x: this replica's inputs.
      y: its targets.
      sample_weight: its example weights, or None.
      global_examples: the examples in the step over all replicas (a float32 scalar).
      num_replicas: the replica count.
      loss_scale: the loss scale (mixed float16), or None.

    Returns:
      A dict with ``grads`` (list aligned with
      ``model.trainable_variables``), ``loss`` (this replica's share of the
      global-batch loss, i.e. what its gradients are the gradient of),
      ``per_example`` (weighted per-example losses), ``y_pred`` and
      ``regularization`` (the model's total regularization loss, unscaled).

    Examples:
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="ones", use_bias=False)])
        >>> x, y = tf.constant([[1.0], [2.0]]), tf.constant([[0.0], [0.0]])
        >>> out = compute_loss_and_gradients(model, keras.losses.MeanSquaredError(), x, y, None,
        ...                                  global_examples=tf.constant(4.0), num_replicas=2)
        >>> float(out["loss"]), out["grads"][0].numpy().tolist()   # (1 + 4) / 4 global examples; (2 + 8) / 4
        (1.25, [[2.5]])
    """
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        values = per_example_loss(loss, y, y_pred, sample_weight)
        regularization = regularization_loss(model, 1)
        replica_loss = tf.reduce_sum(values) / global_examples + regularization / tf.cast(num_replicas, tf.float32)
        scaled_loss = replica_loss if loss_scale is None else replica_loss * tf.cast(loss_scale, tf.float32)
    grads = tape.gradient(scaled_loss, model.trainable_variables)
    if loss_scale is not None:
        grads = [unscale(g, loss_scale) for g in grads]
    return {
        "grads": grads,
        "loss": replica_loss,
        "per_example": values,
        "y_pred": y_pred,
        "regularization": regularization,
    }


def update_metrics(metrics, loss_tracker, y, y_pred, per_example, extra_loss, sample_weight, valid=None) -> None:
    """Update the loss tracker (mean over examples) and the metrics of one replica.

    The metrics are unweighted, as ``compile(metrics=...)``'s: ``sample_weight``
    (already in ``per_example``) weighs the loss only.

    ``valid`` (a scalar bool) masks the update out, used to skip a non-finite step
    without a Python branch.

    Args:
      metrics: the Keras metrics to update with ``(y, y_pred)``.
      loss_tracker: a ``keras.metrics.Mean`` of the loss, or None.
      y: the targets.
      y_pred: the model's outputs.
      per_example: the weighted per-example losses.
      extra_loss: added to each example's loss (the regularization loss).
      sample_weight: the example weights (for a metric that ``uses_sample_weight``), or None.
      valid: a scalar bool tensor; False leaves every metric unchanged (None: True).

    Returns:
      None; the metrics' state is updated.

    Examples:
        >>> mean, acc = keras.metrics.Mean(), keras.metrics.SparseCategoricalAccuracy()
        >>> y, y_pred = tf.constant([0, 1]), tf.constant([[0.9, 0.1], [0.8, 0.2]])
        >>> update_metrics([acc], mean, y, y_pred, tf.constant([0.1, 1.6]), 0.0, None)
        >>> round(float(mean.result()), 4), float(acc.result())
        (0.85, 0.5)
        >>> update_metrics([acc], mean, y, y_pred, tf.constant([9.0, 9.0]), 0.0, None, valid=tf.constant(False))
        >>> round(float(mean.result()), 4), float(acc.result())   # masked out: unchanged
        (0.85, 0.5)
    """
    values = per_example + extra_loss
    if valid is not None:
        values = tf.where(valid, values, tf.zeros_like(values))
    if loss_tracker is not None:
        # Every example counts once (sample weights are already in the values),
        # as in Keras' loss tracker.
        count = tf.ones_like(values)
        if valid is not None:
            count = count * tf.cast(valid, count.dtype)
        loss_tracker.update_state(values, sample_weight=count)
    # As compile(metrics=...): metrics ignore the sample weights (the loss takes them).
    mask = None if valid is None else tf.fill(tf.shape(per_example), tf.cast(valid, tf.float32))
    for metric in metrics:
        if getattr(metric, "uses_sample_weight", False):  # a per-output loss (tfcustom.training.compile_loss.OutputLoss)
            weighted = sample_weight if mask is None else (mask if sample_weight is None else mask * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32))
            metric.update_state(y, y_pred, sample_weight=weighted)
        else:
            metric.update_state(y, y_pred, sample_weight=mask)
