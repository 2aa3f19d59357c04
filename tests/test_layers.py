"""Tests for tfcustom.layers against independent oracles (Keras built-ins, NumPy,
finite differences)."""

import doctest
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom import layers as L
from tfcustom.errors import ConfigError
from tfcustom.testing import check_gradients

RNG = np.random.default_rng(0)


def randn(*shape, dtype="float32"):
    return RNG.standard_normal(shape).astype(dtype)


def randomize_bn(bn):
    """Give a BatchNormalization layer non-trivial gamma/beta/moving stats."""
    c = bn.gamma.shape[0]
    bn.set_weights(
        [
            RNG.uniform(0.5, 1.5, c).astype("float32"),
            randn(c),
            randn(c),
            RNG.uniform(0.5, 2.0, c).astype("float32"),
        ]
    )


# --------------------------------------------------------------------------
# get_activation


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


NP_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "gelu": lambda x: 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0))),
    "silu": lambda x: x * _np_sigmoid(x),
    "swish": lambda x: x * _np_sigmoid(x),
    "tanh": np.tanh,
    "sigmoid": _np_sigmoid,
    "linear": lambda x: x,
}


@pytest.mark.parametrize("name", sorted(NP_ACTIVATIONS))
def test_get_activation_matches_numpy(name):
    x = np.linspace(-5, 5, 41).astype("float32")
    got = np.asarray(L.get_activation(name)(tf.constant(x)))
    np.testing.assert_allclose(got, NP_ACTIVATIONS[name](x.astype("float64")), rtol=1e-5, atol=1e-6)


def test_get_activation_none_is_linear_and_names_case_insensitive():
    x = tf.constant([-2.0, 3.0])
    np.testing.assert_array_equal(L.get_activation(None)(x), [-2.0, 3.0])
    np.testing.assert_array_equal(L.get_activation("ReLU")(x), [0.0, 3.0])


def test_get_activation_unknown_lists_known_names():
    with pytest.raises(ConfigError) as e:
        L.get_activation("bogus")
    msg = str(e.value)
    assert "'bogus'" in msg and "keras.activations.get" in msg
    for name in NP_ACTIVATIONS:
        assert name in msg


# --------------------------------------------------------------------------
# Dense


@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("input_shape", [(4, 5), (2, 3, 5)])
def test_dense_matches_keras_dense_outputs_and_gradients(activation, use_bias, input_shape):
    ours = L.Dense(3, activation=activation, use_bias=use_bias, bias_initializer="random_normal")
    ref = keras.layers.Dense(3, activation=activation, use_bias=use_bias)
    x = tf.constant(randn(*input_shape))
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(ours.get_weights())

    def outputs_and_grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.cos(y))  # non-trivial upstream gradient
        grads = tape.gradient(loss, [x] + [v.value for v in layer.trainable_variables])
        return y, grads

    y_ours, g_ours = outputs_and_grads(ours)
    y_ref, g_ref = outputs_and_grads(ref)
    assert y_ours.shape == y_ref.shape == input_shape[:-1] + (3,)
    np.testing.assert_allclose(y_ours, y_ref, rtol=1e-6, atol=1e-6)
    assert len(g_ours) == len(g_ref) == 2 + int(use_bias)
    for a, b in zip(g_ours, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", [None, "tanh", "gelu"])
def test_dense_gradients_match_finite_differences(activation):
    layer = L.Dense(3, activation=activation, bias_initializer="random_normal")
    # Inputs and every weight (kernel, bias), float64 central differences.
    assert check_gradients(layer, randn(4, 5)) < 1e-6


def test_dense_regularizers_add_losses():
    layer = L.Dense(
        3,
        kernel_regularizer=keras.regularizers.L2(0.1),
        bias_regularizer=keras.regularizers.L1(0.5),
        bias_initializer="random_normal",
    )
    layer.build((None, 4))
    k, b = layer.get_weights()
    expected = 0.1 * np.sum(k.astype("float64") ** 2) + 0.5 * np.sum(np.abs(b))
    assert len(layer.losses) == 2
    np.testing.assert_allclose(float(sum(layer.losses)), expected, rtol=1e-5)


def test_dense_initializers_by_name():
    layer = L.Dense(3, kernel_initializer="ones", bias_initializer="zeros")
    layer.build((None, 2))
    np.testing.assert_array_equal(layer.kernel.numpy(), np.ones((2, 3)))
    np.testing.assert_array_equal(layer.bias.numpy(), np.zeros(3))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"units": 0},
        {"units": 2.5},
        {"units": 3, "activation": "softplusplus"},
        {"units": 3, "kernel_initializer": "not_an_initializer"},
        {"units": 3, "kernel_regularizer": "not_a_regularizer"},
    ],
)
def test_dense_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        L.Dense(**kwargs)


