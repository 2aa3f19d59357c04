"""test_time_flip=True (CNN, ResNet): mean of the softmax of each image and its mirror image, checked with NumPy."""

import numpy as np
import pytest
import keras

from tfcustom import models


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


KWARGS = {"cnn": dict(filters=(4, 8), dense_units=8, dropout=0.0), "resnet": dict(stage_filters=(4, 8))}


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_inference_averages_the_probabilities_of_the_image_and_its_mirror(name):
    x = np.random.default_rng(0).random((5, 12, 12, 1)).astype("float32")
    plain = models.get(name, 4, **KWARGS[name])
    plain(x)
    flip = models.get(name, 4, test_time_flip=True, **KWARGS[name])
    flip(x)
    flip.set_weights(plain.get_weights())
    expected = 0.5 * (_softmax(plain.predict(x, verbose=0)) + _softmax(plain.predict(x[:, :, ::-1], verbose=0)))
    np.testing.assert_allclose(_softmax(flip.predict(x, verbose=0)), expected, rtol=1e-5, atol=1e-6)
    # A left-right symmetric prediction: the flipped batch gives the same output.
    np.testing.assert_allclose(flip.predict(x[:, :, ::-1], verbose=0), flip.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    # Training calls are the plain model's.
    np.testing.assert_allclose(flip(x, training=True), plain(x, training=True), rtol=1e-5, atol=1e-5)


def test_no_probability_underflows_to_log_zero():
    model = models.get("cnn", 3, filters=(2,), dense_units=0, dropout=0.0, batch_norm=False, test_time_flip=True)
    x = np.random.default_rng(1).random((2, 6, 6, 1)).astype("float32") * 1e4  # huge logits
    model(x)
    model.logits.kernel.assign(model.logits.kernel * 1e3)
    out = model.predict(x, verbose=0)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_save_load_round_trip(name, tmp_path):
    model = models.get(name, 4, test_time_flip=True, **KWARGS[name])
    x = np.random.default_rng(2).random((3, 12, 12, 1)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.test_time_flip is True
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)


def test_config_refuses_test_time_flip_without_flip_augmentation():
    from tfcustom import TrainConfig
    from tfcustom.errors import ConfigError

    with pytest.raises(ConfigError, match="test_time_flip needs a model trained on mirrored images.*--augment=flip"):
        TrainConfig(model_kwargs={"test_time_flip": True}).validate()
    TrainConfig(model_kwargs={"test_time_flip": True}, augment=("crop", "flip")).validate()
