"""Activation lookup shared by the tfcustom layers and models: names, callables
and their config form (``keras.activations.get`` / ``serialize``)."""

from __future__ import annotations

import keras

from tfcustom.errors import check, config_error


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

    Args:
      identifier: the activation's name, function or serialized form.

    Returns:
      The activation function; an unknown one raises [`ConfigError`][tfcustom.errors.ConfigError].

    Examples:
        >>> import keras
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
    """The config form of an activation function.

    Its name for Keras' built-ins, e.g. ``"relu"``; Keras' serialized form for
    registered functions: what [`get_activation`][tfcustom.layers.activations.get_activation] turns back into ``fn``.

    Args:
      fn: an activation function (a Keras built-in, or one registered with
        ``keras.saving.register_keras_serializable``).

    Returns:
      A string or a JSON-able dict, for a layer's ``get_config``.

    Examples:
        >>> import keras
        >>> serialize_activation(keras.activations.gelu)
        'gelu'
        >>> @keras.saving.register_keras_serializable(package="docs")
        ... def relu6(x):
        ...     return keras.ops.minimum(keras.activations.relu(x), 6.0)
        >>> config = serialize_activation(relu6)
        >>> config["config"], get_activation(config) is relu6
        ('docs>relu6', True)
    """
    return keras.activations.serialize(fn)