# --------------------------------------------------------------------------
# Softmax


@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_softmax_matches_keras_softmax(axis):
    x = randn(3, 4, 5) * 5
    got = L.Softmax(axis=axis)(x)
    np.testing.assert_allclose(got, keras.activations.softmax(x, axis=axis), rtol=1e-6, atol=1e-7)


def test_softmax_extreme_logits_are_finite_and_correct():
    x = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], "float32")
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        p = L.Softmax()(xt)
        loss = tf.reduce_sum(p * tf.constant([[1.0, 2.0, 3.0]]))
    grad = tape.gradient(loss, xt)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]], atol=1e-7)
    # The naive formula overflows on these logits; ours must not.
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    assert np.isnan(naive).any()


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_gradients_match_finite_differences(axis):
    assert check_gradients(L.Softmax(axis=axis), randn(3, 4) * 3) < 1e-6


def test_softmax_rejects_non_int_axis():
    with pytest.raises(ConfigError):
        L.Softmax(axis="last")


# --------------------------------------------------------------------------
# Blocks vs. equivalent stacks of Keras built-ins


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_dense_block_matches_keras_stack(batch_norm, activation):
    block = L.DenseBlock(6, activation=activation, dropout=0.5, batch_norm=batch_norm)
    x = randn(8, 5)
    block.build(x.shape)
    stack = [keras.layers.Dense(6, use_bias=not batch_norm)]
    if batch_norm:
        stack.append(keras.layers.BatchNormalization())
    stack += [keras.layers.Activation(activation), keras.layers.Dropout(0.5)]
    ref = keras.Sequential([keras.Input((5,))] + stack)
    ref.layers[0].set_weights(block.dense.get_weights())
    if batch_norm:
        randomize_bn(block.bn)
        ref.layers[1].set_weights(block.bn.get_weights())
    # Eval mode: deterministic, must match exactly.
    np.testing.assert_allclose(block(x, training=False), ref(x, training=False), rtol=1e-5, atol=1e-6)
    # Train mode without the dropout: BN uses batch statistics in both.
    if batch_norm:
        ours_no_drop = block.bn(block.dense(x), training=True)
        ref_no_drop = ref.layers[1](ref.layers[0](x), training=True)
        np.testing.assert_allclose(ours_no_drop, ref_no_drop, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool_size", [2, None, 0])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_conv_block_matches_keras_stack(pool_size, batch_norm):
    block = L.ConvBlock(4, kernel_size=3, activation="relu", pool_size=pool_size, dropout=0.25, batch_norm=batch_norm)
    x = RNG.uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    block.build(x.shape)
    stack = [keras.layers.Conv2D(4, 3, padding="same", use_bias=not batch_norm)]
    if batch_norm:
        stack.append(keras.layers.BatchNormalization())
    stack.append(keras.layers.ReLU())
    if pool_size:
        stack.append(keras.layers.MaxPooling2D(pool_size))
    stack.append(keras.layers.Dropout(0.25))
    ref = keras.Sequential([keras.Input((8, 8, 3))] + stack)
    ref.layers[0].set_weights(block.conv.get_weights())
    if batch_norm:
        randomize_bn(block.bn)
        ref.layers[1].set_weights(block.bn.get_weights())
    y = block(x, training=False)
    expected_hw = 4 if pool_size else 8
    assert tuple(y.shape) == (2, expected_hw, expected_hw, 4)
    np.testing.assert_allclose(y, ref(x, training=False), rtol=1e-5, atol=1e-5)


def _keras_residual(x_shape, filters, strides, block):
    """The same residual block written with Keras built-ins (functional API),
    weights copied from ``block``."""
    inp = keras.Input(x_shape[1:])
    conv1 = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)
    bn1 = keras.layers.BatchNormalization()
    conv2 = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)
    bn2 = keras.layers.BatchNormalization()
    h = keras.layers.ReLU()(bn1(conv1(inp)))
    h = bn2(conv2(h))
    pairs = [(conv1, block.conv1), (bn1, block.bn1), (conv2, block.conv2), (bn2, block.bn2)]
    if x_shape[-1] != filters or strides != 1:
        sc_conv = keras.layers.Conv2D(filters, 1, strides=strides, padding="same", use_bias=False)
        sc_bn = keras.layers.BatchNormalization()
        shortcut = sc_bn(sc_conv(inp))
        pairs += [(sc_conv, block.shortcut_conv), (sc_bn, block.shortcut_bn)]
    else:
        shortcut = inp
    out = keras.layers.ReLU()(keras.layers.Add()([h, shortcut]))
    model = keras.Model(inp, out)
    for ref_layer, our_layer in pairs:
        ref_layer.set_weights(our_layer.get_weights())
    return model


