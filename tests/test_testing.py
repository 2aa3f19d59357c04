"""Tests of tfcustom.testing.check_gradients.

Oracles: functions whose gradients are known to be right (autodiff of x**3,
sin, matmul, Keras built-in layers) must give a tiny error, and functions with a
deliberately wrong ``tf.custom_gradient`` must give the error the closed form
predicts (so the checker can fail).
"""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom import testing
from tfcustom.errors import ConfigError
from tfcustom.testing import check_gradients

RNG = np.random.default_rng(0)


def test_known_functions_have_tiny_error():
    x = np.linspace(-2.0, 2.0, 7)
    assert check_gradients(lambda t: t**3, x) < 1e-8
    assert check_gradients(tf.sin, x) < 1e-8
    assert check_gradients(lambda t: tf.exp(tf.sin(t)) * t, RNG.normal(size=(3, 4))) < 1e-8


def test_float32_inputs_are_cast_to_float64():
    seen = []

    def fn(t):
        seen.append(t.dtype)
        return tf.sin(t)

    assert check_gradients(fn, np.ones(3, "float32")) < 1e-8
    assert set(seen) == {tf.float64}


def test_wrong_custom_gradient_is_reported():
    @tf.custom_gradient
    def square_wrong(t):
        return t**2, lambda up: up * 3.0 * t  # true gradient: 2 t

    # analytic 3x vs numeric 2x: max|x| / max(3|x|) = 1/3
    err = check_gradients(square_wrong, np.array([0.5, -1.0, 2.0]))
    assert err == pytest.approx(1 / 3, abs=1e-6)


def test_single_wrong_entry_is_reported():
    @tf.custom_gradient
    def almost(t):
        def grad(up):
            return up * (tf.cos(t) + tf.one_hot(2, 5, dtype=t.dtype) * 0.5)

        return tf.sin(t), grad

    assert check_gradients(almost, np.zeros(5)) > 1e-2  # 1 of 5 entries is 1.5x too large


def test_multiple_inputs_and_variables_of_a_function():
    w = tf.Variable(RNG.normal(size=(4, 3)), dtype=tf.float64)
    b = keras.Variable(RNG.normal(size=(3,)), dtype="float64")
    x = RNG.normal(size=(2, 4))
    scale = RNG.normal(size=(2, 3))
    w_before = w.numpy().copy()
    err = check_gradients(lambda ins: tf.tanh(ins[0] @ w + b) * ins[1], [x, scale], variables=[w, b])
    assert err < 1e-8
    np.testing.assert_array_equal(w.numpy(), w_before)  # restored after perturbation


def test_wrong_gradient_for_a_variable_is_reported():
    w = tf.Variable([1.0, 2.0], dtype=tf.float64)

    @tf.custom_gradient
    def scaled(t):
        def grad(up, variables=None):
            # right for t, wrong (x 2) for w
            return up * w, [2.0 * tf.reduce_sum(up * t, axis=0)]

        return t * w, grad

    x = np.array([[1.0, -1.0], [0.5, 3.0]])
    assert check_gradients(scaled, x) < 1e-8  # inputs only
    assert check_gradients(scaled, x, variables=[w]) == pytest.approx(0.5, abs=1e-6)


def test_keras_layer_float32_is_checked_in_float64_and_left_untouched():
    layer = keras.layers.Dense(3, activation="tanh")
    x = RNG.normal(size=(4, 5)).astype("float32")
    layer(x)
    before = [w.numpy().copy() for w in layer.weights]
    assert check_gradients(layer, x) < 1e-6
    assert layer.dtype_policy.name == "float32" and all(w.dtype == "float32" for w in layer.weights)
    for a, b in zip(before, layer.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_unbuilt_layer_and_model():
    x = RNG.normal(size=(3, 4)).astype("float32")
    # sum(LayerNorm(x)) is constant: the random projection makes the check meaningful
    assert check_gradients(keras.layers.LayerNormalization(), x) < 1e-6
    assert check_gradients(keras.layers.Softmax(), x) < 1e-6
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, activation="gelu"), keras.layers.BatchNormalization(), keras.layers.Dense(2)]
    )
    assert check_gradients(model, x) < 1e-6


