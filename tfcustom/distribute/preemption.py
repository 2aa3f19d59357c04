"""Stopping on SIGTERM / Ctrl-C without losing work, on one process or a cluster.

One process (one device, ``MirroredStrategy``, a TPU driven from one host):
[`StopSignals`][tfcustom.distribute.preemption.StopSignals] turns SIGTERM and SIGINT into a flag; the Trainer checks
it between steps, saves a checkpoint and raises [`TrainingInterrupted`][tfcustom.distribute.preemption.TrainingInterrupted]
(exit code 4 in the CLI).

A multi-worker cluster cannot stop that way: a worker that saves and leaves
on its own strands the others inside the next collective. [`ClusterPreemption`][tfcustom.distribute.preemption.ClusterPreemption]
wraps ``tf.distribute.experimental.PreemptionCheckpointHandler``, which agrees
with every worker (through the coordination service) on the step after
which all of them save; then every worker raises [`TrainingInterrupted`][tfcustom.distribute.preemption.TrainingInterrupted].
Build it next to the strategy and pass it to ``Trainer.fit(preemption=...)``:

>>> strategy = tfcustom.distribute.strategy.select("multi_worker")
>>> preemption = ClusterPreemption(strategy)          # before training starts
>>> trainer.fit(train, epochs, checkpoint_manager=manager, preemption=preemption)

Termination notices: SIGTERM or SIGINT to any one worker (the handler
polls [`StopSignals`][tfcustom.distribute.preemption.StopSignals] once a second). Google Cloud VMs deliver their
preemption notice as SIGTERM too. ``PreemptionCheckpointHandler`` itself does
nothing for TPUs and CPUs on Google Cloud and for TPUs elsewhere needs Borg,
so a TPU run (one client process) uses the single-process path.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from typing import Callable, Optional

import tensorflow as tf
from absl import logging

from tfcustom.errors import TfcustomError, check

PREEMPTED_EXIT_CODE = 4


class TrainingInterrupted(TfcustomError):
    """SIGTERM or Ctrl-C arrived: the current step finished, a checkpoint was saved.

    ``tfcustom-train`` exits with its ``exit_code``, 4: run the same command again to resume.

    Examples:
        >>> error = interrupted("SIGTERM", "at step 120", saved=True)
        >>> isinstance(error, TrainingInterrupted), error.exit_code
        (True, 4)
        >>> str(error)
        'training stopped by SIGTERM at step 120; a checkpoint was saved: run the same command again to resume'
    """

    exit_code = PREEMPTED_EXIT_CODE


def interrupted(signal_name: str, where: str, saved: bool) -> TrainingInterrupted:
    """The [`TrainingInterrupted`][tfcustom.distribute.preemption.TrainingInterrupted] raised after a stop: says what was saved.

    Args:
      signal_name: the signal that stopped training, e.g. ``"SIGTERM"``.
      where: where training stopped, e.g. ``"at step 120"``.
      saved: whether a checkpoint was saved (else the message says progress is lost).

    Returns:
      The error, to raise.

    Examples:
        >>> str(interrupted("SIGINT", "at step 7", saved=False))
        'training stopped by SIGINT at step 7; no checkpoint manager, so progress is lost'
    """
    what = "a checkpoint was saved: run the same command again to resume" if saved else "no checkpoint manager, so progress is lost"
    return TrainingInterrupted(f"training stopped by {signal_name} {where}; {what}")


class StopSignals:
    """Turn SIGTERM / SIGINT into a flag the loop checks between steps.

    Use as a context manager (it restores the previous handlers on exit);
    handlers are only installed from the main thread. A second Ctrl-C stops
    at once (``KeyboardInterrupt``).

    Examples:
        >>> import signal
        >>> with StopSignals() as stop:
        ...     signal.raise_signal(signal.SIGTERM)  # logged; the loop would save and stop
        ...     received = stop.received
        >>> received
        'SIGTERM'
    """

    def __init__(self):
        self.received: Optional[str] = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.received = signal.Signals(signum).name
        logging.warning("%s received: finishing the current step, then saving and stopping", self.received)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        return False


def is_cluster(strategy: tf.distribute.Strategy) -> bool:
    """True when ``strategy`` is a ``MultiWorkerMirroredStrategy`` over a cluster (``TF_CONFIG`` with jobs).

    Args:
      strategy: any ``tf.distribute`` strategy.

    Returns:
      Whether the strategy spans a cluster, i.e. needs
      [`ClusterPreemption`][tfcustom.distribute.preemption.ClusterPreemption]
      rather than [`StopSignals`][tfcustom.distribute.preemption.StopSignals] alone.

    Examples:
        >>> is_cluster(tf.distribute.get_strategy())  # the default strategy: one process
        False
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = strategy.cluster_resolver
    return bool(resolver is not None and resolver.task_type and resolver.cluster_spec().jobs)


