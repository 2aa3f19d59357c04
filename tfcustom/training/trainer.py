"""The Trainer: a thin loop around the compiled steps of [`tfcustom.training.steps`][tfcustom.training.steps].

The Trainer owns I/O, progress, logging, history and early stopping; the
steps own the math. Objects the loop uses (the strategy, a checkpoint manager)
are built by the caller and passed in. Create the model and the optimizer
under ``strategy.scope()`` (a Keras optimizer remembers the strategy it was
created under); the Trainer builds the optimizer's slots and the metrics there.

Examples:
    >>> strategy = tfcustom.distribute.strategy.select("auto")
    >>> with strategy.scope():
    ...     model = tfcustom.models.get("mlp", num_classes=10)
    ...     model.build((None, 28, 28, 1))
    ...     optimizer = keras.optimizers.Adam(1e-3)
    >>> trainer = Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...                   optimizer, metrics=["accuracy"], strategy=strategy)
    >>> history = trainer.fit(train_pipeline, epochs=5, validation_data=val_pipeline)
    >>> trainer.evaluate(test_pipeline)
    {'loss': 0.31, 'accuracy': 0.89}

As with ``compile``/``fit``: the loss may be a name or a function, the
optimizer a name (``"adam"``), metrics names or objects, and ``fit`` takes
NumPy arrays: ``trainer.fit((x, y), epochs=2, batch_size=32)``.

Metric objects you pass are the ones training updates: after ``fit`` they
hold the last epoch's training value, after [`Trainer.evaluate`][tfcustom.training.trainer.Trainer.evaluate] that
evaluation's value (evaluation runs on copies made with
``from_config(get_config())``; a metric that cannot be copied so is refused
in one line).

Before the first step the Trainer runs the model on one batch and refuses a
loss whose ``from_logits`` does not fit the model's outputs (see
`tfcustom.losses.loss_inputs`), and sets ``num_classes`` of the metrics that
were given none from the model's output.

To change what a step computes, pass ``gradient_fn`` (see
[`tfcustom.training.steps.compute_loss_and_gradients`][tfcustom.training.steps.compute_loss_and_gradients]) or subclass and override
[`Trainer.make_train_step`][tfcustom.training.trainer.Trainer.make_train_step] / [`Trainer.make_test_step`][tfcustom.training.trainer.Trainer.make_test_step].
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.training import fit_inputs
from tfcustom.training import steps as steps_lib
from tfcustom.callbacks import CallbackList, CallbackState, check_learning_rate_settable, epoch_logs_for_callbacks
from tfcustom.callbacks.weight_averaging import WeightAverage, build_averages, step_updates
from tfcustom.training.checkpoint import ReplicaState, save_checkpoint
from tfcustom.training.compile_args import copy_state, eval_copy, metric_from_spec, resolve_loss, resolve_optimizer
from tfcustom.training.compile_metrics import resolve_metrics
from tfcustom.data.pipeline import EpochInput, InputPipeline
from tfcustom.training.distributed_input import batch_and_size, distribute, steps_in_epoch
from tfcustom.callbacks.early_stopping import EarlyStopping
from tfcustom.errors import NonFiniteLossError, check, check_positive_int
from tfcustom.training.history import History
from tfcustom.training.timing import StepTimer, check_retracing
from tfcustom.training.replica_sync import ReplicaStateSync
from tfcustom.training.scope_checks import check_metrics_in_scope, check_model_in_scope, check_optimizer_in_scope
from tfcustom.distribute.preemption import PREEMPTED_EXIT_CODE, ClusterPreemption, StopSignals, TrainingInterrupted, interrupted

# Names importable from here besides Trainer (re-exported: tfcustom.cli and older code import them from tfcustom.training.trainer).
__all__ = ["Trainer", "DataLike", "InputPipeline", "PREEMPTED_EXIT_CODE", "TrainingInterrupted"]

DataLike = Union[EpochInput, tf.data.Dataset, tuple]  # EpochInput: InputPipeline or StreamingPipeline; tuple: NumPy (x, y[, w])

_metric_from_spec = metric_from_spec  # a name -> a new metric (used by tfcustom.experiment.export too)


def _scalar_results(metric) -> Dict[str, float]:
    """A metric's result as scalars: vector results are reported per element."""
    value = np.asarray(metric.result())
    if value.ndim == 0:
        return {metric.name: float(value)}
    return {}