@keras.saving.register_keras_serializable(package="tfcustom_test")
class _Block(keras.layers.Layer):
    """A layer with a sublayer created without a dtype, and an optional wrong
    hand-written gradient for its scale weight."""

    def __init__(self, wrong=False, **kwargs):
        super().__init__(**kwargs)
        self.wrong = wrong
        self.inner = keras.layers.Dense(3)

    def build(self, input_shape):
        self.inner.build(input_shape)
        self.scale = self.add_weight(shape=(3,), initializer="ones", name="scale")

    def call(self, x):
        h = self.inner(x)
        scale = self.scale
        wrong = self.wrong

        @tf.custom_gradient
        def mul(h, s):
            def grad(up):
                ds = tf.reduce_sum(up * h, axis=0)
                return up * s, (3.0 * ds if wrong else ds)

            return h * s, grad

        return mul(h, tf.convert_to_tensor(scale))

    def get_config(self):
        return {**super().get_config(), "wrong": self.wrong}


def test_custom_layer_with_sublayer_and_wrong_weight_gradient():
    x = RNG.normal(size=(4, 2)).astype("float32")
    good, bad = _Block(), _Block(wrong=True)
    good(x)
    bad(x)
    bad.set_weights(good.get_weights())
    assert check_gradients(good, x) < 1e-6
    assert check_gradients(bad, x, variables=[]) < 1e-6  # input gradient is right
    assert check_gradients(bad, x, variables=[bad.inner.kernel]) < 1e-6
    assert check_gradients(bad, x, variables=[bad.scale]) == pytest.approx(2 / 3, abs=1e-6)


def test_integer_inputs_pass_through():
    layer = keras.layers.Embedding(6, 3)
    ids = np.array([[0, 2, 2], [5, 1, 0]], "int32")
    assert check_gradients(layer, ids) < 1e-6


def test_zero_gradient_tensor_is_not_reported_as_error():
    """The bias before a training-mode normalization has a zero gradient."""
    w = tf.Variable(RNG.normal(size=(3, 4)), dtype=tf.float64)
    b = tf.Variable(RNG.normal(size=(4,)), dtype=tf.float64)

    def fn(x):
        h = x @ w + b
        mean, var = tf.nn.moments(h, axes=[0])
        return (h - mean) / tf.sqrt(var + 1e-3)

    assert check_gradients(fn, RNG.normal(size=(5, 3)), variables=[w, b]) < 1e-6


def test_sum_blind_error_is_reported():
    """An error the plain sum cannot see (gradient off by a constant that sums
    to zero over the outputs) is caught thanks to the random projection."""

    @tf.custom_gradient
    def softmax_wrong(t):
        y = tf.nn.softmax(t)

        def grad(up):
            right = y * (up - tf.reduce_sum(up * y, axis=-1, keepdims=True))
            return right + 0.1 * (up - tf.reduce_mean(up, axis=-1, keepdims=True))

        return y, grad

    assert check_gradients(softmax_wrong, RNG.normal(size=(2, 4))) > 1e-2


def test_float64_layer_is_used_as_is():
    layer = keras.layers.Dense(2, dtype="float64")
    x = RNG.normal(size=(2, 3))
    layer(x)
    assert check_gradients(layer, x) < 1e-8


def test_rejects_float32_function_and_variables():
    with pytest.raises(ConfigError):
        check_gradients(lambda t: tf.cast(t, tf.float32) ** 2, np.ones(3))
    v = tf.Variable([1.0], dtype=tf.float32)
    with pytest.raises(ConfigError):
        check_gradients(lambda t: t * v, np.ones(1), variables=[v])
    with pytest.raises(ConfigError):
        check_gradients(tf.sin, np.ones(2), epsilon=0.0)
    layer = keras.layers.Dense(2)
    layer(np.ones((1, 3), "float32"))
    with pytest.raises(ConfigError):
        check_gradients(layer, np.ones((1, 3)), variables=[v])


def test_docstring_examples_run():
    result = doctest.testmod(testing, verbose=False)
    assert result.attempted > 0 and result.failed == 0
