"""Dropout that stays fast under XLA, with its random state in the checkpoint.

Why not ``keras.layers.Dropout``: under ``jit_compile`` on the XLA CPU backend
it made a 784-256-128-10 MLP train 6-17x slower (docs/guides/performance.md). The
time goes into the random-number generator: Keras draws the mask with
``tf.nn.experimental.stateless_dropout`` and the default ``rng_alg``
("auto_select"), whose XLA lowering on CPU is slow; the same op with an
explicit Philox algorithm compiles to fast code (``benchmarks/step_throughput.py``
measures both). Keras' seed state is also one value for every replica, so
all replicas draw the *same* mask for their different examples.

[`Dropout`][tfcustom.layers.dropout.Dropout] draws the mask with ``stateless_dropout(rng_alg="philox")``
from a seed made of

* the layer's ``seed`` (drawn from Keras' global seed when not given, and kept
  in ``get_config``) and the replica's index in the sync group: independent
  masks per replica;
* a step counter (an int64 variable, advanced by one on every training call):
  a new mask every step; the counter is a model variable, so checkpoints hold
  it and a resumed run draws the same masks as an uninterrupted one.

Statistics are Keras' (``stateless_dropout``): each unit is kept with
probability ``1 - rate`` and scaled by ``1 / (1 - rate)``; identity at
inference.

Examples:
    >>> import numpy as np
    >>> layer = Dropout(0.5, seed=1)
    >>> y = layer(np.ones((2, 4), "float32"), training=True)
    >>> sorted(set(np.asarray(y).ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
    True
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfcustom.errors import check

#: Odd 63-bit constant that spreads replica indices over Philox keys.
_REPLICA_STRIDE = 0x5851F42D4C957F2D


def check_rate(name, rate):
    """A dropout rate: a number in [0, 1) (one error line otherwise); returns it as a float.

    Args:
      name: the argument's name, for the message (e.g. ``"rate"``).
      rate: the value to check (a ``bool`` is refused).

    Returns:
      ``rate`` as a float.

    Examples:
        >>> check_rate("rate", 0)
        0.0
        >>> check_rate("dropout", 1.0)
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: dropout must be a number in [0, 1) (received: 1.0). Pass 0 to disable dropout or a value such as 0.3.
    """
    check(
        isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= rate < 1.0,
        f"{name} must be a number in [0, 1)",
        rate,
        "pass 0 to disable dropout or a value such as 0.3",
    )
    return float(rate)


@keras.saving.register_keras_serializable(package="tfcustom")
class Dropout(keras.layers.Layer):
    """Inverted dropout, fast under XLA, independent per replica and per step.

    Args:
      rate: fraction of the inputs dropped, in [0, 1).
      seed: integer seed of the mask sequence; default: drawn from NumPy's
        global generator (set by ``keras.utils.set_random_seed``), so that a
        seeded program builds the same layers.
      noise_shape: as in ``keras.layers.Dropout`` (1 = shared along that axis).

    Examples:
        >>> layer = Dropout(0.5, seed=0)
        >>> y = layer(np.ones((1000,), "float32"), training=True).numpy()
        >>> sorted(set(y.tolist())), bool(0.4 < (y == 0).mean() < 0.6)  # kept values scaled by 1/(1 - rate)
        ([0.0, 2.0], True)
        >>> bool((layer(np.ones((4,), "float32"), training=False).numpy() == 1).all())
        True
    """

    def __init__(self, rate, seed=None, noise_shape=None, **kwargs):
        super().__init__(**kwargs)
        check_rate("dropout rate", rate)
        check(seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0),
              "dropout seed must be an integer >= 0", seed, "pass e.g. seed=0, or leave it unset")
        self.rate = float(rate)
        self.seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.supports_masking = True
        self.counter = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False,
                                       aggregation="none", name="counter")

    def _seed_tensor(self):
        ctx = tf.distribute.get_replica_context()
        replica = 0 if ctx is None else ctx.replica_id_in_sync_group
        key = tf.constant(self.seed, tf.int64) + tf.cast(replica, tf.int64) * tf.constant(_REPLICA_STRIDE, tf.int64)
        count = tf.convert_to_tensor(self.counter.value if hasattr(self.counter, "value") else self.counter)
        self.counter.assign_add(1)
        return tf.stack([key, count])

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        noise_shape = None
        if self.noise_shape is not None:
            shape = tf.shape(inputs)
            noise_shape = tf.stack([shape[i] if d is None else d for i, d in enumerate(self.noise_shape)])
        return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=self._seed_tensor(),
                                                    rng_alg="philox", noise_shape=noise_shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed,
                       "noise_shape": None if self.noise_shape is None else list(self.noise_shape)})
        return config
