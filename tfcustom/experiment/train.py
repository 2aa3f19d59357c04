"""``train_and_evaluate(config, workdir)``: the one function behind the example trainer.

Everything the loop uses is built here, in one visible place: data, strategy,
model, loss, optimizer, the Trainer. Notebooks, tests and the absl trainer
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

import dataclasses
import os
import shutil
import time
from typing import Any, Dict, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.experiment import autotune
from tfcustom.experiment import time_to_accuracy
from tfcustom import data as data_lib
from tfcustom import losses as losses_lib
from tfcustom import optimizers as optimizers_lib
from tfcustom.distribute import strategy as strategy_lib
from tfcustom.experiment.config import TrainConfig, _split_sam
from tfcustom.training.checkpoint import check_index, model_checkpoint, restore_latest, training_checkpoint
from tfcustom.callbacks.early_stopping import EarlyStopping
from tfcustom.training.history import History
from tfcustom.training.rollback import Rollback
from tfcustom.experiment.export import BEST_SUBDIR, CHECKPOINT_DIR, CONFIG_FILE, KERAS_FILE, RESULTS_FILE, SAVED_MODEL_DIR, export_model
from tfcustom.experiment import finders, user_model
from tfcustom.experiment.averaged_weights import averages_from_config, evaluate_raw_and_averaged
from tfcustom.callbacks.weight_averaging import SWALearningRate
from tfcustom import disk_errors
from tfcustom.run_json import read_json, write_json
from tfcustom.experiment.run_lock import LOCK_FILE, RunLock
from tfcustom.errors import check, config_error, is_writable_dir
from tfcustom.distribute.preemption import ClusterPreemption, is_cluster
from tfcustom.training.trainer import Trainer
from tfcustom.experiment import plots
from tfcustom.callbacks.summaries import SummaryWriter

TENSORBOARD_DIR = "tensorboard"



def _delete_run(workdir: str) -> None:
    """Delete everything in ``workdir`` but this run's lock file."""
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if name == LOCK_FILE:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def prepare_output_dir(workdir: str, config: TrainConfig, overwrite: bool = False, chief: bool = True) -> bool:
    """Decide what to do with ``workdir`` before anything is written.

    Returns True when an unfinished run of the same config is there to resume.
    Refuses a finished run, a different config (naming the fields that differ)
    and a directory that cannot be written, unless ``overwrite`` (which deletes
    the old run). Nothing is created or changed when this raises.

    A non-chief worker of a cluster (``chief=False``) only writes temporary
    checkpoint copies: the chief decides about the directory (and deletes it
    with ``overwrite``). A worker resumes unless ``overwrite``, from whatever
    checkpoint the chief's directory holds; where it sees the chief's run
    (a shared directory) it refuses what the chief refuses, so that no worker
    is left waiting for a chief that has stopped.
    """
    config_path = os.path.join(workdir, CONFIG_FILE)
    if not chief:
        if not overwrite and os.path.exists(config_path):
            _check_resumable(workdir, config)
        return not overwrite
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise config_error("output path exists and is not a directory", workdir, "pass another --output_dir")
    if os.path.isdir(workdir) and [n for n in os.listdir(workdir) if n != LOCK_FILE]:
        if overwrite:
            check(is_writable_dir(workdir), "output directory is not writable", workdir, "choose a writable --output_dir")
            _delete_run(workdir)
            return False
        if not os.path.exists(os.path.join(workdir, RESULTS_FILE)) and not os.path.exists(config_path):
            raise config_error("output directory is not empty and holds no tfcustom run", workdir, "choose another --output_dir, or pass --overwrite to delete its content")
        _check_resumable(workdir, config)
        check(is_writable_dir(workdir), "output directory is not writable", workdir, "choose a writable --output_dir")
        return True
    parent = os.path.abspath(workdir)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    check(os.path.isdir(parent) and is_writable_dir(parent), "output directory cannot be created (not writable)", parent, "choose a writable --output_dir")
    return False


