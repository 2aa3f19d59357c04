"""The Trainer: a thin loop around the compiled steps of :mod:`tfcustom.steps`.

The Trainer owns I/O, progress, logging, history and early stopping; the
steps own the math. Objects the loop uses (the strategy, a checkpoint manager)
are built by the caller and passed in. Build the model under
``strategy.scope()``; the Trainer builds the optimizer and metrics there too.

Example:

>>> strategy = tf.distribute.get_strategy()
>>> with strategy.scope():
...     model = tfcustom.models.get("mlp", num_classes=10)
...     model.build((None, 28, 28, 1))
>>> trainer = Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
...                   keras.optimizers.Adam(1e-3), metrics=["accuracy"], strategy=strategy)
>>> history = trainer.fit(train_pipeline, epochs=5, validation_data=val_pipeline)
>>> trainer.evaluate(test_pipeline)
{'loss': 0.31, 'accuracy': 0.89}

To change what a step computes, pass ``gradient_fn`` (see
:func:`tfcustom.steps.compute_loss_and_gradients`) or subclass and override
:meth:`Trainer.make_train_step` / :meth:`Trainer.make_test_step`.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Dict, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom import steps as steps_lib
from tfcustom.data.pipeline import InputPipeline
from tfcustom.early_stopping import EarlyStopping
from tfcustom.errors import NonFiniteLossError, check, check_positive_int, config_error
from tfcustom.history import History

DataLike = Union[InputPipeline, tf.data.Dataset]


def _metric_from_spec(spec, num_classes: Optional[int]):
    """A metric name (resolved by :func:`tfcustom.metrics.get`) or instance -> a fresh metric."""
    if isinstance(spec, str):
        if spec in ("accuracy", "acc"):
            return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        from tfcustom import metrics as metrics_lib  # registry of tfcustom metrics

        return metrics_lib.get(spec, num_classes=num_classes)
    if isinstance(spec, keras.metrics.Metric):
        return spec.__class__.from_config(spec.get_config())
    raise config_error("a metric must be a name or a keras.metrics.Metric", spec, "pass e.g. 'accuracy' or keras.metrics.SparseCategoricalAccuracy()")


def _scalar_results(metric) -> Dict[str, float]:
    """A metric's result as scalars: vector results are reported per element."""
    value = np.asarray(metric.result())
    if value.ndim == 0:
        return {metric.name: float(value)}
    return {}


