"""The train, test and predict steps: one GradientTape implementation for every strategy.

Read this file top to bottom to see exactly what one training step computes:

1. Each replica takes its batch ``(x, y[, sample_weight])`` and the **global**
   number of examples in the step (an all-reduce of the replicas' batch sizes).
2. [`compute_loss_and_gradients`][tfcustom.training.replica_step.compute_loss_and_gradients] runs the forward pass with
   ``training=True`` under a ``tf.GradientTape``; the loss is
   ``sum(per_example_loss * sample_weight) / global_examples`` plus the model's
   regularization losses divided by the replica count, so that summing the
   replicas' gradients gives the gradient of the global-batch mean loss, on one
   device or on many. This part may be XLA-compiled (``jit_compile``).
3. The replicas' gradients are summed by one packed all-reduce in replica
   context (`all_reduce_sum`: every replica receives the sum), optionally
   clipped by their global norm and checked for NaN/Inf on each replica, and
   applied by the optimizer to each replica's copy of the variables.
4. Metrics are updated per replica (their variables sum across replicas on read).

``make_train_step`` composes the pieces of `tfcustom.training`, one concept
per module: `gradient_reduction` (3., packed or per variable behind one
interface), `loss_scaling` (mixed float16), `replica_state` (undoing a
skipped step), `loop_fns` (several steps per call) and `input_wait`. Its
``train_step(batch)`` reads top to bottom: snapshot the state, forward and
backward on each replica, reduce, clip and check, apply or skip, metrics.

``make_train_step`` returns a ``tf.function`` that runs up to
``steps_per_execution`` such steps from a (distributed) iterator in one call.
The Trainer uses exactly these functions; a custom loop can too:

>>> step = make_train_step(model, loss, optimizer, metrics=[acc], loss_tracker=mean)
>>> out = step(iter(dataset), tf.constant(1))
>>> float(out["loss"])
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

from tfcustom.training.checked_step import NONFINITE_POLICIES, CheckedStep, check_step_args  # noqa: F401  (public here too)
from tfcustom.training import input_wait
from tfcustom.training.gradient_reduction import GradientReduction
from tfcustom.training.loop_fns import multi_step_loop
from tfcustom.training.loss_scaling import LossScaling
from tfcustom.training.replica_state import ReplicaState, replica_state_variables  # noqa: F401  (public here too)
from tfcustom.training.replica_step import (  # noqa: F401  (public here too)
    compute_loss_and_gradients, per_example_loss, regularization_loss, unpack_batch, update_metrics)
from tfcustom.training.rollback import NO_DIVERGENCE


def _global_examples(y):
    """All-reduce (sum over replicas) of this replica's batch size, as float32."""
    local = tf.cast(tf.shape(tf.nest.flatten(y)[0])[0], tf.float32)
    ctx = tf.distribute.get_replica_context()
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)


