"""The Trainer's input: training/evaluation data (an `InputPipeline` or
other ``EpochInput``, or a batched ``tf.data.Dataset``) distributed over the
strategy's replicas, and its steps per epoch."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfcustom.training import fit_inputs
from tfcustom.data.pipeline import EpochInput
from tfcustom.errors import check, check_positive_int, config_error

_DATA_FIX = ("data must be a tfcustom.data.InputPipeline, a batched tf.data.Dataset or NumPy arrays (x, y[, sample_weight])",
             "pass e.g. trainer.fit((x, y), epochs=2, batch_size=32)")


def distribute(strategy: tf.distribute.Strategy, data, epoch: int = 0, skip_batches: int = 0):
    """``data`` as a distributed dataset of ``strategy`` (epoch ``epoch``, its
    first ``skip_batches`` batches skipped: exact resume needs an ``EpochInput``)."""
    if isinstance(data, EpochInput):
        replicas = strategy.num_replicas_in_sync
        check(
            data.batch_size % replicas == 0,
            f"global batch size must divide evenly by the {replicas} replicas",
            data.batch_size,
            f"use a multiple of {replicas}",
        )
        return strategy.distribute_datasets_from_function(lambda ctx: data.dataset(epoch, skip_batches, ctx))
    if isinstance(data, tf.data.Dataset):
        check(skip_batches == 0, "a plain tf.data.Dataset cannot resume mid-epoch", skip_batches, "pass a tfcustom.data.InputPipeline for exact resume")
        fit_inputs.check_dataset(data)
        return strategy.experimental_distribute_dataset(data)
    raise config_error(_DATA_FIX[0], type(data).__name__, _DATA_FIX[1])


def steps_in_epoch(data, steps_per_epoch: Optional[int]) -> int:
    """``steps_per_epoch`` if given (checked), else the number of batches of ``data``."""
    if steps_per_epoch is not None:
        return check_positive_int("steps_per_epoch", steps_per_epoch)
    if isinstance(data, EpochInput):
        return data.steps_per_epoch
    if isinstance(data, tf.data.Dataset):
        return fit_inputs.dataset_steps(data)
    raise config_error(_DATA_FIX[0], type(data).__name__, _DATA_FIX[1])


def batch_and_size(data):
    """(global batch size, examples per epoch) of the training data, None where unknown."""
    if isinstance(data, EpochInput):
        return data.batch_size, (len(data) if not getattr(data, "drop_remainder", False) else None)
    spec = tf.nest.flatten(data.element_spec)[0]
    return (spec.shape[0] if spec.shape.rank else None), None
