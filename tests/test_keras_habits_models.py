"""What a Keras user does with tfcustom's layers and models (issue 11 items 1, 2,
7, 8, 9; issue 12 item 12), checked against Keras itself: Keras' own layer-test
harness, ``model.build`` + ``summary``/``load_weights``, the TF tutorial's
``tf.train.Checkpoint(model=, optimizer=)``, ``clone_model``, ``to_json``, a
``.keras`` reload in a fresh process, mixed precision per layer, masking and
activations given as Keras would take them."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom.layers.dropout import Dropout
from keras.src.testing import TestCase

from tfcustom import layers as L
from tfcustom import models as M
from tfcustom.errors import ConfigError
from tfcustom.experiment.transfer import restore_backbone

RNG = np.random.default_rng(11)
SHAPE = (8, 8, 1)  # tiny images keep every model test fast
SMALL = {
    "mlp": dict(hidden_units=(16, 8), dropout=0.2, batch_norm=True),
    "cnn": dict(filters=(4, 8), dense_units=16, convs_per_stage=2, conv_dropout=0.1),
    "resnet": dict(stage_filters=(4, 8), blocks_per_stage=2),
    "logistic_regression": {},
}


def make(name, **kwargs):
    return M.get(name, num_classes=3, **{**SMALL[name], **kwargs})


def batch(n=4):
    return RNG.uniform(0, 1, (n,) + SHAPE).astype("float32"), np.arange(n) % 3


def rel_paths(model):
    """Variable paths without the model's own (process-dependent) name."""
    return [(v.path.split("/", 1)[1], tuple(v.shape)) for v in model.variables]


