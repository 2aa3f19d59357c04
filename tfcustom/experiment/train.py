"""``train_and_evaluate(config, workdir)``: the one function behind the example trainer.

Everything the loop uses is built here, in order, in one visible place:
strategy, data, model, optimizer, the Trainer with its summary writer, early
stopping and checkpoints; then it calls ``fit``, ``evaluate`` and ``export``.
Each object has one builder (`tfcustom.experiment.builders`); the run
directory's bookkeeping lives in `tfcustom.experiment.run_files` and
`tfcustom.experiment.run_checkpoints`. Notebooks, tests and the absl trainer
(``examples/train.py``) all call this same function.

A run directory is complete when ``results.json`` exists; it is written last.
The directory holds ``config.json``, ``history.json`` / ``history.csv``,
``learning_curves.png``, ``model.keras``, ``saved_model/`` (the SavedModel
with the serving signature, see [`tfcustom.experiment.export`][tfcustom.experiment.export]), ``results.json``,
the pictures of [`tfcustom.experiment.plots`][tfcustom.experiment.plots] (``confusion_matrix.png``,
``misclassified.png``, ``reliability.png`` with the ece metric) and, with
``config.tensorboard``, ``tensorboard/`` (see [`tfcustom.callbacks.summaries`][tfcustom.callbacks.summaries]).

Examples:
    >>> from tfcustom import TrainConfig, train_and_evaluate
    >>> results = train_and_evaluate(TrainConfig(model="mlp", epochs=1), "runs/mlp")
    >>> results["test"]["accuracy"]
    0.85
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom import data as data_lib
from tfcustom.callbacks.early_stopping import EarlyStopping
from tfcustom.callbacks.summaries import SummaryWriter
from tfcustom.distribute import strategy as strategy_lib
from tfcustom.distribute.preemption import ClusterPreemption, is_cluster
from tfcustom.experiment import autotune, plots, time_to_accuracy
from tfcustom.experiment.averaged_weights import averages_from_config, evaluate_raw_and_averaged
from tfcustom.experiment.builders import (  # noqa: F401  (build_loss, ...: re-exported, the names of earlier releases)
    build_gradient_fn, build_loss, build_model, build_optimizer, pipelines, seed_everything,
)
from tfcustom.experiment.config import TrainConfig
from tfcustom.experiment.export import export_model
from tfcustom.experiment.measured_settings import choose_settings, find_settings  # noqa: F401
from tfcustom.experiment.run_checkpoints import RunCheckpoints, check_workers_agree, checkpoint_dir, is_chief  # noqa: F401
from tfcustom.experiment.run_files import (  # noqa: F401
    CONFIG_FILE, KERAS_FILE, RESULTS_FILE, SAVED_MODEL_DIR, TENSORBOARD_DIR, claimed_run_dir, prepare_output_dir,
)
from tfcustom.run_json import write_json
from tfcustom.training.rollback import Rollback
from tfcustom.training.trainer import Trainer


def train_and_evaluate(
    config: TrainConfig,
    workdir: str,
    *,
    strategy: Optional[tf.distribute.Strategy] = None,
    overwrite: bool = False,
    dataset: Optional[data_lib.Dataset] = None,
) -> Dict[str, Any]:
    """Train ``config`` and evaluate on the test split; write the run to ``workdir``.

    Args:
      config: the run's [`TrainConfig`][tfcustom.TrainConfig] (validated here first).
      workdir: the run's output directory.
      strategy: a ``tf.distribute`` strategy (default: the one whose scope
        is active, else ``tfcustom.distribute.strategy.select(config.strategy, ...)``).
        Select it before anything else uses TensorFlow, as the CLI does.
      overwrite: replace an existing run in ``workdir``.
      dataset: an in-memory [`tfcustom.data.Dataset`][tfcustom.data.Dataset] to use instead of
        loading ``config.dataset``.

    Returns:
      ``{"test": {...}, "history": [...], "train_time_s": ..., ...}`` — also
      written to ``workdir/results.json``.

    Examples:
        >>> import os, tempfile, numpy as np
        >>> from tfcustom.data import from_numpy
        >>> rng = np.random.default_rng(0)
        >>> data = from_numpy(rng.integers(0, 255, (64, 8, 8, 1), dtype=np.uint8), rng.integers(0, 2, 64),
        ...                   rng.integers(0, 255, (16, 8, 8, 1), dtype=np.uint8), rng.integers(0, 2, 16))
        >>> config = TrainConfig(model="logistic_regression", epochs=1, batch_size=16, validation_size=0,
        ...                      verbose=0, tensorboard=False, jit_compile=False, precision="float32")
        >>> workdir = tempfile.mkdtemp()
        >>> results = train_and_evaluate(config, workdir, dataset=data)
        >>> sorted(results["test"]), os.path.exists(os.path.join(workdir, "results.json"))
        (['accuracy', 'loss'], True)
    """
    config = config.validate()  # augment and export_formats as tuples (the caller's config is not changed)
    if strategy is None:
        strategy = _default_strategy(config)
    chief = is_chief(strategy)  # only the chief writes the run's files
    with claimed_run_dir(workdir, config, overwrite, chief) as resume:
        seed_everything(config.seed, config.deterministic)
        dataset = _dataset(config, dataset)
        requested = config  # config.json keeps "find"; the run trains with the values found
        config, found = find_settings(config, workdir, resume, strategy, dataset)
        train, val, test = pipelines(config, dataset, strategy.num_replicas_in_sync)
        # jit_compile and precision: "auto" is decided by timing the model here
        # (tfcustom.experiment.autotune), or read back from the run being resumed.
        tuned = choose_settings(config, workdir, resume, strategy, dataset, train)
        tuned.finders = found
        model, policy = _model_at_precision(config, dataset, strategy, tuned.precision)
        with strategy.scope():  # a Keras optimizer belongs to the strategy it is created under
            optimizer = strategy_lib.wrap_optimizer(build_optimizer(config, train.steps_per_epoch), policy)
        summary_writer = _summary_writer(config, workdir, chief)
        trainer = Trainer(
            model, build_loss(config), optimizer, list(config.metrics),
            strategy=strategy, num_classes=dataset.num_classes, clip_global_norm=config.clip_global_norm,
            jit_compile=tuned.jit_compile, steps_per_execution=config.steps_per_execution,
            on_nonfinite=config.on_nonfinite, gradient_fn=build_gradient_fn(config),
            output_dir=workdir if chief else None, verbose=config.verbose if chief else 0,
            log_replica_losses=config.log_replica_losses,
            summary_writer=summary_writer, weight_averaging=averages_from_config(config), rollback=Rollback.from_config(config),
        )
        early_stopping = _early_stopping(config, val is not None, strategy)
        checkpoints = RunCheckpoints(trainer, early_stopping, workdir, strategy, config.keep_checkpoints)
        preemption = ClusterPreemption(strategy) if is_cluster(strategy) else None  # a SIGTERM to any worker stops all at one step
        checkpoints.restore(resume)
        _start_run(workdir, requested, config, tuned, trainer, summary_writer, chief)
        logging.info("Run directory %s; %d train / %d validation / %d test examples; model %s with %d parameters",
                     workdir, len(train), len(val) if val else 0, len(test), config.model, model.count_params())
        start = time.time()
        history = trainer.fit(train, config.epochs, val, early_stopping=early_stopping, checkpoint_manager=checkpoints.manager,
                              checkpoint_every_steps=config.checkpoint_every_steps,
                              best_checkpoint_manager=checkpoints.best_manager, preemption=preemption,
                              epoch_evaluations={"test_": test} if config.target_accuracy_test else None)
        train_time = time.time() - start
        exported_best = bool(config.export_best and checkpoints.restore_best(early_stopping))  # the best --monitor epoch, not the last
        test_logs, averaging = evaluate_raw_and_averaged(trainer, train, test)  # with averaging, the model now holds the average
        results = _results(config, workdir, strategy, dataset, model, policy, tuned, history, test_logs, averaging,
                           train_time=train_time, best_epoch=int(early_stopping.best_epoch.numpy()), exported_best=exported_best)
        _log_time_to_accuracy(results, config, history, train.steps_per_epoch)
        checkpoints.remove_worker_copies()
        if chief:
            _write_run_outputs(results, config, workdir, dataset, trainer, history, test, test_logs, summary_writer)
        return results


def _default_strategy(config: TrainConfig) -> tf.distribute.Strategy:
    """The strategy whose scope is active, else the configured one."""
    if tf.distribute.has_strategy():
        return tf.distribute.get_strategy()
    return strategy_lib.select(config.strategy, num_cpu_replicas=config.num_cpu_replicas, tpu=config.tpu_address,
                               cluster_timeout=config.cluster_timeout)


def _dataset(config: TrainConfig, dataset):
    """The run's examples: ``dataset`` or ``config.dataset`` loaded (in memory, or streamed from TFRecord shards),
    cut to ``train_subset`` / ``test_subset``."""
    if dataset is None:
        dataset = data_lib.ShardedDataset.open(config.dataset[len("tfrecord:"):], config.verify_shards) \
            if config.dataset.startswith("tfrecord:") else data_lib.load(config.dataset, config.data_dir)
    if not isinstance(dataset, data_lib.ShardedDataset):
        dataset = data_lib.subset(dataset, config.train_subset, config.test_subset)
    return dataset


def _model_at_precision(config: TrainConfig, dataset, strategy, precision: str):
    """``(model, dtype policy)``: the run's model built under the precision's policy.

    The dtype policy is read by layers when they are created: it is set for the
    model only, so that it does not leak into the caller's later models."""
    previous_policy = keras.mixed_precision.global_policy()
    policy = strategy_lib.set_precision(precision, strategy)
    try:
        return build_model(config, dataset, strategy), policy
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _summary_writer(config: TrainConfig, workdir: str, chief: bool) -> Optional[SummaryWriter]:
    """TensorBoard's writer (``config.tensorboard``), started by `_start_run` once the position is known.

    Written by the chief only: the other workers' writers compute the same
    values at the same steps, and discard them."""
    if not config.tensorboard:
        return None
    return SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), config.log_every_steps,
                         histograms_every_epochs=config.histograms_every_epochs, profile_steps=config.profile_steps, chief=chief)


