"""tfcustom.layers.dropout.Dropout: mask statistics against the binomial law (NumPy),
new masks every step, identity at inference, the same under XLA, the counter
in the checkpoint (a restored layer draws the same next mask), save/load.
Independence across replicas: tests/test_packed_all_reduce.py (2 logical CPUs)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom.layers.dropout import Dropout
from tfcustom.errors import ConfigError

RATE = 0.3
SHAPE = (200, 500)  # 100k units


def _check_statistics(y, rate):
    y = np.asarray(y, np.float64)
    kept = y != 0
    n, p = y.size, 1 - rate
    # Keep fraction: binomial(n, p), within 5 standard deviations.
    assert abs(kept.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[kept], 1 / p, rtol=1e-6)  # inverted dropout scaling
    # Output of ones: mean 1, variance rate / (1 - rate).
    assert abs(y.mean() - 1.0) < 5 * np.sqrt(rate / p / n)
    np.testing.assert_allclose(y.var(), rate / p, rtol=0.05)
    return kept


def test_mask_statistics_and_new_masks_every_step():
    layer = Dropout(RATE, seed=3)
    x = tf.ones(SHAPE)
    first = _check_statistics(layer(x, training=True), RATE)
    second = _check_statistics(layer(x, training=True), RATE)
    # Independent masks: P(both kept) = p^2, within 5 standard deviations.
    p, n = 1 - RATE, first.size
    both = (first & second).mean()
    assert abs(both - p * p) < 5 * np.sqrt(p * p * (1 - p * p) / n)
    assert int(layer.counter.numpy()) == 2
    np.testing.assert_array_equal(layer(x, training=False), x)  # inference: identity, counter unchanged
    assert int(layer.counter.numpy()) == 2


def test_seeds_give_different_masks_and_the_same_seed_the_same_mask():
    x = tf.ones(SHAPE)
    a, b, c = (np.asarray(Dropout(RATE, seed=s)(x, training=True)) for s in (1, 2, 1))
    np.testing.assert_array_equal(a, c)
    assert (a != b).mean() > 0.3


def test_statistics_hold_under_xla():
    layer = Dropout(RATE, seed=5)
    step = tf.function(lambda x: layer(x, training=True), jit_compile=True)
    x = tf.ones(SHAPE)
    first, second = _check_statistics(step(x), RATE), _check_statistics(step(x), RATE)
    assert (first != second).mean() > 0.3 and int(layer.counter.numpy()) == 2


def test_checkpoint_restores_the_mask_sequence(tmp_path):
    layer = Dropout(RATE, seed=7)
    x = tf.ones((8, 64))
    layer(x, training=True)
    path = tf.train.Checkpoint(layer=layer).save(str(tmp_path / "ckpt"))
    expected = np.asarray(layer(x, training=True))
    again = Dropout(RATE, seed=7)
    tf.train.Checkpoint(layer=again).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(again(x, training=True), expected)


def test_save_load_round_trip(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), Dropout(0.25, seed=11, name="drop")])
    model(tf.ones((2, 6)), training=True)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("drop")
    assert isinstance(layer, Dropout) and layer.get_config() == model.get_layer("drop").get_config()
    assert (layer.rate, layer.seed) == (0.25, 11) and int(layer.counter.numpy()) == 1
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    np.testing.assert_array_equal(loaded(x), model(x))
    np.testing.assert_array_equal(loaded(x, training=True), model(x, training=True))  # same seed and counter


def test_noise_shape_shares_the_mask_along_an_axis():
    y = np.asarray(Dropout(0.5, seed=1, noise_shape=(None, 1))(tf.ones((64, 10)), training=True))
    assert np.all((y == 0).all(axis=1) | (y == 2).all(axis=1))


@pytest.mark.parametrize("rate", [-0.1, 1.0, "0.2"])
def test_rejects_bad_rates(rate):
    with pytest.raises(ConfigError, match="dropout rate"):
        Dropout(rate)
