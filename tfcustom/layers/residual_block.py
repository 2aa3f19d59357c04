"""``ResidualBlock``: a ResNet basic block."""

from __future__ import annotations

import keras

from tfcustom.layers.batch_normalization import BatchNormalization
from tfcustom.errors import check, check_positive_int
from tfcustom.layers._args import _get
from tfcustom.layers.activations import get_activation, serialize_activation


@keras.saving.register_keras_serializable(package="tfcustom")
class ResidualBlock(keras.layers.Layer):
    """Basic ResNet block: ``act(BN(conv3x3(act(BN(conv3x3(x))))) + shortcut(x))``.

    The shortcut is the identity when the input already has ``filters``
    channels and ``strides == 1``; otherwise it is a 1x1 convolution with
    ``strides`` followed by BatchNormalization (a projection). Which one is
    used is decided in ``build`` from the input shape (``self.projection``).

    Args:
        filters: positive int, output channels.
        strides: 1 or 2 (or any positive int), stride of the first conv and
            of the projection.
        activation: anything ``keras.activations.get`` accepts (see
            [`get_activation`][tfcustom.layers.get_activation]).
        kernel_initializer: passed to every Conv2D.
        kernel_regularizer: passed to every Conv2D.

    Examples:
        >>> import numpy as np
        >>> block = ResidualBlock(16, strides=2)
        >>> tuple(block(np.zeros((2, 28, 28, 8), "float32")).shape)
        (2, 14, 14, 16)
        >>> block.projection
        True
    """

    def __init__(
        self,
        filters,
        strides=1,
        activation="relu",
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.strides = check_positive_int("strides", strides)
        self.activation = get_activation(activation)
        self.kernel_initializer = _get(keras.initializers, "kernel_initializer", kernel_initializer)
        self.kernel_regularizer = _get(keras.regularizers, "kernel_regularizer", kernel_regularizer)
        self.conv1 = self._conv(3, self.strides, "conv1")
        self.bn1 = BatchNormalization(dtype=self.dtype_policy, name="bn1")
        self.conv2 = self._conv(3, 1, "conv2")
        self.bn2 = BatchNormalization(dtype=self.dtype_policy, name="bn2")
        self.projection = None  # decided in build()

    def _conv(self, kernel_size, strides, name):
        return keras.layers.Conv2D(
            self.filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        check(
            len(input_shape) == 4 and input_shape[-1] is not None,
            "ResidualBlock expects inputs of shape (batch, H, W, C) with known C",
            tuple(input_shape),
            "reshape flat inputs to images first",
        )
        self.conv1.build(input_shape)
        shape = self.conv1.compute_output_shape(input_shape)
        self.bn1.build(shape)
        self.conv2.build(shape)
        self.bn2.build(shape)
        self.projection = input_shape[-1] != self.filters or self.strides != 1
        if self.projection:
            # Created here because only the input shape tells whether needed.
            self.shortcut_conv = self._conv(1, self.strides, "shortcut_conv")
            self.shortcut_bn = BatchNormalization(dtype=self.dtype_policy, name="shortcut_bn")
            self.shortcut_conv.build(input_shape)
            self.shortcut_bn.build(shape)

    def call(self, inputs, training=None):
        x = self.conv1(inputs)
        x = self.bn1(x, training=training)
        x = self.activation(x)
        x = self.conv2(x)
        x = self.bn2(x, training=training)
        if self.projection:
            shortcut = self.shortcut_bn(self.shortcut_conv(inputs), training=training)
        else:
            shortcut = inputs
        return self.activation(x + shortcut)

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "strides": self.strides,
                "activation": serialize_activation(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