def _early_stopping(config: TrainConfig, has_validation: bool, strategy) -> EarlyStopping:
    """The monitored value is always tracked (for the "best" checkpoint); it only
    stops training when a patience is set."""
    monitor = config.monitor if has_validation or not config.monitor.startswith("val_") else "loss"
    with strategy.scope():
        return EarlyStopping(monitor, patience=config.early_stopping_patience, restore_best=config.early_stopping_patience is not None)


def _start_run(workdir, requested: TrainConfig, config: TrainConfig, tuned, trainer, summary_writer, chief: bool) -> None:
    """``config.json`` (what was asked) and ``autotune.json`` (what was decided); TensorBoard from the restored step."""
    os.makedirs(workdir, exist_ok=True)
    if chief:
        write_json(os.path.join(workdir, CONFIG_FILE), requested.to_dict())
        autotune.save(tuned, workdir)
    if summary_writer is not None:  # a resumed run drops the points written after its checkpoint
        summary_writer.start(int(trainer.global_step.numpy()), int(trainer.epoch.numpy()), config.to_dict())


def _results(config, workdir, strategy, dataset, model, policy, tuned, history, test_logs, averaging, *,
             train_time: float, best_epoch: int, exported_best: bool) -> Dict[str, Any]:
    """What ``results.json`` says about the run."""
    return {
        "test": test_logs,
        "history": history.records,
        "train_time_s": train_time,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "exported": "best" if exported_best else "final",
        "num_replicas": strategy.num_replicas_in_sync,
        "strategy": type(strategy).__name__,
        "precision": policy,
        "model_path": os.path.join(workdir, KERAS_FILE),
        "saved_model_path": os.path.join(workdir, SAVED_MODEL_DIR),
        "class_names": list(dataset.class_names),
        "parameters": int(model.count_params()),
        "jit_compile": tuned.jit_compile,
        "autotune": tuned.to_dict(),
        **({"weight_averaging": averaging} if averaging else {}),  # raw vs averaged test metrics; "test": the exported model's
    }


