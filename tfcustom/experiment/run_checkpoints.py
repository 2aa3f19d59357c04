"""The checkpoints of a training run, across its processes.

Every worker restores from the chief's ``<workdir>/checkpoints``; a non-chief
worker writes its part of each (collective) save to a temporary directory of
its own, deleted at the end. [`RunCheckpoints`][tfcustom.experiment.run_checkpoints.RunCheckpoints]
holds the three managers the Trainer's loop uses (periodic / epoch, the best
epoch's model, and the one it restores from) and resumes a run from them.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.distribute.preemption import is_cluster
from tfcustom.errors import check
from tfcustom.experiment.run_files import BEST_SUBDIR, CHECKPOINT_DIR
from tfcustom.training.checkpoint import check_index, model_checkpoint, restore_latest, training_checkpoint
from tfcustom.training.history import History


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def check_workers_agree(strategy: tf.distribute.Strategy, trainer) -> None:
    """On a cluster, refuse to train unless every worker restored the same step.

    Workers that disagree would run different epochs and wait for each other
    in the collectives for ever; the usual cause is an output directory that
    is not one filesystem shared by all workers.
    """
    if not is_cluster(strategy):
        return
    step = trainer.global_step

    @tf.function
    def gather_steps():
        return strategy.gather(strategy.run(lambda: tf.reshape(tf.cast(step, tf.float64), [1])), axis=0)

    steps = sorted({int(v) for v in np.asarray(gather_steps())})
    check(len(steps) == 1, "the workers restored different checkpoints", f"global steps {steps}",
          "give every worker the same --output_dir on a filesystem they all see (the chief's checkpoints are read by all)")


def checkpoint_dir(workdir: str, strategy: tf.distribute.Strategy) -> str:
    """Where this process writes checkpoints: ``<workdir>/checkpoints`` for the
    chief; a per-worker temporary directory for the other workers (their
    writes only take part in the collective save, as TF requires)."""
    chief_dir = os.path.join(workdir, CHECKPOINT_DIR)
    if is_chief(strategy):
        return chief_dir
    resolver = strategy.cluster_resolver
    return os.path.join(chief_dir, f"tmp_{resolver.task_type}_{resolver.task_id}")


class RunCheckpoints:
    """The run's checkpoint managers: ``manager`` (the training state, every
    ``checkpoint_every_steps`` and epoch), ``best_manager`` (the model of the
    best ``--monitor`` epoch) and, for a non-chief worker, the chief's manager
    it restores from.

    Args:
      trainer: the run's [`Trainer`][tfcustom.Trainer].
      early_stopping: its [`EarlyStopping`][tfcustom.callbacks.early_stopping.EarlyStopping] (its best value is saved too).
      workdir: the run directory.
      strategy: the run's strategy (chief or worker).
      keep: how many training checkpoints to keep (``--keep_checkpoints``).
    """

    def __init__(self, trainer, early_stopping, workdir: str, strategy: tf.distribute.Strategy, keep: Optional[int]):
        self.trainer, self.workdir, self.strategy = trainer, workdir, strategy
        self.directory = checkpoint_dir(workdir, strategy)
        self.checkpoint = training_checkpoint(trainer, early_stopping)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=keep)
        self.read_manager = self.manager if is_chief(strategy) else tf.train.CheckpointManager(
            self.checkpoint, os.path.dirname(self.directory), max_to_keep=None)  # the chief's
        self.best_manager = tf.train.CheckpointManager(model_checkpoint(trainer.model), os.path.join(self.directory, BEST_SUBDIR),
                                                       max_to_keep=1)

    def restore(self, resume: bool) -> None:
        """Create the save counter on every worker and, when ``resume``, restore the
        latest checkpoint (and the history of the epochs it holds); then check
        that every worker restored the same step."""
        with self.strategy.scope():
            # Created here on every worker: a restore would create it (a collective
            # under multi-worker) only on the workers that find a checkpoint.
            self.checkpoint.save_counter  # noqa: B018
        if resume:
            self._resume()
        check_workers_agree(self.strategy, self.trainer)

    def _resume(self) -> None:
        trainer, workdir = self.trainer, self.workdir
        check_index(self.best_manager.directory)  # a damaged index would silently lose the best checkpoint
        with self.strategy.scope():
            restored = restore_latest(self.checkpoint, self.read_manager)
        if restored is None:
            logging.info("Resuming %s: no checkpoint yet, starting from scratch", workdir)
            return
        epochs_done = int(trainer.epoch.numpy())
        if os.path.exists(os.path.join(workdir, "history.json")):
            trainer.history = History(History.read(workdir).records[:epochs_done])
        logging.info("Resumed from %s: global step %d, epoch %d, step %d of the epoch",
                     restored, int(trainer.global_step.numpy()), epochs_done + 1, int(trainer.step_in_epoch.numpy()))

    def restore_best(self, early_stopping) -> bool:
        """Put the best ``--monitor`` epoch's weights into the model (``--export_best``); False if there is none."""
        best = self.best_manager
        if not best.latest_checkpoint:
            return False
        with self.strategy.scope():
            best.checkpoint.restore(best.latest_checkpoint).assert_existing_objects_matched()
        logging.info("--export_best: restored epoch %d (best %s=%.4g) from %s", int(early_stopping.best_epoch.numpy()),
                     early_stopping.monitor, float(early_stopping.best.numpy()), best.latest_checkpoint)
        return True

    def remove_worker_copies(self) -> None:
        """A non-chief worker's temporary copies: the chief's checkpoints are the run's."""
        if not is_chief(self.strategy):
            shutil.rmtree(self.directory, ignore_errors=True)
