"""``train_and_evaluate(config, workdir)``: the one function behind the example trainer.

Everything the loop uses is built here, in one visible place: data, strategy,
model, loss, optimizer, the Trainer. Notebooks, tests and the absl trainer
(``examples/train.py``) all call this same function.

A run directory is complete when ``results.json`` exists; it is written last.
The directory holds ``config.json``, ``history.json`` / ``history.csv``,
``learning_curves.png``, ``model.keras`` and ``results.json``.

Example:

>>> from tfcustom import TrainConfig, train_and_evaluate
>>> results = train_and_evaluate(TrainConfig(model="mlp", epochs=1), "runs/mlp")
>>> results["test"]["accuracy"]
0.85
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Dict, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom import data as data_lib
from tfcustom import losses as losses_lib
from tfcustom import models as models_lib
from tfcustom import optimizers as optimizers_lib
from tfcustom.config import TrainConfig, _split_sam
from tfcustom.early_stopping import EarlyStopping
from tfcustom.errors import ConfigError, check, config_error
from tfcustom.trainer import Trainer

RESULTS_FILE = "results.json"


def prepare_output_dir(workdir: str, overwrite: bool = False) -> None:
    """Refuse to write over a finished run (unless ``overwrite``); check the
    directory can be written. Nothing is created when this raises."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise config_error("output path exists and is not a directory", workdir, "pass another --output_dir")
    if os.path.isdir(workdir) and os.listdir(workdir):
        if not overwrite:
            state = "a finished run" if os.path.exists(os.path.join(workdir, RESULTS_FILE)) else "an unfinished run"
            raise config_error(f"output directory already holds {state}", workdir, "pass --overwrite to start over, or choose another --output_dir")
        shutil.rmtree(workdir)
    parent = os.path.dirname(os.path.abspath(workdir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    check(os.access(parent, os.W_OK), "output directory cannot be created here (not writable)", parent, "choose a writable --output_dir")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Python, NumPy, TF and Keras seeds; optionally deterministic TF kernels."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def build_model(config: TrainConfig, dataset: data_lib.Dataset, strategy: tf.distribute.Strategy) -> keras.Model:
    """The configured model, built under ``strategy.scope()`` on the dataset's input shape."""
    with strategy.scope():
        model = models_lib.get(config.model, num_classes=dataset.num_classes, **config.model_kwargs)
        model(tf.zeros((1,) + dataset.input_shape, tf.float32), training=False)
    return model


def build_loss(config: TrainConfig) -> keras.losses.Loss:
    kwargs = {}
    if config.label_smoothing:
        kwargs["label_smoothing"] = config.label_smoothing
    try:
        return losses_lib.get(config.loss, **kwargs)
    except TypeError:
        raise config_error("this loss takes no label smoothing", config.loss, "drop --label_smoothing or use sparse_categorical_crossentropy") from None


def build_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    base, _ = _split_sam(config.optimizer)
    total = steps_per_epoch * config.epochs
    schedule = optimizers_lib.make_schedule(
        config.lr_schedule, config.learning_rate, total_steps=total, warmup_steps=int(config.warmup_epochs * steps_per_epoch)
    )
    return optimizers_lib.get(base, schedule, weight_decay=config.weight_decay, momentum=config.momentum)


def build_gradient_fn(config: TrainConfig):
    _, use_sam = _split_sam(config.optimizer)
    if use_sam or config.sam_rho:
        from tfcustom.sam import SAM

        return SAM(rho=config.sam_rho if config.sam_rho is not None else 0.05)
    return None


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


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
      config: the run's :class:`TrainConfig` (validated here first).
      workdir: the run's output directory.
      strategy: a ``tf.distribute`` strategy (default: the current one).
      overwrite: replace an existing run in ``workdir``.
      dataset: an in-memory :class:`tfcustom.data.Dataset` to use instead of
        loading ``config.dataset``.

    Returns:
      ``{"test": {...}, "history": [...], "train_time_s": ..., ...}`` — also
      written to ``workdir/results.json``.
    """
    config.validate()
    prepare_output_dir(workdir, overwrite)
    seed_everything(config.seed, config.deterministic)
    strategy = strategy or tf.distribute.get_strategy()
    if dataset is None:
        dataset = data_lib.load(config.dataset, config.data_dir)
    train_split, val_split = data_lib.split_validation(dataset.train, config.validation_size, config.seed)
    train = data_lib.InputPipeline(train_split, config.batch_size, shuffle=True, seed=config.seed)
    val = data_lib.InputPipeline(val_split, min(config.eval_batch_size, len(val_split)), cache=True) if val_split is not None else None
    test = data_lib.InputPipeline(dataset.test, min(config.eval_batch_size, len(dataset.test)), cache=True)
    for pipe in (train, val, test):
        if pipe is not None:
            check(pipe.batch_size % strategy.num_replicas_in_sync == 0 or pipe is not train,
                  f"batch size must divide evenly by the {strategy.num_replicas_in_sync} replicas", pipe.batch_size,
                  f"use a multiple of {strategy.num_replicas_in_sync}")

    model = build_model(config, dataset, strategy)
    loss = build_loss(config)
    optimizer = build_optimizer(config, train.steps_per_epoch)
    metrics = list(config.metrics)
    trainer = Trainer(
        model, loss, optimizer, metrics,
        strategy=strategy,
        num_classes=dataset.num_classes,
        clip_global_norm=config.clip_global_norm,
        jit_compile=config.jit_compile,
        steps_per_execution=config.steps_per_execution,
        on_nonfinite=config.on_nonfinite,
        gradient_fn=build_gradient_fn(config),
        output_dir=workdir,
        verbose=config.verbose,
    )
    early_stopping = None
    if config.early_stopping_patience is not None:
        early_stopping = EarlyStopping(config.monitor, patience=config.early_stopping_patience, restore_best=True)

    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "config.json"), config.to_dict())
    logging.info("Run directory %s; %d train / %d validation / %d test examples; model %s with %d parameters",
                 workdir, len(train), len(val) if val else 0, len(test), config.model, model.count_params())
    start = time.time()
    history = trainer.fit(train, config.epochs, val, early_stopping=early_stopping)
    train_time = time.time() - start
    test_logs = trainer.evaluate(test)
    logging.info("Test: %s", ", ".join(f"{k}={v:.4f}" for k, v in test_logs.items()))

    model_path = os.path.join(workdir, "model.keras")
    tmp_path = os.path.join(workdir, "model.tmp.keras")
    model.save(tmp_path)
    os.replace(tmp_path, model_path)
    history.plot(os.path.join(workdir, "learning_curves.png"))
    results = {
        "test": test_logs,
        "history": history.records,
        "train_time_s": train_time,
        "epochs_run": len(history),
        "num_replicas": strategy.num_replicas_in_sync,
        "strategy": type(strategy).__name__,
        "model_path": model_path,
        "class_names": list(dataset.class_names),
    }
    _write_json(os.path.join(workdir, RESULTS_FILE), results)
    return results
