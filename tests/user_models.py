"""Users' own model functions for ``--model=user_models:<function>`` (tests/test_user_model.py)."""

import keras


def small_mlp(num_classes, input_shape, units=16):
    """A plain functional Keras model outputting logits."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="small_mlp")


def no_model(num_classes, input_shape):
    return "not a model"


NOT_CALLABLE = 3
