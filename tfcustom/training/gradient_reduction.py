"""Sum the replicas' gradients, clip them by their global norm, check them for NaN/Inf.

Two ways, one interface (`GradientReduction`):

* **packed** (``MirroredStrategy`` / ``MultiWorkerMirroredStrategy`` with a
  Keras TensorFlow optimizer): one replica-context all-reduce of the whole
  gradient list (`tfcustom.distribute.all_reduce.all_reduce_sum`); every replica clips
  and checks its (identical) sum and applies it to its own copy of the
  variables, as Keras' ``fit`` does;
* **per variable** (one replica, TPU, optimizers that transform gradients
  before their own sum): each gradient reduced to one device, the update
  applied once.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from tfcustom.distribute.all_reduce import all_reduce_sum, already_reduced, packed_all_reduce_supported


def all_finite(values):
    """A scalar bool: every tensor of ``values`` (``None`` entries skipped) is finite."""
    flags = [tf.reduce_all(tf.math.is_finite(v)) for v in values if v is not None]
    return tf.reduce_all(tf.stack(flags)) if flags else tf.constant(True)


class GradientReduction:
    """``reduce(replica_fn, batch)`` and ``apply(optimizer, grads)`` for one strategy.

    Args:
      strategy: the ``tf.distribute`` strategy of the step.
      optimizer: the step's optimizer (decides whether the packed way is possible).
      variables: the variables the gradients belong to.
      clip_global_norm: clip the summed gradient to this global norm (None: no clipping).
      after_apply: called with no argument after each ``apply`` (cross-replica
        context), e.g. a weight average's update (`tfcustom.callbacks.weight_averaging`).
    """

    def __init__(self, strategy: tf.distribute.Strategy, optimizer, variables, clip_global_norm: Optional[float] = None,
                 after_apply: Optional[Callable] = None):
        self.strategy = strategy
        self.after_apply = after_apply
        self.variables = variables
        self.clip_global_norm = clip_global_norm
        # Tested on MirroredStrategy and MultiWorkerMirroredStrategy; others (TPU) keep per-variable reduces.
        self.packed = (strategy.num_replicas_in_sync > 1
                       and isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))
                       and packed_all_reduce_supported(optimizer))

    def _clip_and_check(self, grads):
        grad_norm = tf.linalg.global_norm(grads)  # before clipping; reported, changes nothing
        if self.clip_global_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.clip_global_norm, use_norm=grad_norm)
        return grads, all_finite(grads), grad_norm

    def reduce(self, replica_fn, batch):
        """Run ``replica_fn(batch) -> (grads, replica_loss, extra)`` on every
        replica; returns ``(grads, replica_loss, finite, grad_norm, extra)``:
        the summed (clipped) gradients, per-replica values of ``replica_loss``
        and ``extra``, whether the gradients are finite, and their global norm
        before clipping."""
        strategy = self.strategy
        if not self.packed:
            grads, replica_loss, extra = strategy.run(replica_fn, args=(batch,))
            grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
            grads, finite, grad_norm = self._clip_and_check(grads)
            return grads, replica_loss, finite, grad_norm, extra

        def reduced_on_replica(batch):
            grads, replica_loss, extra = replica_fn(batch)
            return (*self._clip_and_check(all_reduce_sum(grads)), replica_loss, extra)

        grads, finite, grad_norm, replica_loss, extra = strategy.run(reduced_on_replica, args=(batch,))
        finite = tf.reduce_all(tf.stack(strategy.experimental_local_results(finite)))
        grad_norm = strategy.experimental_local_results(grad_norm)[0]  # the same on every replica
        return grads, replica_loss, finite, grad_norm, extra

    def apply(self, optimizer, grads) -> None:
        """Apply the summed ``grads`` with ``optimizer`` (on each replica when packed), then ``after_apply``."""
        self._apply(optimizer, grads)
        if self.after_apply is not None:
            self.after_apply()

    def _apply(self, optimizer, grads) -> None:
        if not self.packed:
            optimizer.apply_gradients(zip(grads, self.variables))
            return

        # Each replica applies its copy of the summed gradients to its copy of
        # the variables, in replica context as in Keras' fit; the sum is done.
        def apply_on_replica(replica_grads):
            optimizer.apply_gradients(zip(replica_grads, self.variables))

        with already_reduced(optimizer):
            self.strategy.extended.call_for_each_replica(apply_on_replica, args=(grads,))
