"""The settings of a run measured on this machine before it trains, on
throw-away copies of its model: ``jit_compile`` and the precision
(`tfcustom.experiment.autotune`), the batch size and learning rate asked as
``find`` (`tfcustom.experiment.finders`). Each leaves the seeds as it found
them, so the run's own model does not depend on whether measuring ran.
"""

from __future__ import annotations

import dataclasses

import keras

from tfcustom.distribute import strategy as strategy_lib
from tfcustom.distribute.preemption import is_cluster
from tfcustom.experiment import autotune, finders
from tfcustom.experiment.builders import build_loss, build_model, build_optimizer, pipelines, seed_everything
from tfcustom.experiment.config import TrainConfig
from tfcustom.experiment.run_checkpoints import is_chief


def choose_settings(config: TrainConfig, workdir: str, resume: bool, strategy, dataset, train) -> autotune.AutotuneResult:
    """``jit_compile`` and the precision of the run: explicit config values, or
    "auto" measured by `tfcustom.experiment.autotune.tune` on throw-away copies of
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


def _recorded_settings(config: TrainConfig, workdir: str, resume: bool, strategy):
    """The decision recorded by the run being resumed or by ``--autotune_from``;
    without one, the rules of a run that does not measure (resumed, multi-worker); else None."""
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
    return recorded


def _choose_settings(config, workdir, resume, strategy, dataset, train) -> autotune.AutotuneResult:
    recorded = _recorded_settings(config, workdir, resume, strategy)
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
        train = pipelines(dataclasses.replace(config, batch_size=batch_size), dataset, strategy.num_replicas_in_sync)[0]
        return strategy.distribute_datasets_from_function(lambda ctx: train.dataset(0, 0, ctx).repeat())

    train_examples = len(pipelines(dataclasses.replace(config, batch_size=strategy.num_replicas_in_sync), dataset,
                                   strategy.num_replicas_in_sync)[0])
    try:
        return finders.resolve(config, workdir, resume=resume, multi_worker=is_cluster(strategy), build=build,
                               make_batches=make_batches, train_examples=train_examples, strategy=strategy,
                               chief=is_chief(strategy))
    finally:
        seed_everything(config.seed, config.deterministic)
