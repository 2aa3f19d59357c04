"""The Trainer takes what a Keras user brings, with Keras' meaning (issue 11 items 3, 5, 6, 10, 11).

Each test does what such a user did; oracles are keras.Model.fit/evaluate,
NumPy and scikit-learn. Small data, in process.
"""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as skm

import tfcustom
from tfcustom import Trainer
from tfcustom.data import InputPipeline, Split
from tfcustom.errors import ConfigError

K = 3


def _data(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(d, K)), axis=1).astype("int32")
    return x, y


def _model(softmax=False, seed=0, d=6):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((d,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(K, activation="softmax" if softmax else None)])


def _close(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a.get_weights(), b.get_weights()))


# -- item 3: from_logits=False by default; neither mistake trains quietly ------------------------


def test_softmax_model_with_default_losses_trains_like_keras():
    """A model ending in softmax + tfcustom's default loss, or the Keras loss *name*: same weights as
    keras.Model.fit with Keras' default SparseCategoricalCrossentropy (probabilities)."""
    x, y = _data()
    ref = _model(softmax=True)
    ref.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy())
    ref_loss = ref.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0).history["loss"]
    for loss in (tfcustom.losses.SparseCategoricalCrossentropy(), "sparse_categorical_crossentropy"):
        ours = _model(softmax=True)
        trainer = Trainer(ours, loss, keras.optimizers.SGD(0.5), verbose=0)
        hist = trainer.fit(InputPipeline(Split(x, y), 32), epochs=3)
        assert _close(ref, ours) < 1e-5, loss
        np.testing.assert_allclose(hist["loss"], ref_loss, rtol=1e-5)
    assert hist["accuracy"][-1] > 0.6  # above chance (1/3)


@pytest.mark.parametrize("softmax, loss, fix", [
    (False, tfcustom.losses.SparseCategoricalCrossentropy(), r"Pass SparseCategoricalCrossentropy\(from_logits=True\)"),
    (False, "sparse_categorical_crossentropy", r"from_logits=True"),  # Keras' meaning of the name: probabilities
    (True, tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True), r"from_logits=False\) \(Keras' default\)"),
    (True, keras.losses.SparseCategoricalCrossentropy(from_logits=True), r"remove the final softmax"),
])
def test_from_logits_mismatch_is_refused_before_training(softmax, loss, fix):
    x, y = _data(64)
    model = _model(softmax=softmax)
    before = model.get_weights()
    trainer = Trainer(model, loss, "sgd", verbose=0)
    with pytest.raises(ConfigError, match=fix) as info:
        trainer.fit((x, y), epochs=1)
    assert "\n" not in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # nothing trained


# -- item 5: the metric objects passed hold the result ---------------------------------------------


def test_metric_objects_passed_hold_the_results():
    x, y = _data(120)
    acc = keras.metrics.SparseCategoricalAccuracy()
    f1 = tfcustom.metrics.F1Score(average="macro")  # no num_classes: from the model's output

    def mean_true_class_logit(y_true, y_pred):  # a custom metric function, never registered
        return tf.gather(y_pred, tf.cast(tf.reshape(y_true, [-1]), tf.int32), batch_dims=1)

    custom = keras.metrics.MeanMetricWrapper(mean_true_class_logit, name="true_logit")
    model = _model()
    trainer = Trainer(model, tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.Adam(1e-2),
                      metrics=[acc, f1, custom], verbose=0)
    hist = trainer.fit((x[:80], y[:80]), epochs=2, batch_size=16, validation_data=(x[80:], y[80:]))
    # after fit: the last epoch's training values (validation ran on copies)
    assert float(acc.result()) == pytest.approx(hist["sparse_categorical_accuracy"][-1]) and float(acc.result()) > 0
    assert float(f1.result()) == pytest.approx(hist["f1_score"][-1]) and float(custom.result()) == pytest.approx(hist["true_logit"][-1])
    # after evaluate: that evaluation's values, as after keras.Model.evaluate (oracle: NumPy / scikit-learn)
    logs = trainer.evaluate((x[80:], y[80:]))
    logits = model.predict(x[80:], verbose=0)
    pred = logits.argmax(1)
    assert float(acc.result()) == pytest.approx(np.mean(pred == y[80:]), abs=1e-6) == logs["sparse_categorical_accuracy"]
    assert float(f1.result()) == pytest.approx(skm.f1_score(y[80:], pred, average="macro", labels=range(K), zero_division=0), abs=1e-6)
    assert float(custom.result()) == pytest.approx(logits[np.arange(40), y[80:]].mean(), abs=1e-5)
    assert logs["f1_score"] == pytest.approx(hist["val_f1_score"][-1])  # the same model on the same split


def test_metric_that_cannot_be_copied_is_refused_in_one_line():
    class NeedsArgument(keras.metrics.Mean):  # its config lacks the constructor's argument
        def __init__(self, scale):
            super().__init__(name="scaled")
            self.scale = scale

    with pytest.raises(ConfigError, match=r"cannot make an evaluation copy of metric 'scaled'.*get_config\(\)") as info:
        Trainer(_model(), tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True), "sgd", metrics=[NeedsArgument(2.0)])
    assert "\n" not in str(info.value)