class ClusterPreemption:
    """Save and stop every worker of a multi-worker cluster at the same step.

    Wraps ``tf.distribute.experimental.PreemptionCheckpointHandler``: when any
    worker receives SIGTERM (or Ctrl-C), the handler publishes it to the other
    workers and they agree on the step after which all of them save. The
    Trainer supplies the save (its own checkpoint manager: chief writes the
    real checkpoint, the others their temporary copies) and each worker then
    raises [`TrainingInterrupted`][tfcustom.distribute.preemption.TrainingInterrupted].

    Create it before training (it starts the handler's watcher threads) and
    only once per process: the agreement is stored in the cluster's
    coordination service for the life of the cluster.

    Args:
      strategy: a ``MultiWorkerMirroredStrategy`` over a cluster from ``TF_CONFIG``.
      grace_period: seconds between the notice and the kill on your platform;
        0 (default) saves at the first agreed step. With a grace period the
        handler saves once, trains on, and saves again just before it ends.

    Examples:
        A single process is refused (it stops with [`StopSignals`][tfcustom.distribute.preemption.StopSignals]):

        >>> ClusterPreemption(tf.distribute.get_strategy())
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: ClusterPreemption needs a multi-worker strategy over a cluster (received: '_DefaultDistributionStrategy'). ...

        On each worker of a cluster (``TF_CONFIG`` set):

        >>> strategy = tf.distribute.MultiWorkerMirroredStrategy()  # doctest: +SKIP
        >>> preemption = ClusterPreemption(strategy) if is_cluster(strategy) else None  # doctest: +SKIP
        >>> trainer.fit(train, epochs=10, checkpoint_manager=manager, preemption=preemption)  # doctest: +SKIP
    """

    def __init__(self, strategy: tf.distribute.Strategy, grace_period: float = 0):
        check(is_cluster(strategy), "ClusterPreemption needs a multi-worker strategy over a cluster",
              type(strategy).__name__, "use tfcustom.distribute.strategy.select('multi_worker') with TF_CONFIG set; a single process needs no ClusterPreemption")
        check(isinstance(grace_period, (int, float)) and grace_period >= 0, "grace_period must be a number of seconds >= 0",
              grace_period, "pass 0 unless your platform gives notice ahead of the kill")
        self.strategy = strategy
        self._should_stop: Callable[[], bool] = lambda: False
        self._save: Optional[Callable[[], None]] = None
        self._stop: Optional[Callable[[], None]] = None
        # The handler restores from, and by default saves to, the manager it is
        # given. The Trainer restores (with fallback past corrupt checkpoints)
        # and saves itself, so the handler gets a manager of an empty
        # checkpoint in a scratch directory that is never written.
        scratch = tempfile.mkdtemp(prefix="tfcustom_preemption_")
        unused = tf.train.CheckpointManager(tf.train.Checkpoint(), scratch, max_to_keep=1)
        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: self._should_stop(),
            save_fn=self._save_now,
            exit_fn=self._stop_now,
            grace_period=grace_period,
        )
        try:
            self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(strategy.cluster_resolver, unused, termination_config=config)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # read (empty) by the handler's constructor, never written

    def attach(self, should_stop: Callable[[], bool], save: Callable[[], None], stop: Callable[[], None]) -> None:
        """Called by the Trainer: where the stop notice comes from, how to save, how to stop."""
        self._should_stop, self._save, self._stop = should_stop, save, stop

    def detach(self) -> None:
        self._should_stop, self._save, self._stop = (lambda: False), None, None

    def after_step(self) -> None:
        """Call after every train-step call, on every worker: saves and stops
        (through the attached functions) at the step the cluster agreed on."""
        self.handler.save_checkpoint_if_preempted()

    def _save_now(self):
        if self._save is not None:
            self._save()

    def _stop_now(self):
        if self._stop is not None:
            self._stop()
        raise TrainingInterrupted("training stopped: a worker of the cluster was told to terminate; a checkpoint was saved")