@pytest.mark.parametrize(
    "in_channels,filters,strides,projection",
    [(4, 4, 1, False), (4, 8, 1, True), (4, 4, 2, True), (3, 8, 2, True)],
)
def test_residual_block_matches_keras_functional(in_channels, filters, strides, projection):
    x = randn(2, 8, 8, in_channels)
    block = L.ResidualBlock(filters, strides=strides)
    block.build(x.shape)
    assert block.projection is projection
    n_weights = 10 + (5 if projection else 0)  # 2 convs + 2 BNs (+ 1x1 conv + BN)
    assert len(block.weights) == n_weights
    for bn in [block.bn1, block.bn2] + ([block.shortcut_bn] if projection else []):
        randomize_bn(bn)
    ref = _keras_residual(x.shape, filters, strides, block)
    y = block(x, training=False)
    assert tuple(y.shape) == (2, 8 // strides, 8 // strides, filters)
    assert tuple(block.compute_output_shape(x.shape)) == tuple(y.shape)
    np.testing.assert_allclose(y, ref(x, training=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(block(x, training=True), ref(x, training=True), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: L.DenseBlock(4, activation="gelu", dropout=0.5), (3, 5)),
        (lambda: L.DenseBlock(4, activation="tanh", batch_norm=False), (3, 5)),
        (lambda: L.ConvBlock(3, activation="silu", pool_size=2, dropout=0.3), (1, 4, 4, 2)),
        (lambda: L.ResidualBlock(3, strides=2, activation="tanh"), (1, 4, 4, 2)),
    ],
    ids=["DenseBlock", "DenseBlockNoBN", "ConvBlock", "ResidualBlock"],
)
def test_block_gradients_match_finite_differences(make, shape):
    layer = make()
    layer.build(shape)
    _randomize_all_weights(layer)
    # Keras' default training (inference): deterministic, BN uses moving stats.
    assert check_gradients(layer, randn(*shape)) < 1e-6


# --------------------------------------------------------------------------
# training=True vs False


def _moving_stats(bn):
    return bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()


@pytest.mark.parametrize(
    "make_block,x",
    [
        (lambda: L.DenseBlock(16, dropout=0.5), RNG.uniform(0, 1, (32, 8)).astype("float32")),
        (lambda: L.ConvBlock(8, pool_size=2, dropout=0.5), RNG.uniform(0, 1, (4, 8, 8, 3)).astype("float32")),
    ],
    ids=["DenseBlock", "ConvBlock"],
)
def test_blocks_honour_training_flag(make_block, x):
    block = make_block()
    block.build(x.shape)
    mean0, var0 = _moving_stats(block.bn)

    # Eval mode: deterministic and leaves the moving statistics alone.
    e1, e2 = block(x, training=False), block(x, training=False)
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(block.bn.moving_mean.numpy(), mean0)
    np.testing.assert_array_equal(block.bn.moving_variance.numpy(), var0)

    # Train mode: dropout zeroes units (randomly) and BN updates its moving
    # statistics with momentum 0.99 towards the batch statistics.
    pre_bn = block.conv(x) if isinstance(block, L.ConvBlock) else block.dense(x)
    axes = tuple(range(len(pre_bn.shape) - 1))
    batch_mean = np.mean(pre_bn, axis=axes)
    batch_var = np.var(pre_bn, axis=axes)
    t1 = block(x, training=True)
    np.testing.assert_allclose(block.bn.moving_mean.numpy(), 0.99 * mean0 + 0.01 * batch_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(block.bn.moving_variance.numpy(), 0.99 * var0 + 0.01 * batch_var, rtol=1e-4, atol=1e-6)
    t2 = block(x, training=True)
    assert not np.allclose(t1, t2)  # different dropout masks
    assert not np.allclose(t1, e1)

    # NumPy oracle of the train-mode output before dropout: BN with batch
    # statistics (gamma=1, beta=0, eps=1e-3), ReLU, then 2x2 max pooling.
    no_drop = np.maximum((np.asarray(pre_bn) - batch_mean) / np.sqrt(batch_var + 1e-3), 0.0)
    if isinstance(block, L.ConvBlock):
        n, h, w, c = no_drop.shape
        no_drop = no_drop.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    t1 = np.asarray(t1)
    kept = t1 != 0
    # Kept units are scaled by 1 / (1 - rate) = 2; about half of the positive
    # units are dropped.
    np.testing.assert_allclose(t1[kept], 2 * no_drop[kept], rtol=1e-4, atol=1e-4)
    positive = no_drop > 1e-6
    dropped_frac = 1 - kept[positive].sum() / positive.sum()
    assert 0.3 < dropped_frac < 0.7


def test_residual_block_batch_norm_updates_only_in_training():
    block = L.ResidualBlock(4)
    x = randn(2, 6, 6, 4)
    block(x, training=False)
    before = _moving_stats(block.bn1)
    block(x, training=False)
    np.testing.assert_array_equal(_moving_stats(block.bn1)[0], before[0])
    block(x, training=True)
    assert not np.allclose(_moving_stats(block.bn1)[0], before[0])


# --------------------------------------------------------------------------
# Shapes, configs, saving

LAYER_CASES = [
    ("Dense", lambda: L.Dense(5, activation="gelu", kernel_regularizer="l2"), (3, 7)),
    ("Dense3d", lambda: L.Dense(5, use_bias=False), (2, 3, 7)),
    ("Softmax", lambda: L.Softmax(axis=1), (3, 4, 2)),
    ("DenseBlock", lambda: L.DenseBlock(6, activation="silu", dropout=0.2, kernel_regularizer="l2"), (3, 7)),
    ("DenseBlockNoBN", lambda: L.DenseBlock(6, batch_norm=False), (3, 7)),
    ("ConvBlock", lambda: L.ConvBlock(4, kernel_size=5, pool_size=2, dropout=0.1), (2, 9, 9, 3)),
    ("ConvBlockNoPool", lambda: L.ConvBlock(4, activation="leaky_relu", pool_size=0, batch_norm=False), (2, 8, 8, 3)),
    ("ResidualIdentity", lambda: L.ResidualBlock(3), (2, 8, 8, 3)),
    ("ResidualProjection", lambda: L.ResidualBlock(6, strides=2, activation="swish"), (2, 7, 7, 3)),
]


def _randomize_all_weights(layer):
    for v in layer.weights:
        if "variance" in v.path:
            v.assign(RNG.uniform(0.5, 2.0, v.shape).astype("float32"))
        else:
            v.assign(randn(*v.shape))


@pytest.mark.parametrize("name,make,shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_compute_output_shape_matches_call(name, make, shape):
    layer = make()
    y = layer(randn(*shape), training=False)
    assert tuple(layer.compute_output_shape(shape)) == tuple(y.shape)
    batchless = (None,) + shape[1:]
    assert tuple(layer.compute_output_shape(batchless))[1:] == tuple(y.shape)[1:]


@pytest.mark.parametrize("name,make,shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_get_config_round_trip(name, make, shape):
    layer = make()
    x = randn(*shape)
    layer.build(x.shape)
    _randomize_all_weights(layer)
    config = layer.get_config()
    json.dumps(config)  # plain JSON
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x, training=False), layer(x, training=False), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,make,shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_keras_file_round_trip(name, make, shape, tmp_path):
    layer = make()
    inp = keras.Input(shape[1:])
    model = keras.Model(inp, layer(inp))
    _randomize_all_weights(layer)
    x = randn(*shape)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded.layers[-1]) is type(layer)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)


def test_layers_are_registered_under_tfcustom():
    for cls in (L.Dense, L.Softmax, L.BatchNormalization, L.DenseBlock, L.ConvBlock, L.ResidualBlock):
        assert keras.saving.get_registered_name(cls) == f"tfcustom>{cls.__name__}"


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.DenseBlock(4, dropout=1.0),
        lambda: L.DenseBlock(4, dropout=-0.1),
        lambda: L.DenseBlock(0),
        lambda: L.DenseBlock(4, activation="bogus"),
        lambda: L.ConvBlock(0),
        lambda: L.ConvBlock(4, kernel_size=0),
        lambda: L.ConvBlock(4, pool_size=-2),
        lambda: L.ConvBlock(4, dropout=2),
        lambda: L.ResidualBlock(4, strides=0),
        lambda: L.ResidualBlock(4, activation="bogus"),
    ],
)
def test_blocks_reject_bad_arguments(make):
    with pytest.raises(ConfigError):
        make()


def test_conv_blocks_reject_flat_inputs():
    with pytest.raises(ConfigError):
        L.ConvBlock(4)(randn(2, 8))
    with pytest.raises(ConfigError):
        L.ResidualBlock(4)(randn(2, 8))


def test_docstring_examples_run():
    result = doctest.testmod(L)
    assert result.attempted > 0
    assert result.failed == 0
