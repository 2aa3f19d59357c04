"""Custom Keras 3 layers: a from-scratch ``Dense`` and ``Softmax``, and blocks.

Each layer is an ordinary subclassed ``keras.layers.Layer`` (``build`` /
``add_weight`` / ``call`` / ``compute_output_shape`` / ``get_config``),
registered under the ``"tfcustom"`` package so ``.keras`` files reload with
``safe_mode=True``.

Activations are anything ``keras.activations.get`` accepts (a name, a
callable such as ``keras.activations.relu``, None for linear), resolved by
[`get_activation`][tfcustom.layers.get_activation] and serialized with ``keras.activations.serialize``.
Blocks create their sublayers with ``dtype=self.dtype_policy`` (as Keras'
composite layers do), so ``dtype="mixed_float16"`` computes in float16 inside
the block too.

Examples:
    >>> import numpy as np
    >>> from tfcustom.layers import Dense, Softmax
    >>> x = np.ones((2, 4), "float32")
    >>> probs = Softmax()(Dense(3)(x))
    >>> tuple(probs.shape)
    (2, 3)
"""

from __future__ import annotations

from tfcustom.layers.activations import ACTIVATIONS, get_activation, serialize_activation
from tfcustom.layers.batch_normalization import BatchNormalization
from tfcustom.layers.conv_block import ConvBlock
from tfcustom.layers.dense import Dense
from tfcustom.layers.dense_block import DenseBlock
from tfcustom.layers.residual_block import ResidualBlock
from tfcustom.layers.softmax import Softmax

__all__ = [
    "ACTIVATIONS",
    "get_activation",
    "serialize_activation",
    "Dense",
    "Softmax",
    "BatchNormalization",
    "DenseBlock",
    "ConvBlock",
    "ResidualBlock",
]

# ``doctest.testmod(tfcustom.layers)`` only collects objects defined in this
# module; list the re-exported ones so their docstring examples still run.
__test__ = {name: globals()[name] for name in __all__ if name != "ACTIVATIONS"}