def _check_resumable(workdir: str, config: TrainConfig) -> None:
    """Refuse a finished run and a run of a different config (naming the fields)."""
    if os.path.exists(os.path.join(workdir, RESULTS_FILE)):
        read_json(os.path.join(workdir, RESULTS_FILE), dict, "delete it and rerun the same command to test and export the last checkpoint again, or pass --overwrite to start over")
        raise config_error("output directory already holds a finished run", workdir, "pass --overwrite to start over, or choose another --output_dir")
    diff = TrainConfig.read(os.path.join(workdir, CONFIG_FILE)).differences(config)
    if diff:
        fields = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in diff.items()))
        raise config_error(f"cannot resume: the config differs from the run's ({fields})", workdir,
                           "run with the same flags to resume, pass --overwrite to start over, or choose another --output_dir")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def check_workers_agree(strategy: tf.distribute.Strategy, trainer: Trainer) -> None:
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


def seed_everything(seed: int, deterministic: bool) -> None:
    """Python, NumPy, TF and Keras seeds; optionally deterministic TF kernels."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _export_check_images(dataset, count: int = 64):
    """The first ``count`` test images as float32 in [0, 1] (the LiteRT/ONNX export check), or None when streamed."""
    if isinstance(dataset, data_lib.ShardedDataset):
        return None
    x = np.asarray(dataset.test.x[:count])
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def build_model(config: TrainConfig, dataset: data_lib.Dataset, strategy: tf.distribute.Strategy) -> keras.Model:
    """The configured model, built under ``strategy.scope()`` on the dataset's input shape."""
    with strategy.scope():
        model = user_model.model_from_name(config.model, dataset.num_classes, dataset.input_shape, **config.model_kwargs)
        model(tf.zeros((1,) + dataset.input_shape, tf.float32), training=False)
    return model


def build_loss(config: TrainConfig) -> keras.losses.Loss:
    """The configured loss, on logits (``from_logits=True``): tfcustom's models output logits."""
    kwargs = {"from_logits": True}
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
    if config.swa_lr is not None:  # SWA's constant learning rate from --swa_start_epoch on
        schedule = SWALearningRate(schedule, start_step=(config.swa_start_epoch - 1) * steps_per_epoch, swa_lr=config.swa_lr)
    return optimizers_lib.get(base, schedule, weight_decay=config.weight_decay, momentum=config.momentum)


def build_gradient_fn(config: TrainConfig):
    _, use_sam = _split_sam(config.optimizer)
    if use_sam or config.sam_rho:
        from tfcustom.training.sam import SAM

        return SAM(rho=config.sam_rho if config.sam_rho is not None else 0.05)
    return None


def choose_settings(config: TrainConfig, workdir: str, resume: bool, strategy, dataset, train) -> autotune.AutotuneResult:
    """``jit_compile`` and the precision of the run: explicit config values, or
    "auto" measured by [`tfcustom.experiment.autotune.tune`][tfcustom.experiment.autotune.tune] on throw-away copies of
    the model. A resumed run reuses its recorded decision (its numerics must
    not change mid-run); a multi-worker run does not measure (its workers
    could decide differently). The seeds are set again afterwards, so the
    run's own model does not depend on whether measuring ran."""
    try:
        return _choose_settings(config, workdir, resume, strategy, dataset, train)
    finally:
        # Every path leaves the same random state for the run's model (its
        # Dropout seeds are drawn at construction), measured or not.
        seed_everything(config.seed, config.deterministic)


def _choose_settings(config, workdir, resume, strategy, dataset, train) -> autotune.AutotuneResult:
    recorded = autotune.load(workdir) if resume else None
    if recorded is None and config.autotune_from:
        recorded = autotune.load_from(config.autotune_from)
        if config.precision != "auto":
            recorded.precision = config.precision
    if recorded is None and (resume or is_cluster(strategy)):
        # No measurement: the rules tfcustom used before autotune (no XLA; precision by device).
        why = "resumed run without a recorded decision" if resume else "multi-worker: not measured, workers could disagree"
        recorded = autotune.AutotuneResult(False, strategy_lib.resolve_precision(config.precision, strategy), {},
                                           {"jit_compile": why, "precision": why})
    if recorded is not None:
        jit = recorded.jit_compile if config.jit_compile == "auto" else bool(config.jit_compile)
        return autotune.AutotuneResult(jit, recorded.precision, recorded.measurements, recorded.reasons)

    def build(policy):
        keras.mixed_precision.set_global_policy(policy)
        model = build_model(config, dataset, strategy)
        with strategy.scope():
            optimizer = strategy_lib.wrap_optimizer(build_optimizer(config, train.steps_per_epoch), policy)
        return model, build_loss(config), optimizer

    return autotune.tune(build, lambda: strategy.distribute_datasets_from_function(lambda ctx: train.dataset(0, 0, ctx)),
                         strategy=strategy, jit_compile=config.jit_compile, precision=config.precision,
                         train_steps=train.steps_per_epoch * config.epochs, deterministic=config.deterministic)