def _log_time_to_accuracy(results: Dict[str, Any], config: TrainConfig, history, steps_per_epoch: int) -> None:
    """``results["time_to_accuracy"]`` with ``--target_accuracy``: when validation (and test) first reached it."""
    if config.target_accuracy is None:
        return
    results["time_to_accuracy"] = {}
    for name, key in (("validation", "val_accuracy"), ("test", "test_accuracy")):
        if key == "test_accuracy" and not config.target_accuracy_test:
            continue
        reached = time_to_accuracy.first_reached(history.records, key, config.target_accuracy, steps_per_epoch)
        results["time_to_accuracy"][name] = reached
        logging.info("%s", time_to_accuracy.describe(name.capitalize(), reached))


def _export_check_images(dataset, count: int = 64):
    """The first ``count`` test images as float32 in [0, 1] (the LiteRT/ONNX export check), or None when streamed."""
    if isinstance(dataset, data_lib.ShardedDataset):
        return None
    x = np.asarray(dataset.test.x[:count])
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def _write_run_outputs(results, config: TrainConfig, workdir: str, dataset, trainer, history, test, test_logs, summary_writer) -> None:
    """The chief's files, ``results.json`` last: the exports, the pictures, TensorBoard's test point."""
    # model.keras and saved_model/ (serving signature), each written to a
    # temporary sibling and renamed into place (tfcustom.experiment.export). The run
    # owns its directory, so a resumed run replaces an earlier export.
    export_model(trainer.model, workdir, overwrite=True, input_shape=dataset.input_shape, formats=config.export_formats,
                 check_images=_export_check_images(dataset))
    history.plot(os.path.join(workdir, "learning_curves.png"))
    confusion_png = None
    if isinstance(dataset, data_lib.ShardedDataset):
        logging.info("No confusion_matrix.png / misclassified.png: the pictures need the test split in memory, not streamed")
    else:
        pictures = plots.write_run_pictures(workdir, dataset.test.x, dataset.test.y, plots.softmax(trainer.predict(test)),
                                            dataset.class_names, reliability="ece" in config.metrics)
        results["confusion_matrix"] = pictures["counts"].tolist()  # [true][predicted] counts on the test split
        with open(pictures["confusion_matrix"], "rb") as f:
            confusion_png = f.read()
    if summary_writer is not None:  # the chief's
        summary_writer.write_test(int(trainer.epoch.numpy()) - 1, test_logs, confusion_png)
        summary_writer.close()
    write_json(os.path.join(workdir, RESULTS_FILE), results)
