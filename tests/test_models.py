"""Tests for tfcustom.models: shapes, NumPy / Keras-built-in oracles for the
forward pass, training flag, configs, .keras round trips and the registry."""

import doctest
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom import layers as L
from tfcustom import models as M
from tfcustom.errors import ConfigError

RNG = np.random.default_rng(1)


def images(n, shape):
    return RNG.uniform(0, 1, (n,) + shape).astype("float32")


def randomize(model):
    """Random weights everywhere (BN variances kept positive)."""
    for v in model.weights:
        if "variance" in v.path:
            v.assign(RNG.uniform(0.5, 2.0, v.shape).astype("float32"))
        else:
            v.assign(0.1 * RNG.standard_normal(v.shape).astype("float32"))


# Small variants keep the tests fast; defaults are covered by the shape test.
SMALL = {
    "mlp": dict(hidden_units=(16, 8), dropout=0.2, batch_norm=True),
    "cnn": dict(filters=(4, 8), dense_units=16, convs_per_stage=2, conv_dropout=0.1),
    "resnet": dict(stage_filters=(4, 8), blocks_per_stage=2),
    "logistic_regression": {},
}

SHAPES = {
    "mlp": [(28, 28, 1), (32, 32, 3), (784,)],
    "cnn": [(28, 28, 1), (32, 32, 3)],
    "resnet": [(28, 28, 1), (32, 32, 3)],
    "logistic_regression": [(28, 28, 1), (32, 32, 3), (784,)],
}
SHAPE_CASES = [(name, shape) for name in sorted(SHAPES) for shape in SHAPES[name]]


def test_names_is_sorted_registry():
    assert M.names() == ["cnn", "logistic_regression", "mlp", "resnet"]


@pytest.mark.parametrize("name,shape", SHAPE_CASES, ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in SHAPE_CASES])
def test_default_models_build_and_output_logits_shape(name, shape):
    model = M.get(name, num_classes=10)
    y = model(images(3, shape), training=False)
    assert tuple(y.shape) == (3, 10)
    assert y.dtype == tf.float32
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("name", M.names())
def test_every_trainable_variable_gets_a_gradient(name):
    model = M.get(name, num_classes=5, **SMALL[name])
    x = images(4, (28, 28, 1))
    y = np.array([0, 1, 2, 3])
    model(x)
    randomize(model)  # the logistic regression starts at zero
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(grads) > 0
    for v, g in zip(model.trainable_variables, grads):
        assert g is not None, v.path
        assert np.all(np.isfinite(g)), v.path


# --------------------------------------------------------------------------
# Forward pass vs. independent oracles


def test_logistic_regression_matches_numpy_and_binary_single_logit():
    x = images(5, (4, 4, 1))
    for k in (1, 3):
        model = M.LogisticRegression(num_classes=k)
        model(x)
        np.testing.assert_array_equal(model(x), np.zeros((5, k)))  # zero init
        randomize(model)
        W, b = model.logits.kernel.numpy(), model.logits.bias.numpy()
        np.testing.assert_allclose(model(x), x.reshape(5, -1) @ W + b, rtol=1e-5, atol=1e-6)


def test_mlp_matches_numpy_forward():
    model = M.MLP(4, hidden_units=(7, 5), activation="tanh")
    x = images(3, (6, 6, 1))
    model(x)
    randomize(model)
    h = x.reshape(3, -1).astype("float64")
    for block in model.hidden:
        h = np.tanh(h @ block.dense.kernel.numpy() + block.dense.bias.numpy())
    expected = h @ model.logits.kernel.numpy() + model.logits.bias.numpy()
    np.testing.assert_allclose(model(x, training=False), expected, rtol=1e-5, atol=1e-5)
    # Logits, not probabilities.
    assert not np.allclose(np.sum(model(x), axis=-1), 1.0)


