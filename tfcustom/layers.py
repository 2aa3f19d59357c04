"""Custom Keras 3 layers: a from-scratch ``Dense`` and ``Softmax``, and blocks.

Each layer is an ordinary subclassed ``keras.layers.Layer`` (``build`` /
``add_weight`` / ``call`` / ``compute_output_shape`` / ``get_config``),
registered under the ``"tfcustom"`` package so ``.keras`` files reload with
``safe_mode=True``.

Activations are anything ``keras.activations.get`` accepts (a name, a
callable such as ``keras.activations.relu``, None for linear), resolved by
:func:`get_activation` and serialized with ``keras.activations.serialize``.
Blocks create their sublayers with ``dtype=self.dtype_policy`` (as Keras'
composite layers do), so ``dtype="mixed_float16"`` computes in float16 inside
the block too.

Example:

>>> import numpy as np
>>> from tfcustom.layers import Dense, Softmax
>>> x = np.ones((2, 4), "float32")
>>> probs = Softmax()(Dense(3)(x))
>>> tuple(probs.shape)
(2, 3)
"""

from __future__ import annotations

import keras
from keras import ops

from tfcustom.errors import check, check_positive_int, config_error
from tfcustom.dropout import Dropout

__all__ = [
    "ACTIVATIONS",
    "get_activation",
    "serialize_activation",
    "Dense",
    "Softmax",
    "DenseBlock",
    "ConvBlock",
    "ResidualBlock",
]

# Common names (any other name keras.activations.get knows works too).
# "swish" is an alias of "silu".
ACTIVATIONS = {
    "relu": keras.activations.relu,
    "leaky_relu": keras.activations.leaky_relu,  # negative_slope=0.2
    "gelu": keras.activations.gelu,  # exact (erf) form
    "silu": keras.activations.silu,
    "swish": keras.activations.silu,
    "tanh": keras.activations.tanh,
    "sigmoid": keras.activations.sigmoid,
    "linear": keras.activations.linear,
}


def get_activation(identifier):
    """Return the activation function for ``identifier``: whatever
    ``keras.activations.get`` accepts (a name, case-insensitive; a callable;
    a serialized function; ``None`` means linear).

    Example:

    >>> get_activation("relu")([-1.0, 2.0]).numpy().tolist()
    [0.0, 2.0]
    >>> get_activation(keras.activations.elu) is keras.activations.elu
    True
    """
    if isinstance(identifier, str):
        identifier = identifier.lower()
    try:
        fn = keras.activations.get(identifier)
    except (ValueError, TypeError) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise config_error(
            "unknown activation",
            identifier,
            "pass a callable or a name keras.activations.get accepts, e.g. "
            + ", ".join(sorted(ACTIVATIONS))
            + f" ({detail})",
        ) from None
    check(callable(fn), "activation must be callable", identifier, "pass a name such as 'relu' or a function")
    return fn


def serialize_activation(fn):
    """The config form of an activation function (its name for Keras'
    built-ins, e.g. ``"relu"``; Keras' serialized form for registered
    functions): what :func:`get_activation` turns back into ``fn``."""
    return keras.activations.serialize(fn)


def _get(module, what, value):
    """``keras.<module>.get(value)`` with errors in the tfcustom template."""
    try:
        return module.get(value)
    except (ValueError, TypeError) as e:
        raise config_error(
            f"invalid {what}", value, f"pass a name or object that {module.__name__}.get accepts ({e})"
        ) from None


def _check_rate(rate):
    check(
        isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= rate < 1.0,
        "dropout rate must be in [0, 1)",
        rate,
        "pass 0 to disable dropout or a value such as 0.3",
    )
    return float(rate)


