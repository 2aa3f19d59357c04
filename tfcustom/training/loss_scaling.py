"""The dynamic loss scale of mixed float16, kept by the step.

When the optimizer is a ``keras.optimizers.LossScaleOptimizer``, the step
takes the gradient of ``loss * scale`` (so that small float16 gradients do
not underflow), unscales it, and does the scaler's bookkeeping itself, as
Keras does: a step whose loss is finite but whose gradients overflowed is
skipped and the scale halved; after ``dynamic_growth_steps`` finite steps in
a row the scale doubles. The update is applied by the inner optimizer, so the
step's own exact gradient reduction (`tfcustom.training.gradient_reduction`)
is used under every strategy.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class LossScaling:
    """The loss-scale bookkeeping of ``optimizer`` (inactive for any other optimizer)."""

    def __init__(self, optimizer):
        self.scaler = optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None
        self.optimizer = optimizer if self.scaler is None else self.scaler.inner_optimizer

    @property
    def active(self) -> bool:
        return self.scaler is not None

    def scale(self):
        """The current scale (a tensor), or None when inactive."""
        return None if self.scaler is None else tf.convert_to_tensor(self.scaler.dynamic_scale)

    def overflow(self, loss_finite, finite):
        """A scalar bool: the gradients overflowed while the loss was finite (always False when inactive)."""
        return tf.constant(False) if self.scaler is None else tf.logical_and(loss_finite, tf.logical_not(finite))

    def after_applied(self) -> None:
        """A finite step was applied: count it; double the scale after ``dynamic_growth_steps`` of them."""
        if self.scaler is None:
            return
        grow = tf.equal(tf.convert_to_tensor(self.scaler.step_counter), self.scaler.dynamic_growth_steps - 1)
        tf.cond(grow, self._grow, self._count)

    def after_skipped(self, overflow) -> None:
        """A step was skipped: halve the scale and restart the count if it overflowed."""
        if self.scaler is None:
            return
        scale = tf.convert_to_tensor(self.scaler.dynamic_scale)
        counter = tf.convert_to_tensor(self.scaler.step_counter)
        self.scaler.dynamic_scale.assign(tf.where(overflow, scale * 0.5, scale))
        self.scaler.step_counter.assign(tf.where(overflow, tf.zeros_like(counter), counter))

    def _grow(self):
        self.scaler.step_counter.assign(0)
        self.scaler.dynamic_scale.assign(self.scaler.dynamic_scale * 2.0)
        return tf.no_op()

    def _count(self):
        self.scaler.step_counter.assign_add(1)
        return tf.no_op()


def unscale(grad, loss_scale):
    """``grad / loss_scale`` (dense or ``tf.IndexedSlices``; ``None`` kept)."""
    if grad is None:
        return None
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(grad.values / tf.cast(loss_scale, grad.values.dtype), grad.indices, grad.dense_shape)
    return grad / tf.cast(loss_scale, grad.dtype)
