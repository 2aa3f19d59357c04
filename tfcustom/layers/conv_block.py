"""``ConvBlock``: Conv2D -> BatchNormalization -> activation -> MaxPooling2D -> Dropout."""

from __future__ import annotations

import keras

from tfcustom.layers.batch_normalization import BatchNormalization
from tfcustom.errors import check, check_positive_int
from tfcustom.layers.dropout import Dropout, check_rate
from tfcustom.layers._args import _get
from tfcustom.layers.activations import get_activation, serialize_activation


@keras.saving.register_keras_serializable(package="tfcustom")
class ConvBlock(keras.layers.Layer):
    """``Conv2D(padding="same") -> BatchNormalization -> activation
    -> MaxPooling2D -> Dropout``.

    Pooling is optional (``pool_size`` 0 or None disables it), so is dropout
    (``dropout=0``) and BatchNorm (``batch_norm=False``; the conv then has a
    bias). Inputs are channels-last ``(batch, H, W, C)``.

    Args:
        filters: positive int, output channels.
        kernel_size: positive int, square kernel size.
        activation: anything ``keras.activations.get`` accepts (see
            [`get_activation`][tfcustom.layers.get_activation]).
        pool_size: int >= 2 for max pooling with that size and stride, or
            0/None for no pooling.
        dropout: dropout rate in [0, 1) applied last; 0 disables it.
        batch_norm: whether to insert BatchNormalization.
        kernel_initializer: passed to the Conv2D.
        kernel_regularizer: passed to the Conv2D.

    Examples:
        >>> import numpy as np
        >>> block = ConvBlock(8, pool_size=2)
        >>> tuple(block(np.zeros((2, 28, 28, 1), "float32")).shape)
        (2, 14, 14, 8)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        activation="relu",
        pool_size=None,
        dropout=0.0,
        batch_norm=True,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.activation = get_activation(activation)
        check(
            pool_size in (None, 0) or (isinstance(pool_size, int) and not isinstance(pool_size, bool) and pool_size >= 1),
            "pool_size must be a positive int, 0 or None",
            pool_size,
            "pass e.g. pool_size=2, or 0/None to disable pooling",
        )
        self.pool_size = int(pool_size) if pool_size else None
        self.dropout = check_rate("dropout", dropout)
        self.batch_norm = bool(batch_norm)
        self.kernel_initializer = _get(keras.initializers, "kernel_initializer", kernel_initializer)
        self.kernel_regularizer = _get(keras.regularizers, "kernel_regularizer", kernel_regularizer)
        self.conv = keras.layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            use_bias=not self.batch_norm,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name="conv",
        )
        self.bn = BatchNormalization(dtype=self.dtype_policy, name="bn") if self.batch_norm else None
        self.pool = keras.layers.MaxPooling2D(self.pool_size, dtype=self.dtype_policy, name="pool") if self.pool_size else None
        self.drop = Dropout(self.dropout, dtype=self.dtype_policy, name="dropout") if self.dropout > 0 else None

    def build(self, input_shape):
        check(
            len(input_shape) == 4,
            "ConvBlock expects inputs of shape (batch, H, W, C)",
            tuple(input_shape),
            "reshape flat inputs to images first",
        )
        self.conv.build(input_shape)
        shape = self.conv.compute_output_shape(input_shape)
        if self.bn is not None:
            self.bn.build(shape)
        if self.pool is not None:
            shape = self.pool.compute_output_shape(shape)
        if self.drop is not None:
            self.drop.build(shape)

    def call(self, inputs, training=None):
        x = self.conv(inputs)
        if self.bn is not None:
            x = self.bn(x, training=training)
        x = self.activation(x)
        if self.pool is not None:
            x = self.pool(x)
        if self.drop is not None:
            x = self.drop(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        shape = self.conv.compute_output_shape(input_shape)
        if self.pool is not None:
            shape = self.pool.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "activation": serialize_activation(self.activation),
                "pool_size": self.pool_size,
                "dropout": self.dropout,
                "batch_norm": self.batch_norm,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
