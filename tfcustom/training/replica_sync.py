"""Per-replica state of the [`tfcustom.Trainer`][tfcustom.Trainer]: average, gather and set
each replica's copy of the BatchNorm statistics and running train metrics.

Keras creates a model's non-trainable variables with ``aggregation=NONE``, so
under a multi-replica strategy each replica holds its own copy.
`ReplicaStateSync` reads and sets those copies (directly when this process
holds every replica, with compiled functions over a cluster); the
Trainer mixes it in (it reads the Trainer's ``strategy``, ``model``,
``train_loss``, ``train_metrics``, ``replica_state`` and ``_replica_fns``),
and saves the training checkpoint with the replicas' state (``_save``).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.training import steps as steps_lib
from tfcustom.training.checkpoint import save_checkpoint


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

    def _all_replicas_local(self) -> bool:
        """True when this process holds every replica (one machine: Mirrored, TPU, one worker)."""
        replicas = self.strategy.num_replicas_in_sync
        return replicas == 1 or len(self.strategy.extended.worker_devices) == replicas  # the default strategy has no worker_devices

    def _local_copies(self, group: str) -> list:
        """Each variable of ``group`` as its per-replica components, in replica order."""
        return [self.strategy.experimental_local_results(v.value if isinstance(v, keras.Variable) else v)
                for v in self._replica_variables(group)]

    def _gather_replica_copies(self, groups) -> dict:
        """Every replica's copy of each group's variables (nothing on one replica).

        When this process holds every replica the copies are read directly (no
        compiled all-gather, whose graph grows with the square of the replicas);
        over a cluster each worker takes part in the gather."""
        if self.strategy.num_replicas_in_sync == 1:
            return {}
        if self._all_replicas_local():
            copies = {g: [np.stack([np.asarray(c) for c in parts]) for parts in self._local_copies(g)] for g in groups}
            return {g: values for g, values in copies.items() if values}
        fns = self._replica_functions()
        return {g: [np.asarray(c) for c in fns[g][0]()] for g in groups if fns[g] is not None}

    def _set_replica_copies(self, copies: dict) -> None:
        if self._all_replicas_local():
            for group, values in copies.items():
                for parts, value in zip(self._local_copies(group), values):
                    for replica, part in enumerate(parts):
                        part.assign(value[replica])
            return
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

    def _save(self, manager, reason: str, scheduled: bool = True) -> None:
        """Save a checkpoint. ``scheduled`` saves (epoch ends, every N steps)
        happen at the same steps in every run, and average the replicas' state
        first, as the uninterrupted run does there. Any other save (SIGTERM,
        preemption) also keeps each replica's own copy in the checkpoint, and
        this process's copies stay as they were."""
        step = int(self.global_step.numpy())
        if step == self._last_saved_step:
            return  # this step is already saved (a periodic save, then a stop)
        if self.summary_writer is not None:
            self.summary_writer.flush()  # every summary up to the checkpoint's step is on disk
        copies = self._gather_replica_copies(("metrics",) if scheduled else ("metrics", "model"))
        self.replica_state.values = copies
        self.sync_replica_state()
        path = save_checkpoint(manager, step)  # a full disk: one line, its temporaries removed
        self._set_replica_copies({k: v for k, v in copies.items() if k == "model"})  # as before the averaging
        self.replica_state.values = {}
        self._last_saved_step = step
        # One line per epoch by default: the routine end-of-epoch save shows with --verbosity=1.
        logging.log(logging.DEBUG if reason == "end of epoch" else logging.INFO,
                    "Saved checkpoint %s (%s; global step %d, %d epochs and %d steps done)", path, reason,
                    step, int(self.epoch.numpy()), int(self.step_in_epoch.numpy()))
