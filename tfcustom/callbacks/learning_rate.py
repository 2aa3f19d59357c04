"""Callbacks that set ``optimizer.learning_rate`` need an optimizer whose learning rate is a value.

``keras.callbacks.ReduceLROnPlateau`` and ``LearningRateScheduler`` assign
``optimizer.learning_rate``; an optimizer built on a
``keras.optimizers.schedules.LearningRateSchedule`` (e.g.
``tfcustom.optimizers.make_schedule("cosine", ...)``) computes it from the
step and cannot take an assignment, so the combination is refused before
training starts, in one line. With a float learning rate both work as under
``fit``; the learning rate they set is in the optimizer, hence in the training
checkpoint.

Examples:
    >>> import keras
    >>> check_learning_rate_settable([keras.callbacks.ReduceLROnPlateau()], keras.optimizers.SGD(0.1))
    >>> schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=100, decay_rate=0.9)
    >>> check_learning_rate_settable([keras.callbacks.ReduceLROnPlateau()], keras.optimizers.SGD(schedule))
    Traceback (most recent call last):
    ...
    tfcustom.errors.ConfigError: a callback sets the learning rate but the optimizer's learning rate is a schedule...
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfcustom.errors import check

# Keras callbacks that assign optimizer.learning_rate.
SETS_LEARNING_RATE = (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler)


def schedule_of(optimizer):
    """The ``LearningRateSchedule`` of ``optimizer`` (or of its inner optimizer), or None for a float learning rate.

    Args:
      optimizer: a Keras optimizer (a ``LossScaleOptimizer``'s inner one is looked at too).

    Returns:
      The schedule object, or None.

    Examples:
        >>> schedule_of(keras.optimizers.SGD(0.1)) is None
        True
    """
    for opt in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        if opt is not None and isinstance(getattr(opt, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule):
            return opt._learning_rate  # noqa: SLF001 -- Keras keeps the schedule there (learning_rate gives its value)
    return None


def has_schedule(optimizer) -> bool:
    """Whether ``optimizer``'s learning rate (or its inner optimizer's) is a ``LearningRateSchedule``.

    Args:
      optimizer: a Keras optimizer (a ``LossScaleOptimizer``'s inner one is looked at too).

    Returns:
      True for a schedule, False for a float learning rate.

    Examples:
        >>> has_schedule(keras.optimizers.SGD(0.1))
        False
    """
    return schedule_of(optimizer) is not None


def check_learning_rate_settable(callbacks: Sequence, optimizer) -> None:
    """Refuse a callback of `SETS_LEARNING_RATE` with an optimizer on a schedule.

    Args:
      callbacks: the callbacks given to ``fit``.
      optimizer: the Trainer's optimizer (a ``LossScaleOptimizer``'s inner one is looked at too).

    Raises:
      ConfigError: one line naming the callbacks and the fix.

    Examples:
        >>> plateau = [keras.callbacks.ReduceLROnPlateau()]
        >>> check_learning_rate_settable(plateau, keras.optimizers.SGD(0.1))   # a float rate: it can be set
        >>> check_learning_rate_settable(plateau, keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5)))
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: a callback sets the learning rate but the optimizer's learning rate is a schedule (received: 'ReduceLROnPlateau'). ...
    """
    setters = [type(c).__name__ for c in callbacks if isinstance(c, SETS_LEARNING_RATE)]
    check(not (setters and has_schedule(optimizer)),
          "a callback sets the learning rate but the optimizer's learning rate is a schedule", ", ".join(setters),
          "build the optimizer with a float learning rate (e.g. keras.optimizers.Adam(1e-3)) to use this callback, "
          "or drop the callback and keep the schedule")