@keras.saving.register_keras_serializable(package="tfcustom")
class Dense(keras.layers.Layer):
    """Fully connected layer: ``activation(inputs @ kernel + bias)``.

    Written from scratch (no ``keras.layers.Dense`` inside). Inputs of rank
    > 2 are multiplied along their last axis. Like Keras' Dense it passes a
    Keras mask through unchanged (``supports_masking = True``).

    Args:
        units: positive int, size of the output's last axis.
        activation: anything ``keras.activations.get`` accepts (see
            :func:`get_activation`); None means linear.
        use_bias: whether to add a bias vector.
        kernel_initializer, bias_initializer: anything
            ``keras.initializers.get`` accepts.
        kernel_regularizer, bias_regularizer: anything
            ``keras.regularizers.get`` accepts, or None.

    Example:

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


@keras.saving.register_keras_serializable(package="tfcustom")
class Softmax(keras.layers.Layer):
    """Numerically stable softmax: ``exp(x - max(x)) / sum(exp(x - max(x)))``.

    Subtracting the maximum along ``axis`` keeps ``exp`` from overflowing, so
    logits such as +-1e4 give finite probabilities.

    As ``keras.layers.Softmax``: ``call(inputs, mask=None)`` takes a mask
    broadcastable to ``inputs`` (aligned on the last axes; True/1 keeps an
    entry): masked entries get probability 0 and the others are normalised
    among themselves. A Keras mask is passed through (``supports_masking``).

    Args:
        axis: int, the axis to normalise over (default: last).

    Example:

    >>> import numpy as np
    >>> p = Softmax()(np.array([[1e4, 0.0, -1e4]], "float32"))
    >>> p.numpy().round(3).tolist()
    [[1.0, 0.0, 0.0]]
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        check(
            isinstance(axis, int) and not isinstance(axis, bool),
            "Softmax axis must be an int",
            axis,
            "pass e.g. axis=-1",
        )
        self.axis = axis
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            mask = self._check_mask(mask, inputs)
            # Keras' constant: far below any logit, yet finite in float16.
            low = -3e4 if keras.backend.standardize_dtype(inputs.dtype) == "float16" else -1e9
            inputs = ops.where(mask, inputs, ops.cast(low, inputs.dtype))
        shifted = inputs - ops.stop_gradient(ops.max(inputs, axis=self.axis, keepdims=True))
        e = ops.exp(shifted)
        outputs = e / ops.sum(e, axis=self.axis, keepdims=True)
        if mask is not None:
            outputs = ops.where(mask, outputs, ops.zeros_like(outputs))
        return outputs

    @staticmethod
    def _check_mask(mask, inputs):
        m_shape, i_shape = tuple(mask.shape), tuple(inputs.shape)
        check(
            len(m_shape) <= len(i_shape)
            and all(m in (1, None) or i is None or m == i for m, i in zip(m_shape[::-1], i_shape[::-1])),
            "Softmax mask must be broadcastable to the inputs (aligned on the last axes)",
            {"mask": m_shape, "inputs": i_shape},
            "give the mask the inputs' shape, or size 1 on the axes to broadcast",
        )
        if keras.backend.standardize_dtype(mask.dtype) != "bool":
            mask = ops.greater(mask, ops.cast(0.5, mask.dtype))
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis})
        return config


@keras.saving.register_keras_serializable(package="tfcustom")
class DenseBlock(keras.layers.Layer):
    """``Dense -> BatchNormalization -> activation -> Dropout``.

    With ``batch_norm=True`` the Dense has no bias (BN's beta plays that
    role). ``dropout=0`` disables dropout. BatchNorm and Dropout follow the
    ``training`` argument.

    Args:
        units: positive int.
        activation: anything ``keras.activations.get`` accepts (see
            :func:`get_activation`).
        dropout: dropout rate in [0, 1); 0 disables it.
        batch_norm: whether to insert BatchNormalization.
        kernel_initializer, kernel_regularizer: passed to the Dense.

    Example:

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
        self.dropout = _check_rate(dropout)
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
        self.bn = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="bn") if self.batch_norm else None
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
            :func:`get_activation`).
        pool_size: int >= 2 for max pooling with that size and stride, or
            0/None for no pooling.
        dropout: dropout rate in [0, 1) applied last; 0 disables it.
        batch_norm: whether to insert BatchNormalization.
        kernel_initializer, kernel_regularizer: passed to the Conv2D.

    Example:

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
        self.dropout = _check_rate(dropout)
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
        self.bn = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="bn") if self.batch_norm else None
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
            :func:`get_activation`).
        kernel_initializer, kernel_regularizer: passed to every Conv2D.

    Example:

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
        self.bn1 = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="bn1")
        self.conv2 = self._conv(3, 1, "conv2")
        self.bn2 = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="bn2")
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
            self.shortcut_bn = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="shortcut_bn")
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