class Trainer(ReplicaStateSync):
    """Train, evaluate and predict with a user-owned model and step.

    Args:
      model: a Keras model, built under ``strategy.scope()``.
      loss: a ``keras.losses.Loss`` (its ``call`` gives per-example values),
        a loss name or a function ``fn(y_true, y_pred)``, as ``compile``
        takes (`tfcustom.training.compile_args.resolve_loss`). tfcustom's models
        output logits: use ``from_logits=True``.
      optimizer: a Keras optimizer or its name (``"adam"``: Keras' defaults);
        built by the Trainer under the scope.
      metrics: names (``"accuracy"``, any name of ``tfcustom.metrics`` such
        as ``"f1"`` or ``"f1_score"``, or a Keras metric name) or metric
        objects. Objects are updated by training and hold the result (create
        them under ``strategy.scope()``); evaluation uses copies. Each value
        is reported under the metric's own ``name``.
      strategy: the ``tf.distribute`` strategy (default: the current one).
      num_classes: for metrics given by name that need it.
      clip_global_norm: clip the summed gradient to this global norm.
      jit_compile: XLA-compile each replica's forward and backward pass.
      steps_per_execution: train steps run inside one ``tf.function`` call.
      on_nonfinite: ``"stop"`` (raise [`NonFiniteLossError`][tfcustom.NonFiniteLossError], variables
        untouched by the bad step) or ``"skip"`` (skip that update and count it).
      gradient_fn: replaces [`tfcustom.training.steps.compute_loss_and_gradients`][tfcustom.training.steps.compute_loss_and_gradients]
        (e.g. [`tfcustom.training.sam.SAM`][tfcustom.training.sam.SAM]).
      output_dir: where ``history.json`` / ``history.csv`` are written each epoch.
      verbose: 1 shows a progress bar per epoch, 0 only logs.
      log_replica_losses: every this many steps and at each epoch end, log
        each replica's share of the last step's loss (absl INFO); 0: never.
      summary_writer: a [`tfcustom.callbacks.summaries.SummaryWriter`][tfcustom.callbacks.summaries.SummaryWriter] (built by
        the caller, already started): TensorBoard summaries every
        ``log_every_steps`` steps and every epoch; None: none.
      loss_weights: with a dict/list of losses (a multi-output model), the
        weight of each output's loss, as ``compile(loss_weights=...)``;
        metrics may then be ``{output: [specs]}``, logged ``<output>_<name>``.
      weight_averaging: averages of the weights
        ([`tfcustom.callbacks.ExponentialMovingAverage`][tfcustom.callbacks.ExponentialMovingAverage], updated in the compiled
        step; [`tfcustom.callbacks.StochasticWeightAveraging`][tfcustom.callbacks.StochasticWeightAveraging], at epoch ends),
        one object or a list; built here, run as callbacks of every ``fit``
        (after the ones given to it) and saved in the training checkpoint.
      weighted_metrics: not supported yet: anything but None is refused in one line (the
        sample-weighted metrics of ``compile``).

    Examples:
        >>> import keras, numpy as np, tfcustom
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> y = (x[:, 0] > 0).astype("int64")
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> trainer = tfcustom.Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...                            "adam", metrics=["accuracy"], verbose=0)
        >>> history = trainer.fit((x, y), epochs=2, batch_size=16)
        >>> sorted(trainer.evaluate((x, y)))
        ['accuracy', 'loss']
        >>> trainer.predict(x).shape
        (64, 2)
    """

    def __init__(
        self,
        model: keras.Model,
        loss: Union[keras.losses.Loss, str, Callable],
        optimizer: Union[keras.optimizers.Optimizer, str],
        metrics: Sequence = ("accuracy",),
        *,
        strategy: Optional[tf.distribute.Strategy] = None,
        num_classes: Optional[int] = None,
        clip_global_norm: Optional[float] = None,
        jit_compile: bool = False,
        steps_per_execution: int = 1,
        on_nonfinite: str = "stop",
        gradient_fn: Optional[Callable] = None,
        output_dir: Optional[str] = None,
        verbose: int = 1,
        log_replica_losses: int = 0,
        summary_writer=None,
        loss_weights=None,
        weight_averaging=None,
        weighted_metrics=None,
    ):
        check(isinstance(model, keras.Model), "model must be a keras.Model", type(model).__name__, "pass a keras.Model instance")
        check(weighted_metrics is None, "the Trainer does not take compile's weighted_metrics yet", weighted_metrics,
              "pass them as metrics= (they are then computed without the sample weights)")
        loss = resolve_loss(loss, loss_weights)
        check_positive_int("steps_per_execution", steps_per_execution)
        check(model.built and model.trainable_variables, "model has no trainable variables yet", model.name, "build the model (call it on a batch or model.build(input_shape)) under strategy.scope() first")
        self.strategy = strategy or tf.distribute.get_strategy()
        if isinstance(optimizer, str):
            with self.strategy.scope():
                optimizer = resolve_optimizer(optimizer)
        optimizer = resolve_optimizer(optimizer)
        check_model_in_scope(model, self.strategy)
        check_optimizer_in_scope(optimizer, self.strategy)
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.steps_per_execution = steps_per_execution
        self.clip_global_norm = clip_global_norm
        self.jit_compile = jit_compile
        self.on_nonfinite = on_nonfinite
        self.gradient_fn = gradient_fn or steps_lib.compute_loss_and_gradients
        self.output_dir = output_dir
        self.verbose = verbose
        check(isinstance(log_replica_losses, int) and log_replica_losses >= 0, "log_replica_losses must be an integer >= 0",
              log_replica_losses, "pass N to log the per-replica losses every N steps, or 0 for never")
        self.log_replica_losses = log_replica_losses
        self.summary_writer = summary_writer
        self._train_signatures = set()  # input signatures the train step was called with (retracing check)
        self._retraces_warned = 0
        with self.strategy.scope():
            self.optimizer.build(model.trainable_variables)
            self.train_loss = keras.metrics.Mean(name="loss")
            self.eval_loss = keras.metrics.Mean(name="loss")
            columns = fit_inputs.output_classes(model)
            self.train_metrics = resolve_metrics(metrics, num_classes, columns, loss)  # the user's objects, if given
            self._check_metrics_in_scope()
            self.eval_metrics = [eval_copy(m) for m in self.train_metrics]
            fit_inputs.build_metric_states((*self.train_metrics, *self.eval_metrics), num_classes or columns)
            # Loop position: what a checkpoint needs to resume exactly.
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.weight_averaging = build_averages(weight_averaging, model, self.strategy, optimizer)
        self.train_step = self.make_train_step()
        self.test_step = self.make_test_step()
        self.predict_step = steps_lib.make_predict_step(model)
        self.history = History()
        self.replica_state = ReplicaState()  # per-replica copies of metrics and BatchNorm statistics, for checkpoints
        self.callback_state = CallbackState()  # the state of fit's callbacks, for checkpoints
        self._callbacks = self._callback_list(None)
        self._replica_fns = None
        self._last_saved_step = None
        self._outputs_checked = False
        self._train_state_backup = None  # the training state of the metric objects while they show an evaluation

    def _check_metrics_in_scope(self) -> None:
        check_metrics_in_scope(self.train_metrics, self.strategy)

    # -- steps (override these to change what a step computes) ---------------

    def make_train_step(self) -> Callable:
        """The compiled ``train_step(iterator, num_steps)``; see [`tfcustom.training.steps.make_train_step`][tfcustom.training.steps.make_train_step]."""
        return steps_lib.make_train_step(
            self.model,
            self.loss,
            self.optimizer,
            self.train_metrics,
            loss_tracker=self.train_loss,
            strategy=self.strategy,
            clip_global_norm=self.clip_global_norm,
            jit_compile=self.jit_compile,
            on_nonfinite=self.on_nonfinite,
            gradient_fn=self.gradient_fn,
            after_update=step_updates(self.weight_averaging),
        )

    def make_test_step(self) -> Callable:
        """The compiled ``test_loop(iterator)``; see [`tfcustom.training.steps.make_test_step`][tfcustom.training.steps.make_test_step]."""
        return steps_lib.make_test_step(self.model, self.loss, self.eval_metrics, loss_tracker=self.eval_loss, strategy=self.strategy)

    # -- input ----------------------------------------------------------------

    def _distribute(self, data: DataLike, epoch: int = 0, skip_batches: int = 0):
        return distribute(self.strategy, data, epoch, skip_batches)

    @staticmethod
    def _steps_per_epoch(data: DataLike, steps_per_epoch: Optional[int]) -> int:
        return steps_in_epoch(data, steps_per_epoch)

    def _check_outputs(self, data: DataLike) -> None:
        """Once, before the first step: see `tfcustom.training.fit_inputs.check_outputs`."""
        if isinstance(data, tf.data.Dataset):
            fit_inputs.check_dataset(data)
        if not self._outputs_checked:
            self._outputs_checked = fit_inputs.check_outputs(self.model, self.loss, data, (*self.train_metrics, *self.eval_metrics), self.strategy)

    def _restore_train_state(self) -> None:
        """Give the metric objects back their training state after [`evaluate`][tfcustom.training.trainer.Trainer.evaluate] showed its values in them."""
        if self._train_state_backup is not None:
            for v, value in zip([v for m in self.train_metrics for v in m.variables], self._train_state_backup):
                v.assign(value)
            self._train_state_backup = None

    # -- training -------------------------------------------------------------

    def _results(self, loss_metric, metrics, prefix: str = "") -> Dict[str, float]:
        out = {prefix + "loss": float(loss_metric.result())}
        for m in metrics:
            out.update({prefix + k: v for k, v in _scalar_results(m).items()})
        return out

    def _callback_list(self, callbacks, **params) -> CallbackList:
        return CallbackList(callbacks, model=self.model, optimizer=self.optimizer, metrics=self.train_metrics, **params)

    def _fit_callbacks(self, callbacks) -> list:
        """``fit``'s callbacks, then the weight averages (refused among ``callbacks``: they must be built here)."""
        callbacks = list(callbacks or [])
        check(not any(isinstance(c, WeightAverage) for c in callbacks), "a weight average was passed to fit's callbacks",
              ", ".join(type(c).__name__ for c in callbacks if isinstance(c, WeightAverage)),
              "pass it to tfcustom.Trainer(weight_averaging=[...]) instead: it is then updated in the compiled step "
              "and saved in the training checkpoint")
        return callbacks + list(getattr(self, "weight_averaging", []))

    def _learning_rate(self) -> float:
        lr = self.optimizer.learning_rate
        return float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr))

    def fit(
        self,
        train: DataLike,
        epochs: int = 1,
        validation_data: Optional[DataLike] = None,
        *,
        batch_size: Optional[int] = None,
        initial_epoch: Optional[int] = None,
        steps_per_epoch: Optional[int] = None,
        early_stopping: Optional[EarlyStopping] = None,
        checkpoint_manager: Optional[tf.train.CheckpointManager] = None,
        checkpoint_every_steps: Optional[int] = None,
        best_checkpoint_manager: Optional[tf.train.CheckpointManager] = None,
        preemption: Optional[ClusterPreemption] = None,
        epoch_evaluations: Optional[Dict[str, DataLike]] = None,
        class_weight: Optional[Dict[int, float]] = None,
        callbacks: Optional[Sequence[keras.callbacks.Callback]] = None,
    ) -> History:
        """Train until ``epochs`` epochs have run in total.

        Training resumes from ``self.epoch`` and ``self.step_in_epoch`` (e.g.
        after a checkpoint restore), so re-running a finished run trains
        nothing and logs "already trained N epochs; nothing to do".

        Args:
          train: an [`InputPipeline`][tfcustom.data.InputPipeline], a batched
            ``tf.data.Dataset``, or NumPy arrays ``(x, y)`` / ``(x, y, sample_weight)``
            batched by ``batch_size`` (training arrays are shuffled each epoch
            with a fixed seed).
          epochs: the epoch to train up to, counting the epochs already trained.
          validation_data: evaluated at each epoch end; the same types as ``train``.
          batch_size: for NumPy arrays (default 32, as in Keras).
          initial_epoch: Keras' argument: start counting at this epoch instead,
            e.g. ``fit(data, epochs=1, initial_epoch=0)`` trains one more epoch
            as ``keras.Model.fit(epochs=1)`` does each call.
          steps_per_epoch: batches per epoch, for a dataset whose length is
            unknown or infinite (each epoch starts the dataset again).
          early_stopping: an [`EarlyStopping`][tfcustom.EarlyStopping].
          checkpoint_manager: a ``tf.train.CheckpointManager`` of
            `tfcustom.training.checkpoint.training_checkpoint`: saves at each epoch end,
            every ``checkpoint_every_steps`` steps, and when SIGTERM or Ctrl-C
            arrives (then raises [`TrainingInterrupted`][tfcustom.training.trainer.TrainingInterrupted] after the save).
          checkpoint_every_steps: see ``checkpoint_manager``.
          best_checkpoint_manager: with ``early_stopping``, saves the model
            whenever the monitored value improves, and restores the best from it.
          preemption: on a multi-worker cluster, a
            [`tfcustom.distribute.preemption.ClusterPreemption`][tfcustom.distribute.preemption.ClusterPreemption]:
            a SIGTERM to any one worker makes every worker save at the same step and stop.
          epoch_evaluations: ``{prefix: data}``, e.g. ``{"test_": test}``: more
            data evaluated at each epoch end, logged with that prefix; their
            time is not counted in the epoch's ``time_s``.
          class_weight: ``{class id: weight}`` for NumPy training arrays, as in ``fit``.
          callbacks: ``keras.callbacks.Callback`` instances, called as
            ``keras.Model.fit`` calls them ([`tfcustom.callbacks`][tfcustom.callbacks]); their
            state is saved in the training checkpoint and restored on resume.

        Returns:
          The [`History`][tfcustom.History] of every epoch trained so far.

        Examples:
            >>> import keras, numpy as np, tfcustom
            >>> x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
            >>> y = (x.sum(axis=1) > 0).astype("int64")
            >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            >>> trainer = tfcustom.Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            ...                            "sgd", verbose=0)
            >>> len(trainer.fit((x, y), epochs=2, batch_size=8).history["loss"])
            2
            >>> len(trainer.fit((x, y), epochs=2).history["loss"])  # already trained 2 epochs: nothing to do
            2
        """
        check(not fit_inputs.is_arrays((train, epochs)) or isinstance(epochs, int), "epochs must be an integer, not an array",
              type(epochs).__name__, "pass the arrays as one tuple: trainer.fit((x, y), epochs=..., batch_size=...)")
        check_positive_int("epochs", epochs)
        if checkpoint_every_steps is not None:
            check_positive_int("checkpoint_every_steps", checkpoint_every_steps)
        train = fit_inputs.as_pipeline(train, batch_size, training=True, class_weight=class_weight)
        if validation_data is not None:
            validation_data = fit_inputs.as_pipeline(validation_data, batch_size, training=False)
        if initial_epoch is not None:
            check(isinstance(initial_epoch, int) and not isinstance(initial_epoch, bool) and 0 <= initial_epoch,
                  "initial_epoch must be an integer >= 0", initial_epoch, "pass e.g. initial_epoch=0 to train `epochs` more epochs")
            self.epoch.assign(initial_epoch)
            self.step_in_epoch.assign(0)
        done_epochs = int(self.epoch.numpy())
        if done_epochs >= epochs:
            message = (f"already trained {done_epochs} epochs; nothing to do (fit(epochs=N) trains up to epoch N in total: "
                       f"pass epochs > {done_epochs}, or initial_epoch=0 to train {epochs} more)")
            logging.info(message)
            if self.verbose:
                print(message)
            return self.history
        steps = self._steps_per_epoch(train, steps_per_epoch)
        check_learning_rate_settable(callbacks or [], self.optimizer)
        self._callbacks = self._callback_list(self._fit_callbacks(callbacks), epochs=epochs, steps=steps, verbose=self.verbose)
        self._restore_train_state()
        self._check_outputs(train)
        logging.info(
            "Training %d epochs of %d steps on %d replica(s) (%s), steps_per_execution=%d, jit_compile=%s",
            epochs, steps, self.strategy.num_replicas_in_sync, type(self.strategy).__name__,
            self.steps_per_execution, self.jit_compile,
        )
        self._restore_replica_copies()
        with StopSignals() as signals:
            if preemption is not None:
                preemption.attach(
                    should_stop=lambda: signals.received is not None,
                    save=lambda: checkpoint_manager is not None and self._save(checkpoint_manager, "cluster preemption", scheduled=False),
                    stop=lambda: self._raise_interrupted(signals.received or "a termination notice to another worker", checkpoint_manager),
                )
            try:
                self._epoch_evaluations = dict(epoch_evaluations or {})
                with self._callbacks.attached():
                    self._callbacks.on_train_begin()
                    self.callback_state.attach(self._callbacks.callbacks)  # after on_train_begin reset them
                    history = self._fit_epochs(train, epochs, validation_data, steps, early_stopping, checkpoint_manager,
                                               checkpoint_every_steps, best_checkpoint_manager, signals, preemption)
                    self._callbacks.on_train_end(logs=epoch_logs_for_callbacks(history.records[-1]) if len(history) else None)
                return history
            finally:
                if preemption is not None:
                    preemption.detach()

    def _raise_interrupted(self, signal_name: str, checkpoint_manager) -> None:
        raise interrupted(signal_name, f"at epoch {int(self.epoch.numpy()) + 1}, step {int(self.step_in_epoch.numpy())} of the epoch",
                          checkpoint_manager is not None)

    def _log_replica_losses(self, out, step: int) -> None:
        shares = np.asarray(out["replica_losses"])
        logging.info("step %d: loss %.6g = sum of the %d replicas' shares [%s]%s", step, float(out["loss"]), len(shares),
                     ", ".join(f"{v:.6g}" for v in shares),
                     f"; {int(out['loss_scale_skipped'])} step(s) skipped by the loss scaler" if int(out.get("loss_scale_skipped", 0)) else "")

    def _write_step_summaries(self, out, timer: StepTimer) -> None:
        values = self._results(self.train_loss, self.train_metrics)
        values.update(learning_rate=self._learning_rate(), examples_per_second=timer.interval_rate())
        if "grad_norm" in out:
            values["gradient_norm"] = float(out["grad_norm"])
        shares = np.asarray(out["replica_losses"])
        if len(shares) > 1:
            values.update({f"replica_{i}_loss": float(v) for i, v in enumerate(shares)})
        self.summary_writer.write_step(int(self.global_step.numpy()), values)

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

    def _fit_epochs(self, train, epochs, validation_data, steps, early_stopping, checkpoint_manager,
                    checkpoint_every_steps, best_checkpoint_manager, signals, preemption=None) -> History:
        while int(self.epoch.numpy()) < epochs:
            epoch = int(self.epoch.numpy())
            start = time.time()
            skip = int(self.step_in_epoch.numpy())
            if skip == 0:
                self.train_loss.reset_state()
                for m in self.train_metrics:
                    m.reset_state()
            progbar = keras.utils.Progbar(steps, stateful_metrics=None, verbose=self.verbose) if self.verbose else None
            if progbar is not None:
                print(f"Epoch {epoch + 1}/{epochs}")
            self._callbacks.on_epoch_begin(epoch)
            iterator = iter(self._distribute(train, epoch, skip))
            self._train_signatures.add(repr(iterator.element_spec))
            timer = StepTimer(*batch_and_size(train))
            timer.start(done=skip)
            self._train_epoch_steps(iterator, timer, progbar, epoch, steps, skip, checkpoint_manager, checkpoint_every_steps,
                                    signals, preemption)
            logs = self._epoch_logs(epoch, start, validation_data)
            callback_logs = epoch_logs_for_callbacks(logs)
            self._callbacks.on_epoch_end(epoch, callback_logs)
            logs.update(callback_logs)  # e.g. the learning rate ReduceLROnPlateau set, as fit's History records it
            if progbar is not None:
                progbar.update(steps, values=[(k, v) for k, v in logs.items() if k not in ("epoch", "time_s")], finalize=True)
            logging.info("epoch %d/%d: %s", epoch + 1, epochs, ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if k != "epoch"))
            logging.info("%s", timer.log_line(epoch + 1))
            self._retraces_warned = check_retracing(self.train_step, len(self._train_signatures), warned_at=self._retraces_warned)
            if self.summary_writer is not None:
                timing = timer.epoch_summary()
                self.summary_writer.write_epoch(epoch + 1, logs, {k: timing[k] for k in ("examples_per_second", "input_wait_share") if k in timing})
                self.summary_writer.write_histograms(epoch + 1, self.model)
            self.history.append(logs)
            self.epoch.assign(epoch + 1)
            self.step_in_epoch.assign(0)
            stop = self._update_early_stopping(early_stopping, logs, epoch, best_checkpoint_manager) or self._callbacks.stop_training
            if self.output_dir:
                self.history.write(self.output_dir)
            if checkpoint_manager is not None:
                self._save(checkpoint_manager, "end of epoch")
            if preemption is None and signals.received and int(self.epoch.numpy()) < epochs and not stop:
                raise interrupted(signals.received, f"after epoch {epoch + 1}", checkpoint_manager is not None)
            if stop and self._callbacks.stop_training:
                logging.info("Stopped after epoch %d: a callback set model.stop_training", epoch + 1)
                break
            if stop:
                logging.info("Early stopping after epoch %d: %s did not improve for %d epochs (best %.4g at epoch %d)",
                             epoch + 1, early_stopping.monitor, early_stopping.patience, float(early_stopping.best.numpy()), int(early_stopping.best_epoch.numpy()))
                break
        self._restore_best(early_stopping, best_checkpoint_manager)
        return self.history

    def _train_epoch_steps(self, iterator, timer, progbar, epoch, steps, done, checkpoint_manager, checkpoint_every_steps,
                           signals, preemption) -> None:
        """Run the steps of epoch ``epoch`` from batch ``done`` to ``steps``: per-step bookkeeping,
        summaries, replica-loss logs, the progress bar, periodic checkpoints and stop signals."""
        while done < steps:
            n = min(self.steps_per_execution, steps - done)
            if self.summary_writer is not None:
                self.summary_writer.profile(int(self.global_step.numpy()), n)
            self._callbacks.on_train_batch_begin(done)
            out = self.train_step(iterator, tf.constant(n, dtype=tf.int32))
            self._last_saved_step = None  # a save below, then a stop, writes this step once
            ran = int(out["steps_run"]) + (int(out["skipped"]) if self.on_nonfinite == "skip" else 0)
            if bool(out["nonfinite"]):
                if self.on_nonfinite == "stop" and self._nonfinite_stops_cleanly(done + int(out["steps_run"]), epoch):
                    done += int(out["steps_run"])
                    self.global_step.assign_add(int(out["steps_run"]))
                    self.step_in_epoch.assign(done)
                    return
                if self.on_nonfinite == "stop":
                    bad = done + int(out["steps_run"])
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at epoch {epoch + 1}, step {int(self.global_step.numpy()) + int(out['steps_run']) + 1} "
                        f"(batch {bad} of the epoch); the update was not applied and the last checkpoint is intact. "
                        "Lower the learning rate, enable --clip_global_norm, check the inputs for NaN/Inf, "
                        "or pass --on_nonfinite=skip to skip such steps"
                    )
                logging.warning("Skipped %d non-finite step(s) in epoch %d", int(out["skipped"]), epoch + 1)
            done += ran
            self.global_step.assign_add(ran)
            self.step_in_epoch.assign(done)
            if self.summary_writer is not None:
                self.summary_writer.profile(int(self.global_step.numpy()), 0)
            timer.record(ran, out.get("input_wait_s"))
            if self.summary_writer is not None and self.summary_writer.due(int(self.global_step.numpy()), ran):
                self._write_step_summaries(out, timer)
            if self.log_replica_losses:
                step_now, every = int(self.global_step.numpy()), self.log_replica_losses
                if done >= steps or step_now // every > (step_now - ran) // every:
                    self._log_replica_losses(out, step_now)
            if progbar is not None:
                progbar.update(done, values=list(self._results(self.train_loss, self.train_metrics).items()), finalize=False)
            if self._callbacks:
                self._callbacks.on_train_batch_end(done - 1, self._results(self.train_loss, self.train_metrics))
                if self._callbacks.stop_training:
                    return  # as fit: the epoch ends here (its logs, on_epoch_end), then training
            if checkpoint_manager is not None and checkpoint_every_steps and done < steps:
                step_now = int(self.global_step.numpy())
                if step_now // checkpoint_every_steps > (step_now - ran) // checkpoint_every_steps:
                    self._save(checkpoint_manager, f"every {checkpoint_every_steps} steps")
            if preemption is not None:
                preemption.after_step()  # on the step the cluster agreed on: saves, then raises
            elif signals.received and done < steps:
                if checkpoint_manager is not None:
                    self._save(checkpoint_manager, signals.received, scheduled=False)
                self._raise_interrupted(signals.received, checkpoint_manager)

    def _nonfinite_stops_cleanly(self, batch: int, epoch: int) -> bool:
        """A non-finite step under ``on_nonfinite="stop"``: show it to the callbacks as ``loss=nan``
        (the update was not applied); True when one of them (e.g. TerminateOnNaN) stopped training."""
        if not self._callbacks:
            return False
        self._callbacks.on_train_batch_end(batch, {**self._results(self.train_loss, self.train_metrics), "loss": float("nan")})
        if self._callbacks.stop_training:
            logging.warning("Non-finite loss at epoch %d, batch %d: a callback stopped training (the update was not applied)", epoch + 1, batch + 1)
        return self._callbacks.stop_training

    def _epoch_logs(self, epoch, start, validation_data) -> Dict[str, float]:
        """The epoch's logs: train loss and metrics, validation, learning rate, time, extra evaluations."""
        self.sync_replica_state()
        logs = {"epoch": epoch + 1}
        logs.update(self._results(self.train_loss, self.train_metrics))
        if validation_data is not None:
            self._callbacks.on_test_begin()
            self._callbacks.on_test_batch_begin(0)  # once around the compiled loop, as in evaluate
            val_logs = self._evaluate(validation_data)
            self._callbacks.on_test_batch_end(0, val_logs)
            self._callbacks.on_test_end(val_logs)
            logs.update({"val_" + k: v for k, v in val_logs.items()})
        logs["learning_rate"] = self._learning_rate()
        logs["time_s"] = time.time() - start
        for prefix, data in getattr(self, "_epoch_evaluations", {}).items():
            logs.update(self.evaluate(data, prefix=prefix))
        return logs

    def _update_early_stopping(self, early_stopping, logs, epoch, best_checkpoint_manager) -> bool:
        """Feed the epoch's monitored value to ``early_stopping`` (saving a new best); True: stop."""
        stop = False
        if early_stopping is not None:
            check(early_stopping.monitor in logs, "early stopping monitors a value the epoch logs do not have", early_stopping.monitor, f"monitor one of: {', '.join(k for k in logs if k != 'epoch')}")
            stop = early_stopping.update(logs[early_stopping.monitor], epoch + 1, self.model if best_checkpoint_manager is None else None)
            if best_checkpoint_manager is not None and int(early_stopping.best_epoch.numpy()) == epoch + 1:
                save_checkpoint(best_checkpoint_manager, epoch + 1)
                logging.debug("New best %s=%.4g: saved %s", early_stopping.monitor, logs[early_stopping.monitor], best_checkpoint_manager.latest_checkpoint)
        return stop

    def _restore_best(self, early_stopping, best_checkpoint_manager) -> None:
        """After training: restore the best weights when ``early_stopping.restore_best`` asks for it."""
        if early_stopping is None or not early_stopping.restore_best:
            return
        if best_checkpoint_manager is not None and best_checkpoint_manager.latest_checkpoint:
            best_checkpoint_manager.checkpoint.restore(best_checkpoint_manager.latest_checkpoint).assert_existing_objects_matched()
            logging.info("Restored the best weights (epoch %d, %s) from %s", int(early_stopping.best_epoch.numpy()), early_stopping.monitor, best_checkpoint_manager.latest_checkpoint)
        elif early_stopping.restore(self.model):
            logging.info("Restored the weights of epoch %d (best %s)", int(early_stopping.best_epoch.numpy()), early_stopping.monitor)

    # -- evaluation and prediction ----------------------------------------------

    def evaluate(self, data: DataLike, prefix: str = "", *, batch_size: Optional[int] = None,
                 callbacks: Optional[Sequence[keras.callbacks.Callback]] = None) -> Dict[str, float]:
        """Loss and metrics over **every** example of ``data`` (``training=False``).

        Afterwards the metric objects given to the Trainer hold this
        evaluation's values (as after ``keras.Model.evaluate``); the next
        [`fit`][tfcustom.training.trainer.Trainer.fit] gives them back their training state.

        Args:
          data: as for [`fit`][tfcustom.training.trainer.Trainer.fit].
          prefix: prepended to every key (``"val_"``, ``"test_"``).
          batch_size: for NumPy arrays (default 32).
          callbacks: ``on_test_begin``, one ``on_test_batch_begin(0)`` /
            ``on_test_batch_end`` around the whole compiled evaluation loop, ``on_test_end(logs)``.

        Returns:
          ``{prefix + "loss": ..., prefix + <metric name>: ...}`` as Python floats.

        Examples:
            >>> import keras, numpy as np, tfcustom
            >>> x, y = np.zeros((10, 3), "float32"), np.zeros(10, "int64")
            >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_initializer="zeros")])
            >>> trainer = tfcustom.Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            ...                            "sgd", verbose=0)
            >>> result = trainer.evaluate((x, y), prefix="test_", batch_size=4)
            >>> round(result["test_loss"], 4), result["test_accuracy"]  # log(2): two equal logits
            (0.6931, 1.0)
        """
        data = fit_inputs.as_pipeline(data, batch_size, training=False)
        self._check_outputs(data)
        hooks = self._callback_list(callbacks, verbose=self.verbose)
        with hooks.attached():
            hooks.on_test_begin()
            hooks.on_test_batch_begin(0)
            results = self._evaluate(data, prefix)
            hooks.on_test_batch_end(0, results)
            hooks.on_test_end(results)
        if self._train_state_backup is None:
            self._train_state_backup = [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for m in self.train_metrics for v in m.variables]
        for source, target in zip(self.eval_metrics, self.train_metrics):
            copy_state(source, target)
        return results

    def _evaluate(self, data: DataLike, prefix: str = "") -> Dict[str, float]:
        self.sync_replica_state()
        self.eval_loss.reset_state()
        for m in self.eval_metrics:
            m.reset_state()
        self.test_step(iter(self._distribute(data)))
        return self._results(self.eval_loss, self.eval_metrics, prefix)

    def predict(self, data: DataLike, *, batch_size: Optional[int] = None,
                callbacks: Optional[Sequence[keras.callbacks.Callback]] = None) -> np.ndarray:
        """Model outputs for every example of ``data``, in input order.

        Args:
          data: an [`InputPipeline`][tfcustom.data.InputPipeline], a batched
            dataset, or NumPy inputs ``x``.
          batch_size: for NumPy inputs (default 32).
          callbacks: ``on_predict_begin``, one ``on_predict_batch_begin(0)`` /
            ``on_predict_batch_end(0, {"outputs": ...})`` around the compiled loop, ``on_predict_end``.

        Returns:
          The outputs as one NumPy array, ``[N, ...]``.

        Examples:
            >>> import keras, numpy as np, tfcustom
            >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            >>> trainer = tfcustom.Trainer(model, "sparse_categorical_crossentropy", "sgd", verbose=0)
            >>> trainer.predict(np.ones((5, 3), "float32"), batch_size=2).shape
            (5, 2)
        """
        if isinstance(data, (np.ndarray, dict)):
            data = fit_inputs.predict_dataset(data, batch_size)
        dataset = data.dataset() if isinstance(data, EpochInput) else data
        hooks = self._callback_list(callbacks, verbose=self.verbose)
        with hooks.attached():
            hooks.on_predict_begin()
            hooks.on_predict_batch_begin(0)
            outputs = tf.nest.map_structure(lambda t: t.numpy(), self.predict_step(iter(dataset)))
            hooks.on_predict_batch_end(0, {"outputs": outputs})
            hooks.on_predict_end()
        return outputs