def train_step(model, optimizer, x, y):
    """The tutorial's custom loop step (also moves BatchNorm statistics)."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)


# --------------------------------------------------------------------------
# Keras' own layer-test harness on every public layer


class _KerasHarness(TestCase):
    def runTest(self):  # unittest needs one to instantiate the case
        pass


LAYER_TESTS = [
    ("Dense", L.Dense, dict(units=3, activation="relu"), (2, 5), True),
    ("DenseCallable", L.Dense, dict(units=3, activation=keras.activations.elu, use_bias=False), (2, 3, 5), True),
    ("Softmax", L.Softmax, dict(axis=-1), (2, 4), True),
    ("DenseBlock", L.DenseBlock, dict(units=3, dropout=0.2, activation="gelu"), (2, 5), None),
    ("BatchNormalization", L.BatchNormalization, dict(momentum=0.9), (3, 4, 4, 2), True),
    ("BatchNormalization2D", L.BatchNormalization, dict(center=False), (3, 5), True),
    ("ConvBlock", L.ConvBlock, dict(filters=3, pool_size=2, dropout=0.1), (2, 4, 4, 2), None),
    ("ResidualIdentity", L.ResidualBlock, dict(filters=2), (2, 4, 4, 2), None),
    ("ResidualProjection", L.ResidualBlock, dict(filters=3, strides=2), (2, 4, 4, 2), None),
]


def test_layer_tests_cover_every_public_layer():
    public = {n for n in L.__all__ if isinstance(getattr(L, n), type) and issubclass(getattr(L, n), keras.layers.Layer)}
    assert public == {case[1].__name__ for case in LAYER_TESTS}


@pytest.mark.parametrize("name,cls,kwargs,shape,masking", LAYER_TESTS, ids=[c[0] for c in LAYER_TESTS])
def test_keras_run_layer_test(name, cls, kwargs, shape, masking):
    _KerasHarness().run_layer_test(
        cls,
        kwargs,
        input_shape=shape,
        supports_masking=masking,
        run_training_check=True,
        run_mixed_precision_check=True,
    )


# --------------------------------------------------------------------------
# model.build(shape) == calling on a batch


def _keras_equivalent(name):
    """The same architecture from Keras built-ins (parameter-count oracle)."""
    K = keras.layers
    inp = keras.Input(SHAPE)
    if name == "logistic_regression":
        out = K.Dense(3)(K.Flatten()(inp))
    elif name == "mlp":
        x = K.Flatten()(inp)
        for units in (16, 8):
            x = K.Dropout(0.2)(K.ReLU()(K.BatchNormalization()(K.Dense(units, use_bias=False)(x))))
        out = K.Dense(3)(x)
    elif name == "cnn":
        x = inp
        for f in (4, 8):
            x = K.BatchNormalization()(K.Conv2D(f, 3, padding="same", use_bias=False)(x))
            x = K.BatchNormalization()(K.Conv2D(f, 3, padding="same", use_bias=False)(x))
            x = K.Dropout(0.1)(K.MaxPooling2D(2)(x))
        x = K.BatchNormalization()(K.Dense(16, use_bias=False)(K.Flatten()(x)))
        out = K.Dense(3)(x)
    else:  # resnet: stem, then 2 stages of 2 basic blocks
        def conv_bn(x, f, k, s):
            return K.BatchNormalization()(K.Conv2D(f, k, strides=s, padding="same", use_bias=False)(x))

        x = conv_bn(inp, 4, 3, 1)
        for stage, f in enumerate((4, 8)):
            for j in range(2):
                s = 2 if stage > 0 and j == 0 else 1
                y = conv_bn(K.ReLU()(conv_bn(x, f, 3, s)), f, 3, 1)
                x = K.ReLU()(y + (conv_bn(x, f, 1, s) if x.shape[-1] != f or s != 1 else x))
        out = K.Dense(3)(K.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out)


def _summary_total(model):
    lines = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line))
    match = re.search(r"Total params: ([\d,]+)", "\n".join(lines))
    return int(match.group(1).replace(",", ""))


@pytest.mark.parametrize("name", M.names())
def test_build_creates_the_variables_of_a_call(name):
    built = make(name)
    built.build((None,) + SHAPE)
    called = make(name)
    called(batch()[0])
    assert built.weights, "build() created no variables"
    assert rel_paths(built) == rel_paths(called)
    # Each tfcustom Dropout also holds one int64 step counter (its checkpointed RNG position), which
    # summary() counts as a non-trainable parameter where Keras' Dropout keeps its seed outside weights.
    counters = sum(isinstance(layer, Dropout) for layer in called._flatten_layers())
    assert _summary_total(built) == called.count_params() == _keras_equivalent(name).count_params() + counters
    # The tutorial's loop: an optimizer built from the built model's variables trains it.
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(built.trainable_variables)
    before = [v.numpy() for v in built.trainable_variables]
    train_step(built, optimizer, *batch())
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, built.trainable_variables))


@pytest.mark.parametrize("name", M.names())
def test_build_then_load_weights_restores_the_saved_model(name, tmp_path):
    saved = make(name)
    x, y = batch()
    saved(x)
    train_step(saved, keras.optimizers.SGD(0.5), x, y)  # move weights and BN statistics away from the init
    path = str(tmp_path / "m.weights.h5")
    saved.save_weights(path)
    fresh = make(name)
    fresh.build((None,) + SHAPE)
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh(x, training=False), saved(x, training=False))


# --------------------------------------------------------------------------
# the TF tutorial's checkpoint: tf.train.Checkpoint(model=, optimizer=)


@pytest.mark.parametrize("name", M.names())
def test_tf_train_checkpoint_restores_into_a_fresh_model(name, tmp_path):
    x, y = batch(8)
    model = make(name)
    model(x)
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    for _ in range(2):
        train_step(model, optimizer, x, y)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))

    # The model alone checkpoints every weight (not only those of attribute layers).
    model_only = tf.train.Checkpoint(model=model).write(str(tmp_path / "model_only"))
    keys = [k for k, _ in tf.train.list_variables(model_only) if k.startswith("model/")]
    assert len(keys) == len(model.weights)

    fresh = make(name)
    fresh(x)
    fresh_opt = keras.optimizers.Adam(1e-2)
    fresh_opt.build(fresh.trainable_variables)
    status = tf.train.Checkpoint(model=fresh, optimizer=fresh_opt).restore(path)
    status.assert_existing_objects_matched()
    np.testing.assert_array_equal(fresh(x, training=False), model(x, training=False))
    for a, b in zip(fresh.weights, model.weights):  # BatchNorm moving statistics included
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.path)
    for a, b in zip(fresh_opt.variables, optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.path)


# --------------------------------------------------------------------------
# clone_model, to_json, .keras in a fresh process


@pytest.mark.parametrize("name", M.names())
def test_clone_model_and_model_from_json(name):
    model = make(name)
    x, y = batch()
    model(x)
    train_step(model, keras.optimizers.SGD(0.5), x, y)
    expected = model(x, training=False)
    for copy in (keras.models.clone_model(model), keras.models.model_from_json(model.to_json())):
        assert type(copy) is type(model)
        assert rel_paths(copy) == rel_paths(model)  # built from the config, before any call
        copy.set_weights(model.get_weights())
        np.testing.assert_array_equal(copy(x, training=False), expected)


def test_keras_files_reload_in_safe_mode_in_a_fresh_process(tmp_path):
    x, y = batch()
    np.save(tmp_path / "x.npy", x)
    for name in M.names():
        model = make(name, activation="elu") if name != "logistic_regression" else make(name)
        model(x)
        train_step(model, keras.optimizers.SGD(0.5), x, y)
        np.save(tmp_path / f"{name}.npy", model(x, training=False).numpy())
        model.save(tmp_path / f"{name}.keras")
    code = f"""