# -- item 6: fit(epochs=N) is "up to epoch N", never silently; initial_epoch as in Keras -----------


def test_second_fit_says_nothing_to_do_and_initial_epoch_trains_again(caplog):
    x, y = _data(64)
    model = _model()
    trainer = Trainer(model, tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.SGD(0.1), verbose=0)
    trainer.fit((x, y), epochs=1)
    after_one = model.get_weights()
    with caplog.at_level(logging.INFO, logger="absl"):
        trainer.fit((x, y), epochs=1)
    assert any("already trained 1 epochs; nothing to do" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    assert all(np.array_equal(a, b) for a, b in zip(after_one, model.get_weights()))
    # Keras' habit: each fit(epochs=1) trains one epoch -> initial_epoch=0
    trainer.fit((x, y), epochs=1, initial_epoch=0)
    assert not all(np.array_equal(a, b) for a, b in zip(after_one, model.get_weights()))
    assert len(trainer.history) == 2 and int(trainer.global_step.numpy()) == 2 * 2  # 64 examples / 32 per batch


# -- item 10: names as compile() takes them ---------------------------------------------------------


def test_names_like_compile_loss_function_optimizer_and_metric_names():
    x, y = _data(64)
    ref = _model()
    ref.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ref.fit(x, y, batch_size=64, epochs=2, verbose=0)
    ours = _model()

    def my_loss(y_true, y_pred):  # a plain function, as compile(loss=fn) takes
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)

    trainer = Trainer(ours, my_loss, "sgd", metrics=["f1_score", "precision", "recall", "acc"], verbose=0)
    assert type(trainer.optimizer) is keras.optimizers.SGD and float(trainer.optimizer.learning_rate) == pytest.approx(0.01)
    hist = trainer.fit((x, y), epochs=2, batch_size=64)  # one full batch per epoch: the order does not matter
    assert _close(ref, ours) < 1e-6
    assert {"f1_score", "precision", "recall", "acc"} <= set(hist.records[-1])  # "acc": keyed as written, as compile does
    logs = trainer.evaluate((x, y))
    pred = ours.predict(x, verbose=0).argmax(1)
    assert logs["f1_score"] == pytest.approx(skm.f1_score(y, pred, average="macro", labels=range(K), zero_division=0), abs=1e-6)
    assert logs["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro", labels=range(K), zero_division=0), abs=1e-6)
    trainer = Trainer(_model(), tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True), "sgd", metrics=["f1"], verbose=0)
    assert "f1_score" in trainer.evaluate((x, y))  # "f1" too, reported under the metric's own name


# -- item 11: NumPy arrays with batch_size; unbatched / infinite datasets ----------------------------


def test_fit_numpy_arrays_with_sample_weight_like_keras():
    x, y = _data(64)
    w = np.random.default_rng(1).uniform(0, 2, 64).astype("float32")
    ref, ours = _model(), _model()
    ref.compile(keras.optimizers.SGD(0.2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ref.fit(x, y, sample_weight=w, batch_size=64, epochs=3, verbose=0)
    trainer = Trainer(ours, tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.SGD(0.2), verbose=0)
    trainer.fit((x, y, w), epochs=3, batch_size=64)
    assert _close(ref, ours) < 1e-5
    trainer.fit((x, y), epochs=4)  # batch_size defaults to 32, as in Keras
    assert int(trainer.global_step.numpy()) == 3 + 2
    np.testing.assert_allclose(trainer.predict(x), ours(x).numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match=r"Pass the arrays as one tuple: trainer.fit\(\(x, y\)"):
        trainer.fit(x, y)


def test_unbatched_and_infinite_datasets_say_what_to_do():
    x, y = _data(64)
    trainer = Trainer(_model(), tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True), "sgd", verbose=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ConfigError, match=r"yields single examples, not batches.*dataset.batch\(32\)"):
        trainer.fit(ds, epochs=1)
    with pytest.raises(ConfigError, match=r"infinite.*steps_per_epoch=N"):
        trainer.fit(ds.batch(16).repeat(), epochs=1)
    with pytest.raises(ConfigError, match=r"cannot tell how many batches.*steps_per_epoch=N"):
        trainer.fit(ds.batch(16).filter(lambda a, b: True), epochs=1)
    trainer.fit(ds.batch(16).repeat(), epochs=1, steps_per_epoch=3)
    assert int(trainer.global_step.numpy()) == 3


def test_metrics_without_num_classes_are_checkpointable_or_refused():
    from tfcustom.training.checkpoint import training_checkpoint

    loss = tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainer = Trainer(_model(), loss, "sgd", metrics=["f1", tfcustom.metrics.Precision()])  # Sequential: K outputs known
    assert [m.num_classes for m in trainer.train_metrics] == [K, K]
    assert len(training_checkpoint(trainer).train_metrics) == 2 + 2  # the loss tracker's total and count, two confusion matrices
    model = tfcustom.models.get("logistic_regression", num_classes=K)
    model(np.zeros((1, 6), "float32"))
    trainer = Trainer(model, loss, "sgd", metrics=["f1"])  # subclassed: the outputs are known only from data
    with pytest.raises(ConfigError, match=r"no state yet to checkpoint.*Trainer\(num_classes=\.\.\.\)"):
        training_checkpoint(trainer)
