"""The epoch loop of [`Trainer.fit`][tfcustom.training.trainer.Trainer.fit]: the steps, with the callbacks around them.

A short sequence, as Orbit's ``controller.py`` and Keras' ``trainers``: per
epoch, reset the running metrics (unless resuming mid-epoch), make the epoch's
input, run the compiled train step ``steps_per_execution`` steps at a time,
then build the epoch's record (train values, validation, learning rate, time,
extra evaluations) and append it to the history. Everything else the loop
does (the progress bar, checkpoints, TensorBoard, early stopping, timing,
signals, the non-finite policy) is a built-in callback of
`tfcustom.callbacks` (`tfcustom.callbacks.loop_callback` says where each hook
runs); the user's Keras callbacks are called between them as
``keras.Model.fit`` calls them. The Trainer mixes this in.
"""

from __future__ import annotations

import time
from typing import Dict

import tensorflow as tf
from absl import logging

from tfcustom.callbacks import (Checkpointing, EarlyStoppingCallback, EpochLog, FitRun, HistoryFiles, LoopCallback, LoopCallbacks,
                                NonFiniteSteps, Profiler, ProgressBar, ReplicaLossLog, RollbackOnDivergence, Step, StepTiming, StopOnSignals, Summaries,
                                check_learning_rate_settable, epoch_logs_for_callbacks, replace_builtins)
from tfcustom.callbacks.callback_list import with_averages
from tfcustom.callbacks.loop_callback import learning_rate
from tfcustom.errors import check, check_positive_int
from tfcustom.training import fit_inputs
from tfcustom.training.checkpoint import save_checkpoint
from tfcustom.training.distributed_input import batch_and_size, distribute
from tfcustom.training.metric_state import results