def test_mlp_with_batch_norm_matches_keras_sequential():
    model = M.MLP(3, hidden_units=(6,), dropout=0.3, batch_norm=True)
    x = images(4, (5,))
    model(x)
    randomize(model)
    ref = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Flatten(),
            keras.layers.Dense(6, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3),
        ]
    )
    block = model.hidden[0]
    ref.layers[1].set_weights(block.dense.get_weights())
    ref.layers[2].set_weights(block.bn.get_weights())
    ref.layers[5].set_weights(model.logits.get_weights())
    np.testing.assert_allclose(model(x, training=False), ref(x, training=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("global_pool", [False, True])
def test_cnn_matches_keras_sequential(global_pool):
    model = M.CNN(5, filters=(4, 6), dense_units=8, dropout=0.3, batch_norm=True, global_pool=global_pool)
    x = images(2, (12, 12, 2))
    model(x)
    randomize(model)
    ref_layers = [keras.Input((12, 12, 2))]
    for f in (4, 6):
        ref_layers += [
            keras.layers.Conv2D(f, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
        ]
    ref_layers += [
        keras.layers.GlobalAveragePooling2D() if global_pool else keras.layers.Flatten(),
        keras.layers.Dense(8, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(5),
    ]
    ref = keras.Sequential(ref_layers)
    ours = []
    for block in model.conv_blocks:
        ours += [block.conv, block.bn]
    ours += [model.hidden.dense, model.hidden.bn, model.logits]
    weighted = [layer for layer in ref.layers if layer.weights]
    assert len(weighted) == len(ours)
    for r, o in zip(weighted, ours):
        r.set_weights(o.get_weights())
    np.testing.assert_allclose(model(x, training=False), ref(x, training=False), rtol=1e-5, atol=1e-5)


def test_cnn_architecture_follows_constructor_args():
    model = M.CNN(10, filters=(8, 16, 32), convs_per_stage=2, dense_units=0, dropout=0.0, batch_norm=False)
    model(images(1, (32, 32, 3)))
    assert [b.filters for b in model.conv_blocks] == [8, 8, 16, 16, 32, 32]
    assert [b.pool_size for b in model.conv_blocks] == [None, 2, None, 2, None, 2]
    assert all(b.bn is None for b in model.conv_blocks)
    assert model.hidden is None and model.head_dropout is None
    assert model.logits.kernel.shape == (4 * 4 * 32, 10)


def test_resnet_stages_downsample_and_project():
    model = M.ResNet(10, stage_filters=(4, 8, 16), blocks_per_stage=2)
    y = model(images(2, (32, 32, 3)))
    assert tuple(y.shape) == (2, 10)
    blocks = model.res_blocks
    assert [b.filters for b in blocks] == [4, 4, 8, 8, 16, 16]
    assert [b.strides for b in blocks] == [1, 1, 2, 1, 2, 1]
    # Stem already outputs stage_filters[0] channels, so only the stage
    # transitions need a projection shortcut.
    assert [b.projection for b in blocks] == [False, False, True, False, True, False]


# --------------------------------------------------------------------------
# training flag


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_training_flag_changes_behaviour(name):
    kwargs = dict(SMALL[name])
    model = M.get(name, num_classes=4, **kwargs)
    x = images(8, (12, 12, 1))
    e1 = model(x, training=False)
    e2 = model(x, training=False)
    np.testing.assert_array_equal(e1, e2)  # eval is deterministic
    bn_vars = [v for v in model.non_trainable_variables if "moving_mean" in v.path]
    assert bn_vars
    before = [v.numpy().copy() for v in bn_vars]
    t = model(x, training=True)
    assert not np.allclose(t, e1)
    after = [v.numpy() for v in bn_vars]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # BN updated


# --------------------------------------------------------------------------
# configs and saving


@pytest.mark.parametrize("name", M.names())
def test_get_config_round_trip(name):
    model = M.get(name, num_classes=7, **SMALL[name])
    config = model.get_config()
    json.dumps(config)
    clone = type(model).from_config(config)
    assert clone.get_config() == config


@pytest.mark.parametrize("name", M.names())
def test_keras_file_round_trip_same_predictions(name, tmp_path):
    model = M.get(name, num_classes=3, **SMALL[name])
    x = images(4, (28, 28, 1))
    model(x)
    randomize(model)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    assert loaded.get_config()["num_classes"] == 3
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    assert len(loaded.weights) == len(model.weights)


def test_compiled_model_trains_and_reloads(tmp_path):
    """A model with custom layers survives compile/fit/save/load (a few steps only)."""
    model = M.CNN(3, filters=(4,), dense_units=8)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = images(16, (8, 8, 1))
    y = RNG.integers(0, 3, 16)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)


def test_models_are_registered_under_tfcustom():
    for cls in (M.MLP, M.CNN, M.ResNet, M.LogisticRegression):
        assert keras.saving.get_registered_name(cls) == f"tfcustom>{cls.__name__}"


# --------------------------------------------------------------------------
# registry errors and validation


def test_get_unknown_name_lists_known_names():
    with pytest.raises(ConfigError) as e:
        M.get("vgg16", num_classes=10)
    msg = str(e.value)
    assert "'vgg16'" in msg
    for name in M.names():
        assert name in msg


def test_get_unknown_kwarg_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        M.get("cnn", num_classes=10, filtres=(8,))
    assert "filtres" in str(e.value) and "filters" in str(e.value)
    with pytest.raises(ConfigError):
        M.get("logistic_regression", num_classes=2, hidden_units=(8,))


def test_get_forwards_kwargs_and_is_case_insensitive():
    model = M.get("CNN", num_classes=4, filters=[8, 16], name="my_cnn")
    assert isinstance(model, M.CNN)
    assert model.filters == (8, 16) and model.name == "my_cnn"
    assert isinstance(model.conv_blocks[0], L.ConvBlock)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("mlp", {"num_classes": 0}),
        ("mlp", {"num_classes": 10, "hidden_units": (8, -1)}),
        ("mlp", {"num_classes": 10, "dropout": 1.0}),
        ("mlp", {"num_classes": 10, "activation": "bogus"}),
        ("cnn", {"num_classes": 10, "filters": ()}),
        ("cnn", {"num_classes": 10, "dense_units": -5}),
        ("cnn", {"num_classes": 10, "pool_size": 1}),
        ("cnn", {"num_classes": 10, "conv_dropout": 1.5}),
        ("resnet", {"num_classes": 10, "blocks_per_stage": 0}),
        ("resnet", {"num_classes": 10, "stage_filters": "16,32"}),
        ("logistic_regression", {"num_classes": 2.0}),
    ],
)
def test_models_reject_bad_arguments(name, kwargs):
    with pytest.raises(ConfigError):
        M.get(name, **kwargs)


def test_docstring_examples_run():
    result = doctest.testmod(M)
    assert result.attempted > 0
    assert result.failed == 0
