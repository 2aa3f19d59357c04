"""The Trainer: a thin loop around the compiled steps of [`tfcustom.training.steps`][tfcustom.training.steps].

The steps own the math; the loop (`tfcustom.training.loop`) runs them, and
its features (progress bar, checkpoints, TensorBoard, early stopping, ...)
are built-in callbacks ([`Trainer.loop_callbacks`][tfcustom.training.loop.FitLoop.loop_callbacks]). Objects the loop uses (the strategy, a checkpoint manager)
are built by the caller and passed in. Create the model and the optimizer
under ``strategy.scope()`` (a Keras optimizer remembers the strategy it was
created under); the Trainer builds the optimizer's slots and the metrics there.

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
[`tfcustom.training.steps.compute_loss_and_gradients`][tfcustom.training.replica_step.compute_loss_and_gradients]) or subclass and override
[`Trainer.make_train_step`][tfcustom.training.trainer.Trainer.make_train_step] / [`Trainer.make_test_step`][tfcustom.training.trainer.Trainer.make_test_step].
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.training import fit_inputs
from tfcustom.training import steps as steps_lib
from tfcustom.callbacks import CallbackList, CallbackState, RetracingCheck, epoch_logs_for_callbacks
from tfcustom.callbacks.weight_averaging import build_averages, step_updates
from tfcustom.training.checkpoint import ReplicaState
from tfcustom.training.compile_args import eval_copy, metric_from_spec, resolve_loss, resolve_optimizer_under
from tfcustom.training.compile_metrics import resolve_metrics
from tfcustom.data.pipeline import EpochInput, InputPipeline
from tfcustom.training.distributed_input import steps_in_epoch
from tfcustom.callbacks.early_stopping import EarlyStopping
from tfcustom.errors import check, check_positive_int
from tfcustom.training.history import History
from tfcustom.training.loop import FitLoop
from tfcustom.training.metric_state import restore_training_state, results as metric_results, show_evaluation
from tfcustom.training.rollback import Rollback
from tfcustom.training.replica_sync import ReplicaStateSync
from tfcustom.training.scope_checks import check_metrics_in_scope, check_model_in_scope, check_optimizer_in_scope
from tfcustom.distribute.preemption import PREEMPTED_EXIT_CODE, ClusterPreemption, TrainingInterrupted

# Names importable from here besides Trainer (re-exported: tfcustom.cli and older code import them from tfcustom.training.trainer).
__all__ = ["Trainer", "DataLike", "InputPipeline", "PREEMPTED_EXIT_CODE", "TrainingInterrupted"]

DataLike = Union[EpochInput, tf.data.Dataset, tuple]  # EpochInput: InputPipeline or StreamingPipeline; tuple: NumPy (x, y[, w])

_metric_from_spec = metric_from_spec  # a name -> a new metric (used by tfcustom.experiment.export too)


class Trainer(ReplicaStateSync, FitLoop):
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
        untouched by the bad step), ``"skip"`` (skip that update and count it) or ``"rollback"``
        (restore the last checkpoint and skip that step from then on: `tfcustom.training.rollback`;
        ``fit`` needs a ``checkpoint_manager``).
      gradient_fn: replaces [`tfcustom.training.steps.compute_loss_and_gradients`][tfcustom.training.replica_step.compute_loss_and_gradients]
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
      rollback: with ``on_nonfinite="rollback"``, a [`tfcustom.Rollback`][tfcustom.training.rollback.Rollback]
        (the most rollbacks, a learning-rate factor, a loss-spike rule; default ``Rollback()``).
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
        weighted_metrics=None, rollback: Optional[Rollback] = None,
    ):
        check(isinstance(model, keras.Model), "model must be a keras.Model", type(model).__name__, "pass a keras.Model instance")
        check(weighted_metrics is None, "the Trainer does not take compile's weighted_metrics yet", weighted_metrics,
              "pass them as metrics= (they are then computed without the sample weights)")
        loss = resolve_loss(loss, loss_weights)
        check_positive_int("steps_per_execution", steps_per_execution)
        check(model.built and model.trainable_variables, "model has no trainable variables yet", model.name, "build the model (call it on a batch or model.build(input_shape)) under strategy.scope() first")
        check(isinstance(log_replica_losses, int) and log_replica_losses >= 0, "log_replica_losses must be an integer >= 0",
              log_replica_losses, "pass N to log the per-replica losses every N steps, or 0 for never")
        self.strategy = strategy or tf.distribute.get_strategy()
        optimizer = resolve_optimizer_under(optimizer, self.strategy)
        check_model_in_scope(model, self.strategy)
        check_optimizer_in_scope(optimizer, self.strategy)
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.steps_per_execution, self.clip_global_norm, self.jit_compile = steps_per_execution, clip_global_norm, jit_compile
        self.on_nonfinite, self.gradient_fn = on_nonfinite, gradient_fn or steps_lib.compute_loss_and_gradients
        self.output_dir, self.verbose, self.summary_writer = output_dir, verbose, summary_writer
        self.log_replica_losses = log_replica_losses
        self._retracing = RetracingCheck()  # the retracing check of every fit (tfcustom.callbacks.timing)
        self._build_state(metrics, num_classes)
        self.weight_averaging = build_averages(weight_averaging, model, self.strategy, optimizer)
        self.rollback = Rollback.for_policy(on_nonfinite, rollback, self.global_step, optimizer, self.strategy)
        self.train_step = self.make_train_step()
        self.test_step = self.make_test_step()
        self.predict_step = steps_lib.make_predict_step(model)
        self.history = History()
        self.replica_state = ReplicaState()  # per-replica copies of metrics and BatchNorm statistics, for checkpoints
        self.callback_state = CallbackState()  # the state of fit's callbacks, for checkpoints
        self._replica_fns = self._last_saved_step = None
        self._outputs_checked, self._train_state_backup = False, None  # the metric objects' training state while they show an evaluation

    def _build_state(self, metrics, num_classes) -> None:
        """Under the scope: the optimizer's slots, the loss trackers and metrics, the loop position."""
        with self.strategy.scope():
            self.optimizer.build(self.model.trainable_variables)
            self.train_loss = keras.metrics.Mean(name="loss")
            self.eval_loss = keras.metrics.Mean(name="loss")
            columns = fit_inputs.output_classes(self.model)
            self.train_metrics = resolve_metrics(metrics, num_classes, columns, self.loss)  # the user's objects, if given
            check_metrics_in_scope(self.train_metrics, self.strategy)
            self.eval_metrics = [eval_copy(m) for m in self.train_metrics]
            fit_inputs.build_metric_states((*self.train_metrics, *self.eval_metrics), num_classes or columns)
            # Loop position: what a checkpoint needs to resume exactly.
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")

    # -- steps (override these to change what a step computes) ---------------

    def make_train_step(self) -> Callable:
        """The compiled ``train_step(iterator, num_steps)``; see [`tfcustom.training.steps.make_train_step`][tfcustom.training.steps.make_train_step]."""
        return steps_lib.make_train_step(
            self.model, self.loss, self.optimizer, self.train_metrics, loss_tracker=self.train_loss, strategy=self.strategy,
            clip_global_norm=self.clip_global_norm, jit_compile=self.jit_compile, on_nonfinite=self.on_nonfinite,
            gradient_fn=self.gradient_fn, after_update=step_updates(self.weight_averaging), divergence=self.rollback)

    def make_test_step(self) -> Callable:
        """The compiled ``test_loop(iterator)``; see [`tfcustom.training.steps.make_test_step`][tfcustom.training.steps.make_test_step]."""
        return steps_lib.make_test_step(self.model, self.loss, self.eval_metrics, loss_tracker=self.eval_loss, strategy=self.strategy)

    def _callback_list(self, callbacks, **params) -> CallbackList:
        return CallbackList(callbacks, model=self.model, optimizer=self.optimizer, metrics=self.train_metrics, **params)

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
            state is saved in the training checkpoint and restored on resume. A
            [`tfcustom.callbacks.LoopCallback`][tfcustom.callbacks.LoopCallback] among them replaces the built-in
            one of its class ([`loop_callbacks`][tfcustom.training.loop.FitLoop.loop_callbacks]), or is added after them.

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
        train, validation_data = self._fit_data(train, epochs, validation_data, batch_size, initial_epoch, checkpoint_every_steps, class_weight)
        if self._already_trained(epochs):
            return self.history
        steps = steps_in_epoch(train, steps_per_epoch)
        run, builtins = self._fit_callbacks(callbacks, train, epochs, steps, dict(
            early_stopping=early_stopping, checkpoint_manager=checkpoint_manager, checkpoint_every_steps=checkpoint_every_steps,
            best_checkpoint_manager=best_checkpoint_manager, preemption=preemption))
        user = run.callbacks
        self._train_state_backup = restore_training_state(self.train_metrics, self._train_state_backup)
        self._check_outputs(train)
        logging.info("Training %d epochs of %d steps on %d replica(s) (%s), steps_per_execution=%d, jit_compile=%s", epochs, steps,
                     self.strategy.num_replicas_in_sync, type(self.strategy).__name__, self.steps_per_execution, self.jit_compile)
        self._restore_replica_copies()
        try:
            builtins.on_fit_begin()
            with user.attached():
                user.on_train_begin()
                self.callback_state.attach(user.callbacks)  # after on_train_begin reset them
                self._fit_epochs(run, builtins, train, validation_data, epoch_evaluations)
                builtins.on_fit_end()
                user.on_train_end(logs=epoch_logs_for_callbacks(self.history.records[-1]) if len(self.history) else None)
            return self.history
        finally:
            builtins.close()

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
        self._train_state_backup = show_evaluation(self.eval_metrics, self.train_metrics, self._train_state_backup)
        return results

    def _evaluate(self, data: DataLike, prefix: str = "") -> Dict[str, float]:
        self.sync_replica_state()
        self.eval_loss.reset_state()
        for m in self.eval_metrics:
            m.reset_state()
        self.test_step(iter(self._distribute(data)))
        return metric_results(self.eval_loss, self.eval_metrics, prefix)

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
