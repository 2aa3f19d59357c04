"""Where the replicas compute, and the Keras dtype policy that suits it.

``precision="auto"`` is ``mixed_bfloat16`` on TPU, ``mixed_float16`` on GPU and
``float32`` on CPU. Re-exported by `tfcustom.distribute.strategy`, where the
reference documents these functions.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
from absl import logging

from tfcustom.errors import check_one_of

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def visible_gpus() -> list:
    """The visible GPUs, without initialising TensorFlow's devices (unlike
    ``tf.config.list_logical_devices``)."""
    return tf.config.get_visible_devices("GPU")


def device_type(strategy: Optional[tf.distribute.Strategy] = None) -> str:
    """``"TPU"``, ``"GPU"`` or ``"CPU"``: where ``strategy``'s replicas compute.

    Args:
      strategy: a ``tf.distribute`` strategy (default: the current one).

    Returns:
      The device type.

    Examples:
        >>> device_type(tf.distribute.get_strategy())  # the default strategy, on a machine without a GPU
        'CPU'
    """
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "TPU"
    try:
        devices = list(strategy.extended.worker_devices)
    except (RuntimeError, AttributeError, NotImplementedError):  # the default strategy
        return "GPU" if visible_gpus() else "CPU"
    if any("GPU" in d.upper().rsplit("/", 1)[-1] for d in devices):
        return "GPU"
    return "CPU"


def resolve_precision(precision: str, strategy: Optional[tf.distribute.Strategy] = None) -> str:
    """The Keras policy name for ``precision``: ``auto`` is ``mixed_bfloat16`` on
    TPU, ``mixed_float16`` on GPU and ``float32`` on CPU.

    Args:
      precision: one of ``PRECISIONS`` (``"auto"``, ``"float32"``,
        ``"mixed_float16"``, ``"mixed_bfloat16"``).
      strategy: decides ``auto`` (default: the current strategy).

    Returns:
      The Keras dtype policy name.

    Examples:
        >>> resolve_precision("auto", tf.distribute.get_strategy()), resolve_precision("mixed_bfloat16")
        ('float32', 'mixed_bfloat16')
        >>> resolve_precision("fp8")
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: unknown precision (received: 'fp8'). Choose one of: auto, float32, mixed_float16, mixed_bfloat16.
    """
    check_one_of("precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    return {"TPU": "mixed_bfloat16", "GPU": "mixed_float16"}.get(device_type(strategy), "float32")


def set_precision(precision: str, strategy: Optional[tf.distribute.Strategy] = None) -> str:
    """Set Keras' global dtype policy from ``precision``; return the policy name.

    Build the model after this call (layers read the policy when created).
    With ``mixed_float16``, wrap the optimizer with [`wrap_optimizer`][tfcustom.distribute.strategy.wrap_optimizer].

    Args:
      precision: as [`resolve_precision`][tfcustom.distribute.strategy.resolve_precision] takes it.
      strategy: decides ``auto`` (default: the current strategy).

    Returns:
      The policy name now in force.

    Examples:
        >>> import keras
        >>> set_precision("mixed_bfloat16")
        'mixed_bfloat16'
        >>> layer = keras.layers.Dense(2)
        >>> layer.compute_dtype, layer.variable_dtype
        ('bfloat16', 'float32')
        >>> set_precision("float32")  # back to Keras' default
        'float32'
    """
    import keras

    policy = resolve_precision(precision, strategy)
    keras.mixed_precision.set_global_policy(policy)
    logging.info("Precision %r: Keras dtype policy %s (%s)", precision, policy, device_type(strategy))
    return policy


def wrap_optimizer(optimizer, policy: str):
    """``optimizer`` wrapped in ``keras.optimizers.LossScaleOptimizer`` for
    ``mixed_float16`` (dynamic loss scaling); unchanged otherwise.

    Args:
      optimizer: a Keras optimizer (an already wrapped one is not wrapped again).
      policy: the dtype policy name, as [`set_precision`][tfcustom.distribute.strategy.set_precision] returns it.

    Returns:
      The optimizer to train with.

    Examples:
        >>> import keras
        >>> sgd = keras.optimizers.SGD()
        >>> type(wrap_optimizer(sgd, "mixed_float16")).__name__, wrap_optimizer(sgd, "mixed_bfloat16") is sgd
        ('LossScaleOptimizer', True)
    """
    import keras

    if policy == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
