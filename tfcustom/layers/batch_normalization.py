"""``BatchNormalization``: Keras' layer, with TensorFlow's fused kernel in training.

Keras 3 computes batch statistics in training with ``ops.moments`` followed by
``ops.batch_normalization``: half a dozen element-wise passes over the
activations, each with its own gradient. Keras 2 used TensorFlow's fused
kernel (``FusedBatchNormV3``, one pass forward and one backward) for 4-D
inputs; Keras 3 dropped it. On a CPU that difference dominates a small
convnet's step: forward and backward of a 128x28x28x32 batch take 8.3-8.5 ms
with ``keras.layers.BatchNormalization`` and 2.8-3.4 ms with the fused kernel
(``python benchmarks/batch_norm.py``).

This layer is ``keras.layers.BatchNormalization`` (same arguments, variables,
moving-statistics update and inference path: a checkpoint or ``.keras`` file
of one loads into the other) whose training call uses the fused kernel when
it can: channels-last 4-D inputs, no mask, no ``renorm``, no
``synchronized``, ``epsilon >= 1.001e-5``. Anything else, or
``fused=False``, runs Keras' own code (for 2-D inputs, e.g. after a Dense
layer, the fused kernel was measured slower than Keras' code). The statistics are the same as Keras'
(the kernel's Bessel-corrected batch variance is turned back into the biased
one Keras uses); results agree with Keras to float32 rounding (tested).

Examples:
    >>> import numpy as np
    >>> bn = BatchNormalization()
    >>> y = bn(np.random.rand(8, 4, 4, 3).astype("float32"), training=True)
    >>> tuple(y.shape)
    (8, 4, 4, 3)
"""

from __future__ import annotations

import keras
import tensorflow as tf

# FusedBatchNormV3 refuses a smaller epsilon.
_MIN_FUSED_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="tfcustom")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with the fused training kernel.

    Args:
        fused: use TensorFlow's fused kernel in training where it applies
            (see the module docstring); False always runs Keras' code.
        **kwargs: as ``keras.layers.BatchNormalization``.

    Examples:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(2.0, 3.0, (8, 4, 4, 2)).astype("float32")
        >>> y = BatchNormalization()(x, training=True)  # the fused kernel: 4-D, channels last
        >>> bool(abs(float(np.mean(y))) < 1e-5), round(float(np.std(y)), 2)
        (True, 1.0)
    """

    def __init__(self, fused=True, **kwargs):
        super().__init__(**kwargs)
        self.fused = bool(fused)

    def _can_fuse(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        return (
            self.fused
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.epsilon >= _MIN_FUSED_EPSILON
            and rank == 4
            and self.axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._can_fuse(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        # As Keras: compute in float32 even under a mixed precision policy.
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        # The kernel returns the Bessel-corrected variance; Keras' moments (and
        # so its moving variance) use the biased one.
        n = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))
        momentum = self.momentum
        self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(tf.cast(self.moving_variance, tf.float32) * momentum + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "fused": self.fused}
