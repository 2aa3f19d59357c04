"""The train, test and predict steps: one GradientTape implementation for every strategy.

Read this file top to bottom to see exactly what one training step computes:

1. Each replica takes its batch ``(x, y[, sample_weight])`` and the **global**
   number of examples in the step (an all-reduce of the replicas' batch sizes).
2. [`compute_loss_and_gradients`][tfcustom.steps.compute_loss_and_gradients] runs the forward pass with
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

``make_train_step`` returns a ``tf.function`` that runs up to
``steps_per_execution`` such steps from a (distributed) iterator in one call.
The Trainer uses exactly these functions; a custom loop can too:

>>> step = make_train_step(model, loss, optimizer, metrics=[acc], loss_tracker=mean)
>>> out = step(iter(dataset), tf.constant(1))
>>> float(out["loss"])
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

from tfcustom.all_reduce import all_reduce_sum, already_reduced, packed_all_reduce_supported
from tfcustom.checked_step import CheckedStep
from tfcustom.errors import check, check_one_of

NONFINITE_POLICIES = ("stop", "skip")


def unpack_batch(batch):
    """``(x, y)`` or ``(x, y, sample_weight)`` -> ``(x, y, sample_weight or None)``."""
    if isinstance(batch, dict):
        return batch["x"], batch["y"], batch.get("sample_weight")
    if len(batch) == 2:
        return batch[0], batch[1], None
    return batch[0], batch[1], batch[2]


def per_example_loss(loss: keras.losses.Loss, y, y_pred, sample_weight=None):
    """Per-example loss values (shape [batch]), weighted by ``sample_weight``.

    ``loss.call`` is a Keras loss' unreduced computation; reduction is done by
    the step so that it is over the *global* batch.
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
    """The model's ``losses`` (weight penalties etc.), divided by the replica count."""
    if not model.losses:
        return tf.constant(0.0)
    total = tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
    return total / tf.cast(num_replicas, tf.float32)


def compute_loss_and_gradients(model, loss, x, y, sample_weight, global_examples, num_replicas, loss_scale=None):
    """Forward and backward pass of one replica.

    Returns a dict with ``grads`` (list aligned with
    ``model.trainable_variables``), ``loss`` (this replica's share of the
    global-batch loss, i.e. what its gradients are the gradient of),
    ``per_example`` (weighted per-example losses), ``y_pred`` and
    ``regularization`` (the model's total regularization loss, unscaled).

    ``loss_scale`` (mixed float16, given by the step when the optimizer is a
    ``keras.optimizers.LossScaleOptimizer``): the gradient is taken of
    ``loss * loss_scale`` so that small float16 gradients do not underflow,
    then divided by ``loss_scale``; an overflow shows up as Inf/NaN in
    ``grads``.

    This is the default ``gradient_fn`` of [`make_train_step`][tfcustom.make_train_step]; a variant
    (e.g. [`tfcustom.sam.SAM`][tfcustom.sam.SAM]) takes the same arguments and returns the
    same dict.
    """
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        values = per_example_loss(loss, y, y_pred, sample_weight)
        regularization = regularization_loss(model, 1)
        replica_loss = tf.reduce_sum(values) / global_examples + regularization / tf.cast(num_replicas, tf.float32)
        scaled_loss = replica_loss if loss_scale is None else replica_loss * tf.cast(loss_scale, tf.float32)
    grads = tape.gradient(scaled_loss, model.trainable_variables)
    if loss_scale is not None:
        grads = [_unscale(g, loss_scale) for g in grads]
    return {
        "grads": grads,
        "loss": replica_loss,
        "per_example": values,
        "y_pred": y_pred,
        "regularization": regularization,
    }


def replica_state_variables(model: keras.Model) -> list:
    """The model's float non-trainable variables (BatchNormalization moving
    statistics): state the forward pass changes, per replica under a strategy."""
    return [v for v in model.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]


