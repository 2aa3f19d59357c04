"""``MLP``: a multi-layer perceptron of ``DenseBlock``s."""

from __future__ import annotations

import keras

from tfcustom.layers.dropout import check_rate
from tfcustom.errors import check_positive_int
from tfcustom.layers import Dense, DenseBlock, get_activation, serialize_activation
from tfcustom.models._base import _StackModel, _attach, _logits_dtype, _positive_ints


@keras.saving.register_keras_serializable(package="tfcustom")
class MLP(_StackModel):
    """Flatten -> one [`DenseBlock`][tfcustom.layers.DenseBlock] per hidden layer
    -> [`Dense`][tfcustom.layers.Dense] logits.

    Args:
        num_classes: number of logits.
        hidden_units: sizes of the hidden layers (may be empty).
        activation: activation of the hidden layers (anything
            ``keras.activations.get`` accepts).
        dropout: dropout rate after each hidden layer; 0 disables it.
        batch_norm: BatchNormalization in each hidden layer.

    Examples:
        >>> import numpy as np
        >>> model = MLP(10, hidden_units=(32,), dropout=0.2)
        >>> tuple(model(np.zeros((2, 28, 28, 1), "float32")).shape)
        (2, 10)
    """

    def __init__(
        self,
        num_classes,
        hidden_units=(256, 128),
        activation="relu",
        dropout=0.0,
        batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.hidden_units = _positive_ints("hidden_units", hidden_units, allow_empty=True)
        self.activation = get_activation(activation)
        self.dropout = check_rate("dropout", dropout)
        self.batch_norm = bool(batch_norm)
        self.flatten = keras.layers.Flatten(dtype=self.dtype_policy, name="flatten")
        self.hidden = [
            DenseBlock(
                units,
                activation=self.activation,
                dropout=self.dropout,
                batch_norm=self.batch_norm,
                dtype=self.dtype_policy,
                name=f"hidden_{i}",
            )
            for i, units in enumerate(self.hidden_units)
        ]
        _attach(self, self.hidden)
        self.logits = Dense(num_classes, dtype=_logits_dtype(self.dtype_policy), name="logits")

    def _stack(self):
        return [self.flatten, *self.hidden, self.logits]

    def call(self, inputs, training=None):
        x = self.flatten(inputs)
        for block in self.hidden:
            x = block(x, training=training)
        return self.logits(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "hidden_units": list(self.hidden_units),
                "activation": serialize_activation(self.activation),
                "dropout": self.dropout,
                "batch_norm": self.batch_norm,
            }
        )
        return config