import json, numpy as np, keras, tfcustom
d = {str(tmp_path)!r}
x = np.load(d + "/x.npy")
out = {{}}
for name in {M.names()!r}:
    m = keras.models.load_model(f"{{d}}/{{name}}.keras", safe_mode=True)
    out[name] = [type(m).__name__, float(np.abs(m(x, training=False).numpy() - np.load(f"{{d}}/{{name}}.npy")).max())]
print(json.dumps(out))
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {name: [type(make(name)).__name__, 0.0] for name in M.names()}


# --------------------------------------------------------------------------
# mixed precision per layer


@pytest.mark.parametrize("name", M.names())
def test_model_dtype_policy_reaches_every_hidden_layer(name):
    model = make(name, dtype="mixed_float16")
    model.build((None,) + SHAPE)
    y = model(batch()[0], training=False)
    assert y.dtype == tf.float32 and model.logits.compute_dtype == "float32"  # float32 logits
    sublayers = [l for l in model._flatten_layers(include_self=False) if l is not model.logits]
    assert sublayers
    for layer in sublayers:
        assert layer.compute_dtype == "float16", layer.name
    for v in model.weights:
        assert v.dtype == "float32" or (v.dtype == "int64" and v.path.endswith("counter")), v.path  # Dropout's step counter


def test_residual_block_computes_in_float16():
    block = L.ResidualBlock(4, dtype="mixed_float16")
    x = RNG.standard_normal((2, 4, 4, 4)).astype("float32")
    y = block(x, training=True)
    assert y.dtype == tf.float16
    reference = L.ResidualBlock(4)
    reference(x)
    reference.set_weights(block.get_weights())
    np.testing.assert_allclose(y.numpy().astype("float32"), reference(x, training=True), atol=2e-2, rtol=2e-2)


# --------------------------------------------------------------------------
# masking


def test_dense_passes_the_embedding_mask_like_keras_dense():
    tokens = np.array([[3, 5, 0, 0], [7, 1, 2, 0]])

    def stack(dense):
        inp = keras.Input((4,), dtype="int32")
        x = keras.layers.Embedding(10, 6, mask_zero=True, name="emb")(inp)
        x = dense(x)
        return keras.Model(inp, keras.layers.GlobalAveragePooling1D()(x))

    ours = stack(L.Dense(5, activation="tanh", name="d"))
    theirs = stack(keras.layers.Dense(5, activation="tanh", name="d"))
    theirs.set_weights(ours.get_weights())
    expected = theirs(tokens)
    np.testing.assert_allclose(ours(tokens), expected, rtol=1e-6, atol=1e-6)
    # the oracle really masks: the unmasked mean differs
    unmasked = ours.get_layer("d")(ours.get_layer("emb").embeddings.numpy()[tokens]).numpy().mean(axis=1)
    assert not np.allclose(unmasked, expected, atol=1e-3)