def make_train_step(
    model: keras.Model,
    loss: keras.losses.Loss,
    optimizer: keras.optimizers.Optimizer,
    metrics: Sequence[keras.metrics.Metric] = (),
    *,
    loss_tracker: Optional[keras.metrics.Mean] = None,
    strategy: Optional[tf.distribute.Strategy] = None,
    clip_global_norm: Optional[float] = None,
    jit_compile: bool = False,
    on_nonfinite: str = "stop",
    gradient_fn: Callable = compute_loss_and_gradients,
    after_update: Optional[Callable] = None,
    divergence=None,
) -> Callable:
    """Build the compiled training step ``train_step(iterator, num_steps)``.

    Args:
      model: the Keras model, built under ``strategy.scope()``.
      loss: a ``keras.losses.Loss`` (its per-example values are used).
      optimizer: a Keras optimizer, created under the scope.
      metrics: updated with each step's batch.
      loss_tracker: a ``keras.metrics.Mean`` of the loss.
      strategy: default: the current one.
      clip_global_norm: clip the summed gradient to this global norm.
      jit_compile: XLA-compile each replica's forward and backward pass.
      on_nonfinite: ``"stop"`` or ``"skip"`` a step with a NaN/Inf loss or gradient; ``"rollback"``
        stops there too, for the caller to roll back (`tfcustom.training.rollback`).
      gradient_fn: replaces [`compute_loss_and_gradients`][tfcustom.training.replica_step.compute_loss_and_gradients].
      after_update: called (no argument, cross-replica context) in the compiled step after each update
        applied, not a skipped one: e.g. a [`tfcustom.callbacks.ExponentialMovingAverage`][tfcustom.callbacks.ExponentialMovingAverage]'s ``update``.
      divergence: a [`tfcustom.training.rollback.Rollback`][tfcustom.training.rollback.Rollback]: its loss-spike rule and skip list, per step.

    Returns:
      ``train_step(iterator, num_steps)``, described below.

    Examples:
        >>> import numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        >>> step = make_train_step(model, loss, keras.optimizers.SGD(0.1))
        >>> data = tf.data.Dataset.from_tensor_slices((np.ones((8, 3), "float32"), np.zeros(8, "int64")))
        >>> out = step(iter(data.batch(4).repeat()), 3)  # 3 steps in one call
        >>> int(out["steps_run"]), bool(out["nonfinite"])
        (3, False)

    ``train_step(iterator, num_steps)`` runs ``num_steps`` (a scalar
    integer tensor or a Python int, passed to the ``tf.function`` as an int32
    tensor so that changing it does not retrace) steps from ``iterator``
    (``iter(dataset)``; the batches come from it, so the tutorial's
    ``train_step(x, y)`` is refused with a one-line error saying this) and
    returns a dict of tensors:

    * ``loss``: global-batch loss of the last step run;
    * ``replica_losses``: a [num_replicas] vector, each replica's share of the
      last step's loss (they sum to ``loss``);
    * ``steps_run``: number of updates applied;
    * ``nonfinite``: True if a step met a NaN/Inf loss or gradient;
    * ``skipped``: number of steps skipped because of NaN/Inf (policy ``skip``);
    * ``skip_listed``: steps of the skip list (``divergence``) consumed, not applied;
    * ``loss_scale_skipped``: steps the loss-scale optimizer skipped (below);
    * ``grad_norm``: global norm of the last step's summed gradient, before clipping;
    * ``input_wait_s``: seconds (float64) the steps spent waiting for their
      batches (``tf.timestamp`` around ``next(iterator)``); absent under
      ``tf.config.experimental.enable_op_determinism()``, which refuses
      ``tf.timestamp``.

    A non-finite step is never applied: the gradients are dropped and the
    state the forward pass changed (BatchNorm statistics) is put back. With
    ``on_nonfinite="stop"`` the loop also ends at that step.

    Mixed float16: when ``optimizer`` is a ``keras.optimizers.LossScaleOptimizer``
    the step passes its current ``dynamic_scale`` to ``gradient_fn`` as
    ``loss_scale`` (the gradients come back unscaled) and does the loss
    scaler's bookkeeping itself: a step whose loss is finite but whose
    gradients overflowed is skipped (state put back, metrics not updated) and
    the scale halved, without counting as a non-finite step: such steps are
    counted in ``steps_run`` (their batch was consumed) and in
    ``loss_scale_skipped``. A finite step is applied by the inner optimizer,
    and the scale doubles after ``dynamic_growth_steps`` finite steps in a row,
    as in Keras. A non-finite *loss* is still handled by ``on_nonfinite``.
    """
    check_step_args(on_nonfinite, clip_global_norm, optimizer, gradient_fn)
    strategy = _build_optimizer(optimizer, model, strategy or tf.distribute.get_strategy())
    grad_impl = tf.function(gradient_fn, jit_compile=True) if jit_compile else gradient_fn
    reduction = GradientReduction(strategy, optimizer, model.trainable_variables, clip_global_norm, after_apply=after_update)
    scaling, num_replicas = LossScaling(optimizer), strategy.num_replicas_in_sync
    state, guard = ReplicaState(model), divergence or NO_DIVERGENCE

    def replica_grads(batch):  # on each replica: forward and backward
        x, y, sw = unpack_batch(batch)
        global_examples = _global_examples(y)
        scale = {} if not scaling.active else {"loss_scale": scaling.scale()}
        out = grad_impl(model, loss, x, y, sw, global_examples, num_replicas, **scale)
        metric_args = (y, out["y_pred"], out["per_example"], out["regularization"], sw)
        return out["grads"], tf.reshape(out["loss"], [1]), metric_args

    replica_metrics = functools.partial(update_metrics, list(metrics), loss_tracker)

    def apply(grads):
        reduction.apply(scaling.optimizer, grads)
        scaling.after_applied()
        return tf.no_op()

    def skip(state_before, overflow):
        state.restore(state_before)  # a skipped step leaves no trace, BatchNorm statistics included
        scaling.after_skipped(overflow)
        return tf.no_op()

    def train_step(batch, offset):
        state_before = state.snapshot()
        grads, replica_loss, grads_finite, grad_norm, metric_args = reduction.reduce(replica_grads, batch)
        replica_losses = tf.reshape(strategy.gather(replica_loss, axis=0), [num_replicas])
        loss_value = tf.reduce_sum(replica_losses)
        loss_finite = tf.math.is_finite(loss_value)
        finite = tf.logical_and(grads_finite, loss_finite)
        overflow = scaling.overflow(loss_finite, finite)  # a finite loss, overflowed gradients: the loss scaler's case
        spike, listed = guard.judge(offset, loss_value)  # rollback: a loss spike diverges; a listed step is read, not applied
        overflow, applied = overflow & ~(spike | listed), finite & ~(spike | listed)
        tf.cond(applied, lambda: apply(grads), lambda: skip(state_before, overflow))
        guard.observe(loss_value, applied)
        finite = (loss_finite if scaling.active else finite) & ~spike
        strategy.run(replica_metrics, args=metric_args + (finite & ~overflow & ~listed,))
        return loss_value, replica_losses, finite, overflow, grad_norm, listed

    return CheckedStep(multi_step_loop(train_step, num_replicas, stop_on_nonfinite=on_nonfinite != "skip"))