class Trainer:
    """Train, evaluate and predict with a user-owned model and step.

    Args:
      model: a Keras model, built under ``strategy.scope()``.
      loss: a ``keras.losses.Loss``; its ``call`` gives per-example values.
      optimizer: a Keras optimizer (built by the Trainer under the scope).
      metrics: names (``"accuracy"``, or any name of ``tfcustom.metrics``) or
        metric instances (cloned for training and evaluation).
      strategy: the ``tf.distribute`` strategy (default: the current one).
      num_classes: for metrics given by name that need it.
      clip_global_norm: clip the summed gradient to this global norm.
      jit_compile: XLA-compile each replica's forward and backward pass.
      steps_per_execution: train steps run inside one ``tf.function`` call.
      on_nonfinite: ``"stop"`` (raise :class:`NonFiniteLossError`, variables
        untouched by the bad step) or ``"skip"`` (skip that update and count it).
      gradient_fn: replaces :func:`tfcustom.steps.compute_loss_and_gradients`
        (e.g. :class:`tfcustom.sam.SAM`).
      output_dir: where ``history.json`` / ``history.csv`` are written each epoch.
      verbose: 1 shows a progress bar per epoch, 0 only logs.
    """

    def __init__(
        self,
        model: keras.Model,
        loss: keras.losses.Loss,
        optimizer: keras.optimizers.Optimizer,
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
    ):
        check(isinstance(model, keras.Model), "model must be a keras.Model", type(model).__name__, "pass a keras.Model instance")
        check(isinstance(loss, keras.losses.Loss), "loss must be a keras.losses.Loss", type(loss).__name__, "wrap the function in a keras.losses.Loss subclass or use keras.losses.get")
        check(isinstance(optimizer, keras.optimizers.Optimizer), "optimizer must be a keras optimizer", type(optimizer).__name__, "pass e.g. keras.optimizers.Adam()")
        check_positive_int("steps_per_execution", steps_per_execution)
        check(model.built and model.trainable_variables, "model has no trainable variables yet", model.name, "build the model (call it on a batch or model.build(input_shape)) under strategy.scope() first")
        self.strategy = strategy or tf.distribute.get_strategy()
        for v in model.trainable_variables:
            check(
                self.strategy.extended.variable_created_in_scope(v.value if hasattr(v, "value") else v),
                "model variables were not created under the strategy's scope",
                v.path if hasattr(v, "path") else v.name,
                "create and build the model inside `with strategy.scope():`",
            )
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
        with self.strategy.scope():
            self.optimizer.build(model.trainable_variables)
            self.train_loss = keras.metrics.Mean(name="loss")
            self.eval_loss = keras.metrics.Mean(name="loss")
            self.train_metrics = [_metric_from_spec(m, num_classes) for m in metrics]
            self.eval_metrics = [_metric_from_spec(m, num_classes) for m in metrics]
            # Loop position: what a checkpoint needs to resume exactly.
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.train_step = self.make_train_step()
        self.test_step = self.make_test_step()
        self.predict_step = steps_lib.make_predict_step(model)
        self.history = History()

    # -- steps (override these to change what a step computes) ---------------

    def make_train_step(self) -> Callable:
        """The compiled ``train_step(iterator, num_steps)``; see :func:`tfcustom.steps.make_train_step`."""
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
        )

    def make_test_step(self) -> Callable:
        """The compiled ``test_loop(iterator)``; see :func:`tfcustom.steps.make_test_step`."""
        return steps_lib.make_test_step(self.model, self.loss, self.eval_metrics, loss_tracker=self.eval_loss, strategy=self.strategy)

    # -- input ----------------------------------------------------------------

    def _distribute(self, data: DataLike, epoch: int = 0, skip_batches: int = 0):
        if isinstance(data, InputPipeline):
            replicas = self.strategy.num_replicas_in_sync
            check(
                data.batch_size % replicas == 0,
                f"global batch size must divide evenly by the {replicas} replicas",
                data.batch_size,
                f"use a multiple of {replicas}",
            )
            return self.strategy.distribute_datasets_from_function(lambda ctx: data.dataset(epoch, skip_batches, ctx))
        if isinstance(data, tf.data.Dataset):
            check(skip_batches == 0, "a plain tf.data.Dataset cannot resume mid-epoch", skip_batches, "pass a tfcustom.data.InputPipeline for exact resume")
            return self.strategy.experimental_distribute_dataset(data)
        raise config_error("data must be a tfcustom.data.InputPipeline or a batched tf.data.Dataset", type(data).__name__, "wrap arrays with tfcustom.data.InputPipeline(Split(x, y), batch_size)")

    @staticmethod
    def _steps_per_epoch(data: DataLike, steps_per_epoch: Optional[int]) -> int:
        if steps_per_epoch is not None:
            return check_positive_int("steps_per_epoch", steps_per_epoch)
        if isinstance(data, InputPipeline):
            return data.steps_per_epoch
        n = int(data.cardinality())
        check(n > 0, "cannot tell how many batches the dataset has", n, "pass steps_per_epoch, or use a finite batched dataset")
        return n

    # -- training -------------------------------------------------------------

    def _results(self, loss_metric, metrics, prefix: str = "") -> Dict[str, float]:
        out = {prefix + "loss": float(loss_metric.result())}
        for m in metrics:
            out.update({prefix + k: v for k, v in _scalar_results(m).items()})
        return out

    def _learning_rate(self) -> float:
        lr = self.optimizer.learning_rate
        return float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr))

    def fit(
        self,
        train: DataLike,
        epochs: int,
        validation_data: Optional[DataLike] = None,
        *,
        steps_per_epoch: Optional[int] = None,
        early_stopping: Optional[EarlyStopping] = None,
        checkpoint_manager: Optional[tf.train.CheckpointManager] = None,
        checkpoint_every_steps: Optional[int] = None,
    ) -> History:
        """Train until ``epochs`` epochs have run (resuming from ``self.epoch``).

        Returns the :class:`History`. With ``checkpoint_manager``, saves at each
        epoch end and every ``checkpoint_every_steps`` steps.
        """
        check_positive_int("epochs", epochs)
        if checkpoint_every_steps is not None:
            check_positive_int("checkpoint_every_steps", checkpoint_every_steps)
        steps = self._steps_per_epoch(train, steps_per_epoch)
        logging.info(
            "Training %d epochs of %d steps on %d replica(s) (%s), steps_per_execution=%d, jit_compile=%s",
            epochs, steps, self.strategy.num_replicas_in_sync, type(self.strategy).__name__,
            self.steps_per_execution, self.jit_compile,
        )
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
            iterator = iter(self._distribute(train, epoch, skip))
            done = skip
            while done < steps:
                n = min(self.steps_per_execution, steps - done)
                out = self.train_step(iterator, tf.constant(n, dtype=tf.int32))
                ran = int(out["steps_run"]) + (int(out["skipped"]) if self.on_nonfinite == "skip" else 0)
                if bool(out["nonfinite"]):
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
                if progbar is not None:
                    progbar.update(done, values=list(self._results(self.train_loss, self.train_metrics).items()), finalize=False)
                if checkpoint_manager is not None and checkpoint_every_steps and done < steps:
                    step_now = int(self.global_step.numpy())
                    if step_now // checkpoint_every_steps > (step_now - ran) // checkpoint_every_steps:
                        checkpoint_manager.save(checkpoint_number=step_now)
            logs = {"epoch": epoch + 1}
            logs.update(self._results(self.train_loss, self.train_metrics))
            if validation_data is not None:
                logs.update(self.evaluate(validation_data, prefix="val_"))
            logs["learning_rate"] = self._learning_rate()
            logs["time_s"] = time.time() - start
            if progbar is not None:
                progbar.update(steps, values=[(k, v) for k, v in logs.items() if k not in ("epoch", "time_s")], finalize=True)
            logging.info("epoch %d/%d: %s", epoch + 1, epochs, ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if k != "epoch"))
            self.history.append(logs)
            self.epoch.assign(epoch + 1)
            self.step_in_epoch.assign(0)
            stop = False
            if early_stopping is not None:
                check(early_stopping.monitor in logs, "early stopping monitors a value the epoch logs do not have", early_stopping.monitor, f"monitor one of: {', '.join(k for k in logs if k != 'epoch')}")
                stop = early_stopping.update(logs[early_stopping.monitor], epoch + 1, self.model)
            if self.output_dir:
                self.history.write(self.output_dir)
            if checkpoint_manager is not None:
                checkpoint_manager.save(checkpoint_number=int(self.global_step.numpy()))
            if stop:
                logging.info("Early stopping after epoch %d: %s did not improve for %d epochs (best %.4g at epoch %d)",
                             epoch + 1, early_stopping.monitor, early_stopping.patience, float(early_stopping.best.numpy()), int(early_stopping.best_epoch.numpy()))
                break
        if early_stopping is not None and early_stopping.restore(self.model):
            logging.info("Restored the weights of epoch %d (best %s)", int(early_stopping.best_epoch.numpy()), early_stopping.monitor)
        return self.history

    # -- evaluation and prediction ----------------------------------------------

    def evaluate(self, data: DataLike, prefix: str = "") -> Dict[str, float]:
        """Loss and metrics over **every** example of ``data`` (``training=False``)."""
        self.eval_loss.reset_state()
        for m in self.eval_metrics:
            m.reset_state()
        self.test_step(iter(self._distribute(data)))
        return self._results(self.eval_loss, self.eval_metrics, prefix)

    def predict(self, data: DataLike) -> np.ndarray:
        """Model outputs for every example of ``data``, in input order."""
        dataset = data.dataset() if isinstance(data, InputPipeline) else data
        return self.predict_step(iter(dataset)).numpy()