class FitLoop:
    """Mixin of [`tfcustom.Trainer`][tfcustom.Trainer]: ``fit``'s built-in callbacks, its input, epochs and steps.

    Override [`loop_callbacks`][tfcustom.training.loop.FitLoop.loop_callbacks] in a subclass of the Trainer to
    add or remove a built-in callback.

    Examples:
        >>> import tfcustom
        >>> issubclass(tfcustom.Trainer, FitLoop)
        True
    """

    def loop_callbacks(self, train, *, early_stopping=None, checkpoint_manager=None, checkpoint_every_steps=None,
                       best_checkpoint_manager=None, preemption=None) -> list:
        """The built-in callbacks of a ``fit``, in the order they run, built from its arguments.

        Each is a [`tfcustom.callbacks.LoopCallback`][tfcustom.callbacks.LoopCallback] (their hooks and
        where they run around the user's callbacks: `tfcustom.callbacks.loop_callback`). An instance of
        one of their classes (or a subclass) passed in ``fit(callbacks=[...])`` replaces that one;
        override this method to add or remove one.

        Args:
          train: the training data, as ``fit`` resolved it (an ``EpochInput`` or a batched dataset).
          early_stopping: ``fit``'s (the [`EarlyStoppingCallback`][tfcustom.callbacks.EarlyStoppingCallback]'s).
          checkpoint_manager: ``fit``'s (the [`Checkpointing`][tfcustom.callbacks.Checkpointing]'s and the [`StopOnSignals`][tfcustom.callbacks.StopOnSignals]').
          checkpoint_every_steps: ``fit``'s.
          best_checkpoint_manager: ``fit``'s.
          preemption: ``fit``'s.

        Returns:
          The list of built-in callbacks.

        Examples:
            >>> import keras, tensorflow as tf, tfcustom
            >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            >>> trainer = tfcustom.Trainer(model, "sparse_categorical_crossentropy", "sgd", verbose=0)
            >>> data = tf.data.Dataset.from_tensor_slices((tf.zeros((8, 3)), tf.zeros(8, tf.int64))).batch(4)
            >>> [type(c).__name__ for c in trainer.loop_callbacks(data)][:4]
            ['NonFiniteSteps', 'Profiler', 'EpochLog', 'StepTiming']
        """
        timing = StepTiming(*batch_and_size(train))
        return [
            NonFiniteSteps(self.on_nonfinite),  # first: decides how many steps ran
            *([] if self.rollback is None else [RollbackOnDivergence(self.rollback, checkpoint_manager, train, preemption)]),
            Profiler(self.summary_writer),
            EpochLog(),
            timing,
            self._retracing,  # one for every fit: the input signatures add up
            Summaries(self.summary_writer, timing),
            ReplicaLossLog(self.log_replica_losses),
            ProgressBar(self.verbose),
            EarlyStoppingCallback(early_stopping, best_checkpoint_manager, save=save_checkpoint),
            HistoryFiles(self.output_dir),
            Checkpointing(checkpoint_manager, checkpoint_every_steps),
            StopOnSignals(checkpoint_manager, preemption),  # last: saves and raises after everything else ran
        ]

    def _fit_callbacks(self, callbacks, train, epochs: int, steps: int, fit_args: dict):
        """The ``FitRun`` (with the user's `CallbackList`) and the built-ins of one ``fit``; ``callbacks``' `LoopCallback`s replace built-ins."""
        given = [c for c in callbacks or [] if isinstance(c, LoopCallback)]
        keras_callbacks = [c for c in callbacks or [] if not isinstance(c, LoopCallback)]
        check_learning_rate_settable(keras_callbacks, self.optimizer)
        user = self._callback_list(with_averages(keras_callbacks, self.weight_averaging), epochs=epochs, steps=steps, verbose=self.verbose)
        run = FitRun(self, epochs, steps, user, save=self._save)
        return run, LoopCallbacks(replace_builtins(self.loop_callbacks(train, **fit_args), given), run)

    def _distribute(self, data, epoch: int = 0, skip_batches: int = 0):
        return distribute(self.strategy, data, epoch, skip_batches)

    def _check_outputs(self, data) -> None:
        """Once, before the first step: see `tfcustom.training.fit_inputs.check_outputs`."""
        if isinstance(data, tf.data.Dataset):
            fit_inputs.check_dataset(data)
        if not self._outputs_checked:
            self._outputs_checked = fit_inputs.check_outputs(self.model, self.loss, data, (*self.train_metrics, *self.eval_metrics), self.strategy)

    def _fit_data(self, train, epochs, validation_data, batch_size, initial_epoch, checkpoint_every_steps, class_weight):
        """``fit``'s arguments checked, its data as pipelines; ``initial_epoch`` applied."""
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
        return train, validation_data

    def _already_trained(self, epochs: int) -> bool:
        """True (and says so) when ``epochs`` epochs are already trained."""
        done_epochs = int(self.epoch.numpy())
        if done_epochs >= epochs:
            message = (f"already trained {done_epochs} epochs; nothing to do (fit(epochs=N) trains up to epoch N in total: "
                       f"pass epochs > {done_epochs}, or initial_epoch=0 to train {epochs} more)")
            logging.info(message)
            if self.verbose:
                print(message)
        return done_epochs >= epochs

    def _fit_epochs(self, run: FitRun, builtins: LoopCallbacks, train, validation_data, epoch_evaluations) -> None:
        """The epochs up to ``run.epochs``: the steps, the epoch's record, the callbacks around them."""
        while int(self.epoch.numpy()) < run.epochs:
            epoch, skip, start = int(self.epoch.numpy()), int(self.step_in_epoch.numpy()), time.time()
            if skip == 0:
                self.train_loss.reset_state()
                for m in self.train_metrics:
                    m.reset_state()
            builtins.on_epoch_begin(epoch)
            run.callbacks.on_epoch_begin(epoch)
            iterator = iter(self._distribute(train, epoch, skip))
            builtins.on_steps_begin(epoch, skip, iterator)
            if self._train_epoch_steps(iterator, run, builtins, epoch, skip):
                continue  # rolled back: the epoch starts again at the restored position
            logs = self._epoch_logs(epoch, start, validation_data, run.callbacks, epoch_evaluations)
            callback_logs = epoch_logs_for_callbacks(logs)
            run.callbacks.on_epoch_end(epoch, callback_logs)
            logs.update(callback_logs)  # e.g. the learning rate ReduceLROnPlateau set, as fit's History records it
            self.history.append(logs)
            self.epoch.assign(epoch + 1)
            self.step_in_epoch.assign(0)
            run.stop = f"Stopped after epoch {epoch + 1}: a callback set model.stop_training" if run.callbacks.stop_training else None
            builtins.on_epoch_end(epoch, logs)  # the epoch's logs, history file, checkpoint, early stopping, signals
            if run.stop:
                logging.info("%s", run.stop)
                break

    def _train_epoch_steps(self, iterator, run: FitRun, builtins: LoopCallbacks, epoch: int, done: int) -> bool:
        """The steps of epoch ``epoch`` from batch ``done``: the built-ins around each compiled call, the user's callbacks between.
        True: rolled back (``on_nonfinite="rollback"``), the epoch's input must start again."""
        while done < run.steps:
            n = min(self.steps_per_execution, run.steps - done)
            builtins.on_step_begin(done, n)
            run.callbacks.on_train_batch_begin(done)
            out = self.train_step(iterator, tf.constant(n, dtype=tf.int32))
            self._last_saved_step = None  # a save below, then a stop, writes this step once
            step = Step(out, epoch, done, logs=lambda: results(self.train_loss, self.train_metrics))
            builtins.check_step(step)  # the non-finite policy: counts skipped steps, ends the epoch, rolls back or raises
            if step.restart:
                self._restore_replica_copies()  # the restored checkpoint's per-replica state
                return True
            done += step.ran
            self.global_step.assign_add(step.ran)
            self.step_in_epoch.assign(done)
            if step.end_epoch:
                return False
            step.done, step.global_step = done, int(self.global_step.numpy())
            builtins.on_step_end(step)  # profiler, timing, summaries, replica losses, progress bar
            if run.callbacks:
                run.callbacks.on_train_batch_end(done - 1, dict(step.logs))
                if run.callbacks.stop_training:
                    return False  # as fit: the epoch ends here (its logs, on_epoch_end), then training
            builtins.after_step(step)  # periodic checkpoints, stop signals
        return False

    def _epoch_logs(self, epoch, start, validation_data, callbacks, epoch_evaluations) -> Dict[str, float]:
        """The epoch's logs: train loss and metrics, validation, learning rate, time, extra evaluations."""
        self.sync_replica_state()
        logs = {"epoch": epoch + 1}
        logs.update(results(self.train_loss, self.train_metrics))
        if validation_data is not None:
            callbacks.on_test_begin()
            callbacks.on_test_batch_begin(0)  # once around the compiled loop, as in evaluate
            val_logs = self._evaluate(validation_data)
            callbacks.on_test_batch_end(0, val_logs)
            callbacks.on_test_end(val_logs)
            logs.update({"val_" + k: v for k, v in val_logs.items()})
        logs["learning_rate"] = learning_rate(self.optimizer)
        logs["time_s"] = time.time() - start
        for prefix, data in (epoch_evaluations or {}).items():
            logs.update(self.evaluate(data, prefix=prefix))
        return logs