def _build_optimizer(optimizer, model, strategy):
    """Build the optimizer's slots (before the first traced step, under the strategy); return the strategy."""
    if not optimizer.built:
        with strategy.scope():
            optimizer.build(model.trainable_variables)
    return strategy


def op_determinism_enabled() -> bool:
    """Whether ``tf.config.experimental.enable_op_determinism()`` is in effect (no public getter).

    Returns:
      True under op determinism (the steps then do not measure their input wait).

    Examples:
        >>> from tensorflow.python.framework import config as framework_config   # TF's private switch back
        >>> was = op_determinism_enabled()
        >>> tf.config.experimental.enable_op_determinism()
        >>> op_determinism_enabled()
        True
        >>> framework_config.disable_op_determinism()
        >>> op_determinism_enabled()
        False
        >>> if was:
        ...     tf.config.experimental.enable_op_determinism()
    """
    return not input_wait.measured()


def make_test_step(
    model: keras.Model,
    loss: keras.losses.Loss,
    metrics: Sequence[keras.metrics.Metric] = (),
    *,
    loss_tracker: Optional[keras.metrics.Mean] = None,
    strategy: Optional[tf.distribute.Strategy] = None,
) -> Callable:
    """Build the compiled evaluation loop ``test_loop(iterator)``.

    Args:
      model: the Keras model.
      loss: a ``keras.losses.Loss``.
      metrics: updated (reset them first).
      loss_tracker: a ``keras.metrics.Mean``: the exact mean loss.
      strategy: default: the current one.

    Returns:
      ``test_loop(iterator)``, which reads the (distributed) iterator to its end
    in one ``tf.function`` call and, per replica, updates ``loss_tracker``
    (an exact mean over examples) and ``metrics`` with ``training=False``.
    Partial final batches are kept, so under any number of replicas the
    counts equal the single-device ones. It returns the number of steps run.

    Examples:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, kernel_initializer="zeros")])
        >>> mean = keras.metrics.Mean()
        >>> loop = make_test_step(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), loss_tracker=mean)
        >>> data = tf.data.Dataset.from_tensor_slices((tf.ones((5, 2)), tf.zeros(5, "int64"))).batch(2)
        >>> int(loop(iter(data))), round(float(mean.result()), 4)  # 3 batches (2 + 2 + 1); log(2)
        (3, 0.6931)
    """
    strategy = strategy or tf.distribute.get_strategy()
    metrics = list(metrics)

    def replica_fn(batch):
        x, y, sw = unpack_batch(batch)
        y_pred = model(x, training=False)
        values = per_example_loss(loss, y, y_pred, sw)
        update_metrics(metrics, loss_tracker, y, y_pred, values, 0.0, sw)

    @tf.function
    def test_loop(iterator):
        steps = tf.constant(0)
        while tf.constant(True):
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                break
            strategy.run(replica_fn, args=(optional.get_value(),))
            steps += 1
        return steps

    return test_loop


def make_predict_step(model: keras.Model) -> Callable:
    """Build ``predict_loop(iterator)``: the model's outputs (``training=False``) in input order.

    Args:
      model: the Keras model.

    Returns:
      ``predict_loop(iterator)``: every batch's outputs concatenated (a dict/list of them, as ``model.predict``).

    Examples:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> loop = make_predict_step(model)
        >>> loop(iter(tf.data.Dataset.from_tensor_slices(tf.ones((5, 2))).batch(2))).shape
        TensorShape([5, 3])

    It runs on the local device (mirrored variables read from the local copy) over the unsharded
    input, so outputs keep the input order under any strategy; one call reads the iterator, traced once.
    """

    def forward(batch):  # a dict or list of outputs for a multi-output model
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), model(x, training=False))

    @tf.function
    def predict_loop(iterator):
        new_array = functools.partial(tf.TensorArray, tf.float32, size=0, dynamic_size=True, infer_shape=False)
        outputs = tf.nest.map_structure(lambda t: new_array().write(0, t), forward(iterator.get_next()))
        i = tf.constant(1)
        while tf.constant(True):
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                break
            outputs = tf.nest.map_structure(lambda array, t: array.write(i, t), outputs, forward(optional.get_value()))
            i += 1
        return tf.nest.map_structure(lambda array: array.concat(), outputs)

    return predict_loop