def _pipelines(config: TrainConfig, dataset, replicas: int):
    """``(train, validation or None, test)`` input pipelines of the run."""
    # Checked here, before anything is written, rather than when fit starts.
    check(config.batch_size % replicas == 0, f"batch size must divide evenly by the {replicas} replicas",
          config.batch_size, f"use a multiple of {replicas}")
    if isinstance(dataset, data_lib.ShardedDataset):  # streamed from TFRecord shards (tfcustom.data.streaming)
        return dataset.pipelines(config.batch_size, lambda n: _eval_batch_size(config, n, replicas), config.validation_size,
                                 config.seed, config.shuffle_buffer, config.augment)
    train_split, val_split = data_lib.split_validation(dataset.train, config.validation_size, config.seed)
    train = data_lib.InputPipeline(train_split, config.batch_size, shuffle=True, seed=config.seed, augment=config.augment)
    val = data_lib.InputPipeline(val_split, _eval_batch_size(config, len(val_split), replicas), cache=True) if val_split is not None else None
    test = data_lib.InputPipeline(dataset.test, _eval_batch_size(config, len(dataset.test), replicas), cache=True)
    return train, val, test


def find_settings(config: TrainConfig, workdir: str, resume: bool, strategy, dataset):
    """``--batch_size=find`` / ``--learning_rate=find`` (`tfcustom.experiment.finders`):
    ``(config with the values found, what was found)``, on throw-away models;
    the seeds are set again afterwards, as for autotune."""
    if not finders.wanted(config):
        return config, {}

    def build(cfg):
        seed_everything(config.seed, config.deterministic)  # each finder's copy starts as the run's model would
        model = build_model(cfg, dataset, strategy)
        with strategy.scope():
            optimizer = build_optimizer(cfg, 1)
        return model, build_loss(cfg), optimizer

    def make_batches(batch_size):
        train = _pipelines(dataclasses.replace(config, batch_size=batch_size), dataset, strategy.num_replicas_in_sync)[0]
        return strategy.distribute_datasets_from_function(lambda ctx: train.dataset(0, 0, ctx).repeat())

    train_examples = len(_pipelines(dataclasses.replace(config, batch_size=strategy.num_replicas_in_sync), dataset,
                                    strategy.num_replicas_in_sync)[0])
    try:
        return finders.resolve(config, workdir, resume=resume, multi_worker=is_cluster(strategy), build=build,
                               make_batches=make_batches, train_examples=train_examples, strategy=strategy,
                               chief=is_chief(strategy))
    finally:
        seed_everything(config.seed, config.deterministic)


def _eval_batch_size(config: TrainConfig, num_examples: int, replicas: int) -> int:
    """``eval_batch_size``, at most the split's size, rounded down to a multiple of
    the replicas (evaluation is exact whatever the batch size, so this changes
    no result; it only lets every strategy split the batches evenly)."""
    batch = min(config.eval_batch_size, num_examples)
    return max(replicas, batch - batch % replicas)


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
    config.validate()
    if strategy is None:
        strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else strategy_lib.select(
            config.strategy, num_cpu_replicas=config.num_cpu_replicas, tpu=config.tpu_address,
            cluster_timeout=config.cluster_timeout)
    if not os.path.isdir(workdir):
        prepare_output_dir(workdir, config, overwrite, chief=is_chief(strategy))  # refuses an unwritable place first
    lock = RunLock(workdir, enabled=is_chief(strategy))  # one run per directory; workers write where they do
    try:
        with lock:
            return _train_and_evaluate(config, workdir, strategy, overwrite, dataset)
    except disk_errors.DiskError as e:  # full disk, I/O error: say what survives (one line, exit 75)
        raise disk_errors.with_survivors(e, os.path.join(workdir, CHECKPOINT_DIR)) from None
    except Exception:
        if lock.created_dir and os.path.isdir(workdir) and not os.listdir(workdir):
            os.rmdir(workdir)  # nothing is left behind by a run refused before it wrote anything
        raise


