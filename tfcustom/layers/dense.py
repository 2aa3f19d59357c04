"""A from-scratch ``Dense`` layer (as ``keras.layers.Dense``)."""

from __future__ import annotations

import keras
from keras import ops

from tfcustom.errors import check, check_positive_int
from tfcustom.layers._args import _get
from tfcustom.layers.activations import get_activation, serialize_activation


@keras.saving.register_keras_serializable(package="tfcustom")
class Dense(keras.layers.Layer):
    """Fully connected layer: ``activation(inputs @ kernel + bias)``.

    Written from scratch (no ``keras.layers.Dense`` inside). Inputs of rank
    > 2 are multiplied along their last axis. Like Keras' Dense it passes a
    Keras mask through unchanged (``supports_masking = True``).

    Args:
        units: positive int, size of the output's last axis.
        activation: anything ``keras.activations.get`` accepts (see
            [`get_activation`][tfcustom.layers.get_activation]); None means linear.
        use_bias: whether to add a bias vector.
        kernel_initializer: anything ``keras.initializers.get`` accepts.
        bias_initializer: anything ``keras.initializers.get`` accepts.
        kernel_regularizer: anything ``keras.regularizers.get`` accepts, or None.
        bias_regularizer: anything ``keras.regularizers.get`` accepts, or None.

    Examples:
        >>> import numpy as np
        >>> layer = Dense(4, activation="relu")
        >>> tuple(layer(np.zeros((2, 3), "float32")).shape)
        (2, 4)
        >>> [tuple(w.shape) for w in layer.weights]
        [(3, 4), (4,)]
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.activation = get_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _get(keras.initializers, "kernel_initializer", kernel_initializer)
        self.bias_initializer = _get(keras.initializers, "bias_initializer", bias_initializer)
        self.kernel_regularizer = _get(keras.regularizers, "kernel_regularizer", kernel_regularizer)
        self.bias_regularizer = _get(keras.regularizers, "bias_regularizer", bias_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        in_dim = input_shape[-1]
        check(
            in_dim is not None,
            "Dense needs a known last input dimension",
            tuple(input_shape),
            "give the input a static last axis (e.g. flatten first)",
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(in_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias = None

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": serialize_activation(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config
