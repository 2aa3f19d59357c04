"""``DenseBlock``: Dense -> BatchNormalization -> activation -> Dropout."""

from __future__ import annotations

import keras

from tfcustom.layers.batch_normalization import BatchNormalization
from tfcustom.errors import check_positive_int
from tfcustom.layers.dropout import Dropout, check_rate
from tfcustom.layers._args import _get
from tfcustom.layers.activations import get_activation, serialize_activation
from tfcustom.layers.dense import Dense


@keras.saving.register_keras_serializable(package="tfcustom")
class DenseBlock(keras.layers.Layer):
    """``Dense -> BatchNormalization -> activation -> Dropout``.

    With ``batch_norm=True`` the Dense has no bias (BN's beta plays that
    role). ``dropout=0`` disables dropout. BatchNorm and Dropout follow the
    ``training`` argument.

    Args:
        units: positive int.
        activation: anything ``keras.activations.get`` accepts (see
            [`get_activation`][tfcustom.layers.get_activation]).
        dropout: dropout rate in [0, 1); 0 disables it.
        batch_norm: whether to insert BatchNormalization.
        kernel_initializer: passed to the Dense.
        kernel_regularizer: passed to the Dense.

    Examples:
        >>> import numpy as np
        >>> block = DenseBlock(8, dropout=0.5)
        >>> tuple(block(np.ones((4, 3), "float32"), training=False).shape)
        (4, 8)
    """

    def __init__(
        self,
        units,
        activation="relu",
        dropout=0.0,
        batch_norm=True,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.activation = get_activation(activation)
        self.dropout = check_rate("dropout", dropout)
        self.batch_norm = bool(batch_norm)
        self.kernel_initializer = _get(keras.initializers, "kernel_initializer", kernel_initializer)
        self.kernel_regularizer = _get(keras.regularizers, "kernel_regularizer", kernel_regularizer)
        self.dense = Dense(
            units,
            use_bias=not self.batch_norm,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name="dense",
        )
        self.bn = BatchNormalization(dtype=self.dtype_policy, name="bn") if self.batch_norm else None
        self.drop = Dropout(self.dropout, dtype=self.dtype_policy, name="dropout") if self.dropout > 0 else None

    def build(self, input_shape):
        self.dense.build(input_shape)
        shape = self.dense.compute_output_shape(input_shape)
        if self.bn is not None:
            self.bn.build(shape)
        if self.drop is not None:
            self.drop.build(shape)

    def call(self, inputs, training=None):
        x = self.dense(inputs)
        if self.bn is not None:
            x = self.bn(x, training=training)
        x = self.activation(x)
        if self.drop is not None:
            x = self.drop(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return self.dense.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": serialize_activation(self.activation),
                "dropout": self.dropout,
                "batch_norm": self.batch_norm,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