def _train_and_evaluate(config, workdir, strategy, overwrite, dataset) -> Dict[str, Any]:
    chief = is_chief(strategy)  # only the chief writes the run's files
    resume = prepare_output_dir(workdir, config, overwrite, chief=chief)
    seed_everything(config.seed, config.deterministic)
    if dataset is None:
        dataset = data_lib.ShardedDataset.open(config.dataset[len("tfrecord:"):], config.verify_shards) \
            if config.dataset.startswith("tfrecord:") else data_lib.load(config.dataset, config.data_dir)
    if not isinstance(dataset, data_lib.ShardedDataset):
        dataset = data_lib.subset(dataset, config.train_subset, config.test_subset)
    requested = config  # config.json keeps "find"; the run trains with the values found
    config, found = find_settings(config, workdir, resume, strategy, dataset)
    train, val, test = _pipelines(config, dataset, strategy.num_replicas_in_sync)

    # jit_compile and precision: "auto" is decided by timing the model here
    # (tfcustom.experiment.autotune), or read back from the run being resumed.
    tuned = choose_settings(config, workdir, resume, strategy, dataset, train)
    tuned.finders = found
    # The dtype policy is read by layers when they are created: set it for the
    # model only, so that it does not leak into the caller's later models.
    previous_policy = keras.mixed_precision.global_policy()
    policy = strategy_lib.set_precision(tuned.precision, strategy)
    try:
        model = build_model(config, dataset, strategy)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    loss = build_loss(config)
    with strategy.scope():  # a Keras optimizer belongs to the strategy it is created under
        optimizer = strategy_lib.wrap_optimizer(build_optimizer(config, train.steps_per_epoch), policy)
    metrics = list(config.metrics)
    # TensorBoard: written by the chief only (the other workers' writers compute
    # the same values at the same steps, and discard them); started below, once
    # the position is known.
    summary_writer = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), config.log_every_steps, histograms_every_epochs=config.histograms_every_epochs,
                                   profile_steps=config.profile_steps, chief=chief) if config.tensorboard else None
    trainer = Trainer(
        model, loss, optimizer, metrics,
        strategy=strategy,
        num_classes=dataset.num_classes,
        clip_global_norm=config.clip_global_norm,
        jit_compile=tuned.jit_compile,
        steps_per_execution=config.steps_per_execution,
        on_nonfinite=config.on_nonfinite,
        gradient_fn=build_gradient_fn(config),
        output_dir=workdir if chief else None,
        verbose=config.verbose if chief else 0,
        log_replica_losses=config.log_replica_losses,
        summary_writer=summary_writer, weight_averaging=averages_from_config(config), rollback=Rollback.from_config(config),
    )
    # The monitored value is always tracked (for the "best" checkpoint); it only
    # stops training when a patience is set.
    monitor = config.monitor if val is not None or not config.monitor.startswith("val_") else "loss"
    with strategy.scope():
        early_stopping = EarlyStopping(monitor, patience=config.early_stopping_patience, restore_best=config.early_stopping_patience is not None)

    # Checkpoints: built here, in one visible place, and passed to the loop.
    # Every worker restores from the chief's directory; a non-chief worker
    # writes its part of each (collective) save to its own temporary one.
    ckpt_dir = checkpoint_dir(workdir, strategy)
    checkpoint = training_checkpoint(trainer, early_stopping)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=config.keep_checkpoints)
    read_manager = manager if chief else tf.train.CheckpointManager(checkpoint, os.path.dirname(ckpt_dir), max_to_keep=None)  # the chief's
    best_manager = tf.train.CheckpointManager(model_checkpoint(model), os.path.join(ckpt_dir, BEST_SUBDIR), max_to_keep=1)
    # On a cluster, a SIGTERM to any worker stops all of them at one step.
    preemption = ClusterPreemption(strategy) if is_cluster(strategy) else None
    with strategy.scope():
        # Created here on every worker: a restore would create it (a collective
        # under multi-worker) only on the workers that find a checkpoint.
        checkpoint.save_counter  # noqa: B018
    if resume:
        check_index(best_manager.directory)  # a damaged index would silently lose the best checkpoint
        with strategy.scope():
            restored = restore_latest(checkpoint, read_manager)
        if restored is None:
            logging.info("Resuming %s: no checkpoint yet, starting from scratch", workdir)
        else:
            epochs_done = int(trainer.epoch.numpy())
            history_path = os.path.join(workdir, "history.json")
            if os.path.exists(history_path):
                trainer.history = History(History.read(workdir).records[:epochs_done])
            logging.info("Resumed from %s: global step %d, epoch %d, step %d of the epoch",
                         restored, int(trainer.global_step.numpy()), epochs_done + 1, int(trainer.step_in_epoch.numpy()))

    check_workers_agree(strategy, trainer)
    os.makedirs(workdir, exist_ok=True)
    if chief:
        write_json(os.path.join(workdir, CONFIG_FILE), requested.to_dict())
        autotune.save(tuned, workdir)
    if summary_writer is not None:  # a resumed run drops the points written after its checkpoint
        summary_writer.start(int(trainer.global_step.numpy()), int(trainer.epoch.numpy()), config.to_dict())
    logging.info("Run directory %s; %d train / %d validation / %d test examples; model %s with %d parameters",
                 workdir, len(train), len(val) if val else 0, len(test), config.model, model.count_params())
    start = time.time()
    history = trainer.fit(train, config.epochs, val, early_stopping=early_stopping, checkpoint_manager=manager,
                          checkpoint_every_steps=config.checkpoint_every_steps, best_checkpoint_manager=best_manager,
                          preemption=preemption,
                          epoch_evaluations={"test_": test} if config.target_accuracy_test else None)
    train_time = time.time() - start
    best_epoch = int(early_stopping.best_epoch.numpy())
    if config.export_best and best_manager.latest_checkpoint:
        # Test and export the model of the best --monitor epoch, not the last one.
        with strategy.scope():
            best_manager.checkpoint.restore(best_manager.latest_checkpoint).assert_existing_objects_matched()
        logging.info("--export_best: restored epoch %d (best %s=%.4g) from %s", best_epoch, early_stopping.monitor,
                     float(early_stopping.best.numpy()), best_manager.latest_checkpoint)
    test_logs, averaging = evaluate_raw_and_averaged(trainer, train, test)  # with averaging, the model now holds the average

    model_path = os.path.join(workdir, KERAS_FILE)
    results = {
        "test": test_logs,
        "history": history.records,
        "train_time_s": train_time,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "exported": "best" if config.export_best and best_manager.latest_checkpoint else "final",
        "num_replicas": strategy.num_replicas_in_sync,
        "strategy": type(strategy).__name__,
        "precision": policy,
        "model_path": model_path,
        "saved_model_path": os.path.join(workdir, SAVED_MODEL_DIR),
        "class_names": list(dataset.class_names),
        "parameters": int(model.count_params()),
        "jit_compile": tuned.jit_compile,
        "autotune": tuned.to_dict(),
        **({"weight_averaging": averaging} if averaging else {}),  # raw vs averaged test metrics; "test": the exported model's
    }
    if config.target_accuracy is not None:
        results["time_to_accuracy"] = {}
        for name, key in (("validation", "val_accuracy"), ("test", "test_accuracy")):
            if key == "test_accuracy" and not config.target_accuracy_test:
                continue
            reached = time_to_accuracy.first_reached(history.records, key, config.target_accuracy, train.steps_per_epoch)
            results["time_to_accuracy"][name] = reached
            logging.info("%s", time_to_accuracy.describe(name.capitalize(), reached))
    if not chief:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # this worker's temporary copies: the chief's are the run's
    else:
        # model.keras and saved_model/ (serving signature), each written to a
        # temporary sibling and renamed into place (tfcustom.experiment.export). The run
        # owns its directory, so a resumed run replaces an earlier export.
        export_model(model, workdir, overwrite=True, input_shape=dataset.input_shape, formats=config.export_formats,
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
    return results
