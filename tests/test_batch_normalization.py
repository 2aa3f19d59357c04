"""tfcustom.layers.BatchNormalization (fused training kernel) against Keras' own layer."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfcustom.layers import BatchNormalization


def _pair(shape, **kwargs):
    ours, theirs = BatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    ours.build(shape)
    theirs.build(shape)
    rng = np.random.default_rng(1)
    theirs.set_weights([rng.normal(1, 0.3, w.shape).astype("float32") if "variance" not in w.path else
                        rng.uniform(0.5, 2, w.shape).astype("float32") for w in theirs.weights])
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def _train_steps(layer, xs):
    outs, grads = [], []
    for x in xs:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.sin(y) * tf.cast(tf.range(y.shape[-1]), y.dtype))
        outs.append(y.numpy())
        grads.append([g.numpy() for g in tape.gradient(loss, [x] + layer.trainable_variables)])
    return outs, grads


@pytest.mark.parametrize("shape,kwargs", [
    ((16, 5, 5, 3), {}),
    ((32, 7), {"momentum": 0.9}),
    ((8, 6, 6, 4), {"center": False, "epsilon": 1e-5}),
    ((8, 6, 6, 4), {"scale": False}),
])
def test_training_matches_keras(shape, kwargs):
    ours, theirs = _pair(shape, **kwargs)
    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.normal(2, 3, shape).astype("float32")) for _ in range(3)]
    (yo, go), (yt, gt) = _train_steps(ours, xs), _train_steps(theirs, xs)
    for a, b in zip(yo, yt):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for a_list, b_list in zip(go, gt):
        for a, b in zip(a_list, b_list):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    # Moving statistics after three steps (Keras' biased batch variance, same momentum).
    for a, b in zip(ours.non_trainable_weights, theirs.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    # Inference uses the moving statistics, as Keras'.
    np.testing.assert_allclose(ours(xs[0], training=False), theirs(xs[0], training=False), rtol=1e-5, atol=1e-5)


def test_batch_variance_is_numpys_biased_variance():
    x = np.random.default_rng(2).normal(0, 2, (10, 3, 3, 2)).astype("float32")
    layer = BatchNormalization(momentum=0.0)
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), x.var(axis=(0, 1, 2)), rtol=1e-5)


def test_uses_the_fused_kernel_only_where_it_applies():
    def op_types(layer, x):
        fn = tf.function(lambda v: layer(v, training=True))
        return {op.type for op in fn.get_concrete_function(x).graph.get_operations()}

    x4 = tf.zeros((4, 3, 3, 2))
    assert "FusedBatchNormV3" in op_types(BatchNormalization(), x4)
    assert "FusedBatchNormV3" not in op_types(BatchNormalization(), tf.zeros((4, 2)))  # measured slower for 2-D
    assert "FusedBatchNormV3" not in op_types(BatchNormalization(fused=False), x4)
    assert "FusedBatchNormV3" not in op_types(BatchNormalization(axis=1), x4)  # channels-first: Keras' code
    assert "FusedBatchNormV3" not in op_types(BatchNormalization(), tf.zeros((4, 3, 2)))  # rank 3


def test_mixed_precision_output_dtype_and_values():
    x = np.random.default_rng(3).normal(size=(8, 4, 4, 3)).astype("float32")
    ours = BatchNormalization(dtype="mixed_bfloat16")
    theirs = keras.layers.BatchNormalization(dtype="mixed_bfloat16")
    yo, yt = ours(x, training=True), theirs(x, training=True)
    assert yo.dtype == yt.dtype == tf.bfloat16
    assert ours.moving_mean.dtype == tf.float32
    np.testing.assert_allclose(tf.cast(yo, tf.float32), tf.cast(yt, tf.float32), atol=0.05)


def test_xla_compiled_training_matches_keras():
    ours, theirs = _pair((8, 4, 4, 3))
    x = tf.constant(np.random.default_rng(4).normal(size=(8, 4, 4, 3)).astype("float32"))
    y = tf.function(lambda v: ours(v, training=True), jit_compile=True)(x)
    np.testing.assert_allclose(y, theirs(x, training=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-6)


def test_checkpoint_interchange_with_keras_layer(tmp_path):
    ours, theirs = _pair((4, 2, 2, 3))
    path = str(tmp_path / "bn.weights.h5")
    model_t = keras.Sequential([keras.Input((2, 2, 3)), theirs])
    model_t.save_weights(path)
    fresh = BatchNormalization()
    model_o = keras.Sequential([keras.Input((2, 2, 3)), fresh])
    model_o.load_weights(path)
    for a, b in zip(fresh.weights, theirs.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_save_load_round_trip(tmp_path):
    layer = BatchNormalization(momentum=0.8, fused=False)
    model = keras.Sequential([keras.Input((3, 3, 2)), layer])
    x = np.random.default_rng(5).normal(size=(4, 3, 3, 2)).astype("float32")
    model(x, training=True)
    path = tmp_path / "bn.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    restored = loaded.layers[-1]
    assert type(restored) is BatchNormalization
    assert restored.get_config()["fused"] is False and restored.momentum == pytest.approx(0.8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
