"""The loss-spike rule of ``--rollback_loss_spike=K``: a step whose loss jumps far above the recent losses diverged.

The rule, evaluated in the compiled step before the update is applied: once
``window`` steps have been applied, a step whose (finite) loss is more than
``factor`` times the running mean of the losses of the applied steps before
it counts as a divergence, like a NaN loss. The running mean is the plain
mean of the first ``window`` applied steps' losses, then an exponential moving
average with weight ``1 / window`` (about the last ``window`` steps):
``mean += (loss - mean) / min(n, window)`` for the ``n``-th applied step.
Steps not applied (skipped, rolled back) do not enter it. Its two variables
are in the training checkpoint, so a rollback or a resume restores them too.

Examples:
    >>> spike = LossSpike(factor=3.0, window=2)
    >>> for loss in (1.0, 1.0):
    ...     spike.observe(tf.constant(loss), tf.constant(True))
    >>> bool(spike.is_spike(tf.constant(2.5))), bool(spike.is_spike(tf.constant(3.5)))
    (False, True)
"""

from __future__ import annotations

import tensorflow as tf

from tfcustom.errors import check

WINDOW = 10  # applied steps before the rule starts, and the running mean's span


class LossSpike:
    """``is_spike(loss)`` and ``observe(loss, applied)``, in the compiled step; create it under the strategy's scope.

    Args:
      factor: a loss above ``factor`` × the running mean is a spike (> 1).
      window: the running mean's span, and the applied steps before the rule starts.

    Examples:
        >>> spike = LossSpike(factor=2.0, window=3)
        >>> for loss in (3.0, 2.0, 1.0):  # the mean of the first 3: 2.0
        ...     spike.observe(tf.constant(loss), tf.constant(True))
        >>> bool(spike.is_spike(tf.constant(3.9))), bool(spike.is_spike(tf.constant(4.1)))
        (False, True)
        >>> spike.observe(tf.constant(5.0), tf.constant(True))  # then 1/3 of the way to each new loss
        >>> round(float(spike.mean.numpy()), 4)
        3.0
    """

    def __init__(self, factor: float, window: int = WINDOW):
        self.check_factor(factor)
        check(isinstance(window, int) and window >= 1, "the loss-spike window must be a positive integer", window, "pass e.g. 10")
        self.factor, self.window = float(factor), window
        self.mean = tf.Variable(0.0, trainable=False, name="loss_spike_mean")
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="loss_spike_count")

    @staticmethod
    def check_factor(factor) -> None:
        """Refuse a factor that is not a number > 1 (one line)."""
        check(isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 1,
              "rollback_loss_spike must be a number > 1", factor,
              "pass e.g. 5 (a loss above 5 x the running mean of the recent losses is a divergence)")

    @property
    def variables(self) -> list:
        return [self.mean, self.count]

    def is_spike(self, loss) -> tf.Tensor:
        """A scalar bool: ``loss`` is finite, the rule has started, and ``loss > factor * mean``."""
        loss = tf.cast(loss, tf.float32)
        started = tf.convert_to_tensor(self.count) >= self.window
        return started & tf.math.is_finite(loss) & (loss > self.factor * tf.convert_to_tensor(self.mean))

    def observe(self, loss, applied) -> None:
        """Add the loss of a step to the running mean when ``applied`` (a scalar bool)."""
        loss = tf.cast(loss, tf.float32)
        n = tf.convert_to_tensor(self.count) + 1
        weight = 1.0 / tf.cast(tf.minimum(n, self.window), tf.float32)
        mean = tf.convert_to_tensor(self.mean)
        self.mean.assign(tf.where(applied, mean + (loss - mean) * weight, mean))
        self.count.assign(tf.where(applied, n, n - 1))
