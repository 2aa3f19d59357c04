"""``ScaledSchedule``: a learning-rate schedule times a scale (a variable), e.g. lowered after a rollback.

``--rollback_lr_factor`` multiplies the learning rate after each rollback
(`tfcustom.training.rollback`). With a float learning rate that is the
optimizer's own variable; with a schedule the optimizer's schedule is wrapped
in a ``ScaledSchedule`` whose ``scale`` is a ``tf.Variable`` (saved in the
training checkpoint), so the schedule keeps its shape and every later step
gets ``scale × schedule(step)``.

Examples:
    >>> import keras
    >>> base = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    >>> scale = tf.Variable(1.0)
    >>> schedule = ScaledSchedule(base, scale)
    >>> _ = scale.assign(0.5)
    >>> round(float(schedule(10)), 6)  # 0.5 x 0.1 x 0.5
    0.025
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.errors import check


@keras.saving.register_keras_serializable(package="tfcustom")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``scale * schedule(step)``.

    Args:
      schedule: a ``keras.optimizers.schedules.LearningRateSchedule`` (or its serialized dict).
      scale: a float or a scalar ``tf.Variable`` (read at each step: assigning it changes the rate
        without retracing). ``get_config`` saves its current value.

    Examples:
        >>> schedule = ScaledSchedule(keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.01]), 0.5)
        >>> [round(float(schedule(step)), 6) for step in (0, 3)]
        [0.05, 0.005]
        >>> ScaledSchedule.from_config(schedule.get_config()).get_config()["scale"]
        0.5
    """

    def __init__(self, schedule, scale=1.0):
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        check(isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule),
              "ScaledSchedule wraps a keras.optimizers.schedules.LearningRateSchedule", type(schedule).__name__,
              "pass e.g. keras.optimizers.schedules.CosineDecay(1e-3, 1000)")
        self.schedule = schedule
        self.scale = scale

    def __call__(self, step):
        rate = self.schedule(step)
        return rate * tf.cast(tf.convert_to_tensor(self.scale), rate.dtype)

    def get_config(self):
        scale = self.scale.numpy() if hasattr(self.scale, "numpy") else self.scale
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule), "scale": float(scale)}
