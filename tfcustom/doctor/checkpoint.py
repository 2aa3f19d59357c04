"""Check: a checkpoint of the model restores every weight into a fresh model (plain tf.train.Checkpoint)."""

from __future__ import annotations

import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfcustom.doctor.harness import Setup, describe_error, max_difference, train
from tfcustom.doctor.result import CheckResult

NAME = "checkpoint coverage"
FIX = ("keep layers in attributes or lists of the model (Keras tracks those) or build them in build(); a plain dict "
       "(non-string keys, or one kept out of Keras' tracking) is not saved")


def _fresh(setup: Setup) -> keras.Model:
    keras.utils.set_random_seed(setup.seed + 1)  # different initial weights: a weight not restored shows
    model = setup.model_fn()
    model(tf.constant(setup.x[:1]), training=False)
    return model


def run(setup: Setup) -> CheckResult:
    trained = train(setup, 1).model
    x = tf.constant(setup.x[: setup.batch_size])
    with tempfile.TemporaryDirectory() as d:
        path = tf.train.Checkpoint(model=trained).save(f"{d}/ckpt")
        saved = [name for name, _ in tf.train.list_variables(path) if name.startswith("model/")]
        fresh = _fresh(setup)
        try:
            tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
        except Exception as e:  # a fresh model whose objects the checkpoint does not have
            return CheckResult(NAME, False, f"restore: {describe_error(e)}", FIX)
    n = len(trained.weights)
    diff = max_difference(trained(x, training=False), fresh(x, training=False))
    measured = f"{len(saved)} of {n} weights saved; restored predictions differ by {diff:.3g}"
    return CheckResult(NAME, len(saved) >= n and diff == 0 and bool(np.isfinite(diff)), measured, FIX)
