"""Per-replica state of the [`tfcustom.Trainer`][tfcustom.Trainer]: average, gather and set
each replica's copy of the BatchNorm statistics and running train metrics.

Keras creates a model's non-trainable variables with ``aggregation=NONE``, so
under a multi-replica strategy each replica holds its own copy.
`ReplicaStateSync` holds the compiled functions over those copies; the
Trainer mixes it in (it reads the Trainer's ``strategy``, ``model``,
``train_loss``, ``train_metrics``, ``replica_state`` and ``_replica_fns``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.training import steps as steps_lib


class ReplicaStateSync:
    """Mixin of [`tfcustom.Trainer`][tfcustom.Trainer]: the per-replica state functions."""

    def sync_replica_state(self) -> None:
        """Set every replica's copy of the model's non-trainable float variables
        (BatchNormalization moving statistics) to their mean over the replicas.

        Keras creates those variables with ``aggregation=NONE``: under a
        multi-replica strategy each replica updates its own copy from its own
        batches, and the copies drift apart. Without this, evaluation would run
        a different model on each replica, and the saved model (the first
        replica's copy) would not be the one evaluated. The fit loop calls it at
        each epoch end and before each checkpoint; `evaluate` calls it first.
        """
        if self.strategy.num_replicas_in_sync > 1:
            self._replica_functions()["sync"]()

    def _replica_variables(self, group: str) -> list:
        """``"model"``: the model's float non-trainable variables (BatchNorm
        statistics); ``"metrics"``: the running train loss and metrics."""
        if group == "model":
            return steps_lib.replica_state_variables(self.model)
        return [v for m in (self.train_loss, *self.train_metrics) for v in m.variables]

    def _replica_functions(self):
        """Compiled functions over the per-replica state: average the model's,
        gather every replica's copy of a group, set every replica's copy."""
        if self._replica_fns is None:
            strategy = self.strategy
            state = self._replica_variables("model")

            @tf.function
            def sync():
                local = strategy.run(lambda: [tf.identity(v) for v in state])
                for v, value in zip(state, local):
                    v.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))

            def gather_fn(variables):
                @tf.function
                def gather():
                    local = strategy.run(lambda: [tf.expand_dims(tf.identity(v), 0) for v in variables])
                    return [strategy.gather(value, axis=0) for value in local]

                return gather

            def scatter_fn(variables):
                @tf.function
                def scatter(copies):
                    def set_own_copy():
                        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                        for v, c in zip(variables, copies):
                            v.assign(tf.gather(c, replica))

                    strategy.run(set_own_copy)

                return scatter

            self._replica_fns = {"sync": sync if state else (lambda: None)}
            for group in ("model", "metrics"):
                variables = self._replica_variables(group)
                self._replica_fns[group] = (gather_fn(variables), scatter_fn(variables)) if variables else None
        return self._replica_fns

    def _gather_replica_copies(self, groups) -> dict:
        """Every replica's copy of each group's variables (nothing on one replica)."""
        if self.strategy.num_replicas_in_sync == 1:
            return {}
        fns = self._replica_functions()
        return {g: [np.asarray(c) for c in fns[g][0]()] for g in groups if fns[g] is not None}

    def _set_replica_copies(self, copies: dict) -> None:
        fns = self._replica_functions()
        for group, values in copies.items():
            if fns.get(group) is not None:
                fns[group][1]([tf.constant(c) for c in values])

    def _restore_replica_copies(self) -> None:
        """After a restore: give each replica back its own copies kept by the checkpoint."""
        copies, self.replica_state.values = self.replica_state.values, {}
        if not copies:
            return
        replicas = self.strategy.num_replicas_in_sync
        saved = len(next(iter(copies.values()))[0])
        if saved == replicas:
            self._set_replica_copies(copies)
            logging.info("Restored each of the %d replicas' own copies of: %s", replicas,
                         ", ".join({"model": "the BatchNorm statistics", "metrics": "the running train metrics"}[g] for g in sorted(copies)))
        else:
            logging.info("The checkpoint holds per-replica state of %d replicas; training on %d, which start from their total/mean",
                         saved, replicas)
