"""The seconds a step waits for its batch: ``tf.timestamp`` around ``next(iterator)``.

``tf.timestamp`` is refused under ``tf.config.experimental.enable_op_determinism()``:
there the wait is not measured (`measured()` is False).
"""

from __future__ import annotations

import tensorflow as tf


def measured() -> bool:
    """Whether input wait can be measured (not under op determinism)."""
    from tensorflow.python.framework import config as framework_config  # no public getter

    return not framework_config.is_op_determinism_enabled()


def timed_next(iterator, measure: bool):
    """``(batch, seconds)``: the next batch and the time until its tensors existed (0.0 when not measured)."""
    if not measure:
        return next(iterator), tf.constant(0.0, tf.float64)
    start = tf.timestamp()
    with tf.control_dependencies([start]):
        batch = next(iterator)
    with tf.control_dependencies(tf.nest.flatten(batch, expand_composites=True)):
        return batch, tf.timestamp() - start