@pytest.mark.parametrize(
    "x_shape,mask_shape,axis",
    [((3, 5), (3, 5), -1), ((2, 3, 4), (2, 1, 4), -1), ((2, 3, 4), (2, 3, 1), 1), ((2, 4), (4,), -1)],
)
def test_softmax_honours_a_mask_like_keras_softmax(x_shape, mask_shape, axis):
    x = RNG.standard_normal(x_shape).astype("float32")
    mask = RNG.uniform(size=mask_shape) > 0.4
    for m in (mask, mask.astype("float32")):
        np.testing.assert_allclose(
            L.Softmax(axis=axis)(x, mask=m), keras.layers.Softmax(axis=axis)(x, mask=m), rtol=1e-6, atol=1e-7
        )


def test_softmax_mask_not_broadcastable_is_one_clear_error():
    with pytest.raises(ConfigError, match="mask must be broadcastable"):
        L.Softmax()(np.zeros((2, 4), "float32"), mask=np.ones((2, 3), bool))


# --------------------------------------------------------------------------
# activations as Keras takes them


@keras.saving.register_keras_serializable(package="test_keras_habits")
def scaled_tanh(x):
    return 2.0 * keras.ops.tanh(x)


@pytest.mark.parametrize(
    "activation",
    [keras.activations.relu, "elu", "softmax", None, "Hard_Silu", scaled_tanh],
    ids=["keras.activations.relu", "elu", "softmax", "None", "Hard_Silu", "registered_function"],
)
def test_dense_activation_is_whatever_keras_accepts(activation):
    x = RNG.standard_normal((4, 5)).astype("float32")
    ours = L.Dense(3, activation=activation)
    theirs = keras.layers.Dense(3, activation=activation.lower() if isinstance(activation, str) else activation)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    config = ours.get_config()
    assert config["activation"] == theirs.get_config()["activation"]
    clone = L.Dense.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config


def test_block_and_model_activations_round_trip_through_keras_files(tmp_path):
    block = L.DenseBlock(4, activation=scaled_tanh)
    assert L.DenseBlock.from_config(block.get_config()).activation is scaled_tanh
    model = M.MLP(3, hidden_units=(5,), activation=keras.activations.elu)
    x = batch()[0]
    expected = model(x, training=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert loaded.activation is keras.activations.elu and loaded.hidden[0].activation is keras.activations.elu
    np.testing.assert_array_equal(loaded(x, training=False), expected)


def test_unknown_activation_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown activation"):
        L.Dense(3, activation="bogus")
    with pytest.raises(ConfigError, match="unknown activation"):
        M.get("mlp", num_classes=3, activation=42)


# --------------------------------------------------------------------------
# transfer learning into a model that has no weights


def test_restore_backbone_into_a_model_without_weights_says_build_it():
    source = make("cnn")
    source(batch()[0])

    class ListModel(keras.Model):  # a user's model without build(): Keras' build() creates nothing
        def __init__(self):
            super().__init__()
            self.blocks = [keras.layers.Dense(4), keras.layers.Dense(3)]

        def call(self, x):
            for b in self.blocks:
                x = b(x)
            return x

    for target in (make("cnn"), ListModel()):
        if isinstance(target, ListModel):
            with pytest.warns(UserWarning, match="does not have a `build\(\)` method"):
                target.build((None, 5))  # "built", with no weights
        with pytest.raises(ConfigError) as e:
            restore_backbone(target, source)
        msg = str(e.value)
        assert "not built" in msg and "model.build(" in msg and "exclude" not in msg.lower()

    built = make("cnn")
    built.build((None,) + SHAPE)  # build() alone is enough now
    assert restore_backbone(built, source) == [l.name for l in source.layers if l.weights]
    x = batch()[0]
    np.testing.assert_array_equal(built(x, training=False), source(x, training=False))
