"""One builder per object of a run, from its [`TrainConfig`][tfcustom.TrainConfig]: seeds,
input pipelines, model, loss, optimizer, gradient function.

[`train_and_evaluate`][tfcustom.experiment.train.train_and_evaluate] builds its run
with these; so do the finders and autotune (throw-away copies), and the run
directory's readers (`tfcustom.experiment.run_dir`: the same model and loss, to
evaluate a run later).
"""

from __future__ import annotations

import re
from typing import Optional

import keras
import tensorflow as tf

from tfcustom import data as data_lib
from tfcustom import losses as losses_lib
from tfcustom import models as models_lib
from tfcustom import optimizers as optimizers_lib
from tfcustom.callbacks.weight_averaging import SWALearningRate
from tfcustom.errors import check, config_error
from tfcustom.experiment import user_model
from tfcustom.training.sam import SAM, split_sam_name


def seed_everything(seed: int, deterministic: bool) -> None:
    """Python, NumPy, TF and Keras seeds; optionally deterministic TF kernels."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def eval_batch_size(config, num_examples: int, replicas: int) -> int:
    """``eval_batch_size``, at most the split's size, rounded down to a multiple of
    the replicas (evaluation is exact whatever the batch size, so this changes
    no result; it only lets every strategy split the batches evenly)."""
    batch = min(config.eval_batch_size, num_examples)
    return max(replicas, batch - batch % replicas)


def pipelines(config, dataset, replicas: int):
    """``(train, validation or None, test)`` input pipelines of the run."""
    # Checked here, before anything is written, rather than when fit starts.
    check(config.batch_size % replicas == 0, f"batch size must divide evenly by the {replicas} replicas",
          config.batch_size, f"use a multiple of {replicas}")
    if isinstance(dataset, data_lib.ShardedDataset):  # streamed from TFRecord shards (tfcustom.data.streaming)
        return dataset.pipelines(config.batch_size, lambda n: eval_batch_size(config, n, replicas), config.validation_size,
                                 config.seed, config.shuffle_buffer, config.augment)
    train_split, val_split = data_lib.split_validation(dataset.train, config.validation_size, config.seed)
    train = data_lib.InputPipeline(train_split, config.batch_size, shuffle=True, seed=config.seed, augment=config.augment)
    val = data_lib.InputPipeline(val_split, eval_batch_size(config, len(val_split), replicas), cache=True) if val_split is not None else None
    test = data_lib.InputPipeline(dataset.test, eval_batch_size(config, len(dataset.test), replicas), cache=True)
    return train, val, test


def _default_name(cls) -> str:
    # Keras' automatic name of the first instance of a class ("CNN" -> "cnn",
    # "ResNet" -> "res_net"): what the model of a fresh training process is called.
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls.__name__)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def model_from_config(config, num_classes: int, input_shape, *, fresh_name: bool = False) -> keras.Model:
    """The configured model (``config.model`` with ``config.model_kwargs``), built on ``input_shape``.

    ``fresh_name``: named as in a fresh training process, whatever models this
    process built before (the run directory's readers rebuild a run's model so).
    """
    kwargs = dict(config.model_kwargs)
    cls = None if not fresh_name or user_model.is_reference(config.model) else models_lib._REGISTRY.get(str(config.model).lower())
    if cls is not None:
        kwargs.setdefault("name", _default_name(cls))
    model = user_model.model_from_name(config.model, num_classes, tuple(input_shape), **kwargs)
    model(tf.zeros((1,) + tuple(input_shape), tf.float32), training=False)
    return model


def build_model(config, dataset, strategy: tf.distribute.Strategy) -> keras.Model:
    """The configured model, built under ``strategy.scope()`` on the dataset's input shape."""
    with strategy.scope():
        return model_from_config(config, dataset.num_classes, dataset.input_shape)


def build_loss(config) -> keras.losses.Loss:
    """The configured loss, on logits (``from_logits=True``): tfcustom's models output logits."""
    kwargs = {"from_logits": True}
    if config.label_smoothing:
        kwargs["label_smoothing"] = config.label_smoothing
    try:
        return losses_lib.get(config.loss, **kwargs)
    except TypeError:
        raise config_error("this loss takes no label smoothing", config.loss, "drop --label_smoothing or use sparse_categorical_crossentropy") from None


def build_optimizer(config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The configured optimizer on its learning-rate schedule (``steps_per_epoch`` sets the schedule's steps)."""
    base, _ = split_sam_name(config.optimizer)
    total = steps_per_epoch * config.epochs
    schedule = optimizers_lib.make_schedule(
        config.lr_schedule, config.learning_rate, total_steps=total, warmup_steps=int(config.warmup_epochs * steps_per_epoch)
    )
    if config.swa_lr is not None:  # SWA's constant learning rate from --swa_start_epoch on
        schedule = SWALearningRate(schedule, start_step=(config.swa_start_epoch - 1) * steps_per_epoch, swa_lr=config.swa_lr)
    return optimizers_lib.get(base, schedule, weight_decay=config.weight_decay, momentum=config.momentum)


def build_gradient_fn(config) -> Optional[SAM]:
    """The SAM gradient function for ``sam_<optimizer>`` or a ``sam_rho``; else None (plain gradients)."""
    _, use_sam = split_sam_name(config.optimizer)
    if use_sam or config.sam_rho:
        return SAM(rho=config.sam_rho if config.sam_rho is not None else 0.05)
    return None