def _unscale(grad, loss_scale):
    if grad is None:
        return None
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(grad.values / tf.cast(loss_scale, grad.values.dtype), grad.indices, grad.dense_shape)
    return grad / tf.cast(loss_scale, grad.dtype)


def _global_examples(y):
    """All-reduce (sum over replicas) of this replica's batch size, as float32."""
    local = tf.cast(tf.shape(tf.nest.flatten(y)[0])[0], tf.float32)
    ctx = tf.distribute.get_replica_context()
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)


def update_metrics(metrics, loss_tracker, y, y_pred, per_example, extra_loss, sample_weight, valid=None):
    """Update the loss tracker (mean over examples) and the metrics of one replica.

    The metrics are unweighted, as ``compile(metrics=...)``'s: ``sample_weight``
    (already in ``per_example``) weighs the loss only.

    ``valid`` (a scalar bool) masks the update out, used to skip a non-finite step
    without a Python branch.
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
        if getattr(metric, "uses_sample_weight", False):  # a per-output loss (tfcustom.compile_loss.OutputLoss)
            weighted = sample_weight if mask is None else (mask if sample_weight is None else mask * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32))
            metric.update_state(y, y_pred, sample_weight=weighted)
        else:
            metric.update_state(y, y_pred, sample_weight=mask)


def _all_finite(values):
    flags = [tf.reduce_all(tf.math.is_finite(v)) for v in values if v is not None]
    return tf.reduce_all(tf.stack(flags)) if flags else tf.constant(True)


def op_determinism_enabled() -> bool:
    """Whether ``tf.config.experimental.enable_op_determinism()`` is in effect (no public getter)."""
    from tensorflow.python.framework import config as framework_config

    return bool(framework_config.is_op_determinism_enabled())


def _seconds_since(start, batch):
    """Seconds from ``start`` (a ``tf.timestamp``) until ``batch``'s tensors exist."""
    with tf.control_dependencies(tf.nest.flatten(batch, expand_composites=True)):
        return tf.timestamp() - start


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
) -> Callable:
    """Build the compiled training step.

    Returns ``train_step(iterator, num_steps)``: runs ``num_steps`` (a scalar
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
    check_one_of("on_nonfinite policy", on_nonfinite, NONFINITE_POLICIES)
    check(
        clip_global_norm is None or clip_global_norm > 0,
        "clip_global_norm must be positive",
        clip_global_norm,
        "pass a positive norm or None to disable clipping",
    )
    strategy = strategy or tf.distribute.get_strategy()
    metrics = list(metrics)
    if not optimizer.built:
        # Slots must exist before the first traced step (and under the strategy).
        with strategy.scope():
            optimizer.build(model.trainable_variables)
    scaler = optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None
    check(
        scaler is None or "loss_scale" in inspect.signature(gradient_fn).parameters,
        "mixed_float16 loss scaling needs a gradient_fn that takes a loss_scale argument",
        getattr(gradient_fn, "__name__", type(gradient_fn).__name__),
        "add loss_scale=None to the gradient function (see tfcustom.steps.compute_loss_and_gradients), "
        "or train in float32 / mixed_bfloat16",
    )
    grad_impl = tf.function(gradient_fn, jit_compile=True) if jit_compile else gradient_fn
    variables = model.trainable_variables
    state_variables = replica_state_variables(model)
    num_replicas = strategy.num_replicas_in_sync
    # Tested on MirroredStrategy and MultiWorkerMirroredStrategy; others (TPU) keep per-variable reduces.
    packed = (num_replicas > 1 and isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))
              and packed_all_reduce_supported(optimizer))

    def replica_grads(batch):
        x, y, sw = unpack_batch(batch)
        ctx = tf.distribute.get_replica_context()
        global_examples = _global_examples(y)
        if scaler is None:
            out = grad_impl(model, loss, x, y, sw, global_examples, ctx.num_replicas_in_sync)
        else:
            loss_scale = tf.convert_to_tensor(scaler.dynamic_scale)
            out = grad_impl(model, loss, x, y, sw, global_examples, ctx.num_replicas_in_sync, loss_scale=loss_scale)
        metric_args = (y, out["y_pred"], out["per_example"], out["regularization"], sw)
        return out["grads"], tf.reshape(out["loss"], [1]), metric_args

    def replica_metrics(y, y_pred, per_example, reg, sw, valid):
        update_metrics(metrics, loss_tracker, y, y_pred, per_example, reg, sw, valid)

    def replica_reduced_grads(batch):
        # Replica context: one packed all-reduce of every gradient, then the
        # clipping and the NaN/Inf check on each replica's (identical) sum.
        grads, replica_loss, metric_args = replica_grads(batch)
        grads = all_reduce_sum(grads)
        grad_norm = tf.linalg.global_norm(grads)  # before clipping; reported, changes nothing
        if clip_global_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, clip_global_norm, use_norm=grad_norm)
        return grads, replica_loss, _all_finite(grads), grad_norm, metric_args

    def one_step(iterator):
        if not measure_wait:  # tf.timestamp is refused under op determinism
            return _step(next(iterator)) + (tf.constant(0.0, tf.float64),)
        start = tf.timestamp()
        with tf.control_dependencies([start]):
            batch = next(iterator)
        return _step(batch) + (_seconds_since(start, batch),)  # + time blocked on the input pipeline

    def _step(batch):
        # The forward pass also updates state (BatchNorm statistics); keep a copy
        # so that a non-finite step can be undone completely.
        state_before = [tf.identity(v) for v in state_variables]
        if packed:
            grads, replica_loss, grads_finite, grad_norm, metric_args = strategy.run(replica_reduced_grads, args=(batch,))
            grads_finite = tf.reduce_all(tf.stack(strategy.experimental_local_results(grads_finite)))
            grad_norm = strategy.experimental_local_results(grad_norm)[0]  # the same on every replica
        else:
            grads, replica_loss, metric_args = strategy.run(replica_grads, args=(batch,))
            grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
            grad_norm = tf.linalg.global_norm(grads)  # before clipping; reported, changes nothing
            if clip_global_norm is not None:
                grads, _ = tf.clip_by_global_norm(grads, clip_global_norm, use_norm=grad_norm)
            grads_finite = _all_finite(grads)
        replica_losses = tf.reshape(strategy.gather(replica_loss, axis=0), [num_replicas])
        loss_value = tf.reduce_sum(replica_losses)
        loss_finite = tf.math.is_finite(loss_value)
        finite = tf.logical_and(grads_finite, loss_finite)
        if scaler is None:
            tf.cond(finite, lambda: _apply(grads), lambda: _restore(state_before))
            overflow = tf.constant(False)
        else:
            # Gradients overflowed with a finite loss: the loss scaler's case
            # (halve the scale, skip), not the non-finite policy's.
            overflow = tf.logical_and(loss_finite, tf.logical_not(finite))
            tf.cond(finite, lambda: _apply_scaled(grads), lambda: _restore(state_before, halve_scale=overflow))
            finite = loss_finite
        strategy.run(replica_metrics, args=metric_args + (tf.logical_and(finite, tf.logical_not(overflow)),))
        return loss_value, replica_losses, finite, overflow, grad_norm

    def _apply(grads):
        _apply_gradients(optimizer, grads)
        return tf.no_op()

    def _apply_gradients(opt, grads):
        if not packed:
            opt.apply_gradients(zip(grads, variables))
            return
        # Each replica applies its copy of the summed gradients to its copy of
        # the variables, in replica context as in Keras' fit; the sum is done.
        def apply_on_replica(replica_grads):
            opt.apply_gradients(zip(replica_grads, variables))

        with already_reduced(opt):
            strategy.extended.call_for_each_replica(apply_on_replica, args=(grads,))

    def _apply_scaled(grads):
        # `grads` are already unscaled: apply them with the inner optimizer and
        # grow the scale as keras.optimizers.LossScaleOptimizer does.
        _apply_gradients(scaler.inner_optimizer, grads)
        grow = tf.equal(tf.convert_to_tensor(scaler.step_counter), scaler.dynamic_growth_steps - 1)
        tf.cond(grow, _grow_scale, _count_finite_step)
        return tf.no_op()

    def _grow_scale():
        scaler.step_counter.assign(0)
        scaler.dynamic_scale.assign(scaler.dynamic_scale * 2.0)
        return tf.no_op()

    def _count_finite_step():
        scaler.step_counter.assign_add(1)
        return tf.no_op()

    def _restore(values, halve_scale=None):
        for v, value in zip(state_variables, values):
            v.assign(value)
        if halve_scale is not None:
            scale = tf.convert_to_tensor(scaler.dynamic_scale)
            counter = tf.convert_to_tensor(scaler.step_counter)
            scaler.dynamic_scale.assign(tf.where(halve_scale, scale * 0.5, scale))
            scaler.step_counter.assign(tf.where(halve_scale, tf.zeros_like(counter), counter))
        return tf.no_op()

    stop_on_nonfinite = on_nonfinite == "stop"
    measure_wait = not op_determinism_enabled()

    @tf.function
    def compiled_train_step(iterator, num_steps):
        loss_value = tf.constant(0.0)
        replica_losses = tf.zeros([num_replicas])
        steps_run = tf.constant(0)
        skipped = tf.constant(0)
        nonfinite = tf.constant(False)
        loss_scale_skipped = tf.constant(0)
        grad_norm = tf.constant(0.0)
        input_wait_s = tf.constant(0.0, tf.float64)
        for _ in tf.range(num_steps):
            loss_value, replica_losses, finite, overflow, grad_norm, wait = one_step(iterator)
            input_wait_s += wait
            if finite:
                steps_run += 1
                loss_scale_skipped += tf.cast(overflow, tf.int32)
            else:
                nonfinite = tf.constant(True)
                skipped += 1
                if stop_on_nonfinite:
                    break
        return {
            "loss": loss_value,
            "replica_losses": replica_losses,
            "steps_run": steps_run,
            "skipped": skipped,
            "nonfinite": nonfinite,
            "loss_scale_skipped": loss_scale_skipped,
            "grad_norm": grad_norm,
            **({"input_wait_s": input_wait_s} if measure_wait else {}),
        }

    return CheckedStep(compiled_train_step)


def make_test_step(
    model: keras.Model,
    loss: keras.losses.Loss,
    metrics: Sequence[keras.metrics.Metric] = (),
    *,
    loss_tracker: Optional[keras.metrics.Mean] = None,
    strategy: Optional[tf.distribute.Strategy] = None,
) -> Callable:
    """Build the compiled evaluation loop.

    Returns ``test_loop(iterator)``: reads the (distributed) iterator to its end
    in one ``tf.function`` call and, per replica, updates ``loss_tracker``
    (an exact mean over examples) and ``metrics`` with ``training=False``.
    Partial final batches are kept, so under any number of replicas the
    counts equal the single-device ones. Returns the number of steps run.
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
    """Build ``predict_loop(iterator)``: the model's outputs (``training=False``)
    for every batch of ``iterator``, concatenated in input order.

    Prediction runs on the local device (mirrored variables are read from the
    local copy) over the unsharded input, so outputs keep the input order under
    any strategy. One call reads the whole iterator; traced once.
    """

    @tf.function
    def predict_loop(iterator):
        outputs = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False)
        i = tf.constant(0)
        while tf.constant(True):
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                break
            batch = optional.get_value()
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            outputs = outputs.write(i, tf.cast(model(x, training=False), tf.float32))
            i += 1
        return outputs.concat()

    return predict_loop
