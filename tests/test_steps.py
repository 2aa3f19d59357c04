"""The custom step against Keras' own fit: same weights after N steps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom.training import steps
from tfcustom.data import InputPipeline, Split
from tfcustom.errors import ConfigError
from tfcustom.training.trainer import Trainer

L = keras.layers


def _data(n=300, d=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = rng.integers(0, k, n).astype("int32")
    return x, y


def _model(d=12, k=4, seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((d,)),
        L.Dense(32, kernel_regularizer=keras.regularizers.L2(1e-3)),
        L.BatchNormalization(),
        L.ReLU(),
        L.Dense(k),
    ])


def _max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a.get_weights(), b.get_weights()))


@pytest.mark.parametrize("make_opt", [
    lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    lambda: keras.optimizers.Adam(1e-2),
    lambda: keras.optimizers.AdamW(1e-2, weight_decay=1e-2),
])
def test_trainer_fit_equals_keras_fit(make_opt):
    """Peer check: N steps of Trainer.fit == N steps of keras.Model.fit (BN, L2, partial last batch)."""
    x, y = _data(300)
    ref = _model()
    ours = _model()
    ours.set_weights(ref.get_weights())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ref.compile(make_opt(), loss, metrics=["accuracy"])
    ref_hist = ref.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)

    trainer = Trainer(ours, loss, make_opt(), ["accuracy"], verbose=0)
    hist = trainer.fit(InputPipeline(Split(x, y), 32, shuffle=False), epochs=2)
    assert _max_diff(ref, ours) < 1e-5
    np.testing.assert_allclose(hist["loss"], ref_hist.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(hist["accuracy"], ref_hist.history["accuracy"], rtol=1e-6)
    assert int(trainer.optimizer.iterations.numpy()) == int(ref.optimizer.iterations.numpy()) == 20


def test_sample_weights_match_keras():
    x, y = _data(96)
    w = np.random.default_rng(3).random(96).astype("float32")
    ref, ours = _model(), _model()
    ours.set_weights(ref.get_weights())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ref.compile(keras.optimizers.SGD(0.1), loss)
    ref.fit(x, y, sample_weight=w, batch_size=32, epochs=1, shuffle=False, verbose=0)
    opt = keras.optimizers.SGD(0.1)
    opt.build(ours.trainable_variables)
    step = steps.make_train_step(ours, loss, opt)
    out = step(iter(tf.data.Dataset.from_tensor_slices((x, y, w)).batch(32)), tf.constant(3))
    assert int(out["steps_run"]) == 3
    assert _max_diff(ref, ours) < 1e-5


def test_no_retracing_across_epochs_partial_batches_and_step_counts():
    x, y = _data(250)
    model = _model()
    trainer = Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      keras.optimizers.Adam(1e-3), ["accuracy"], steps_per_execution=3, verbose=0)
    val = InputPipeline(Split(x[:70], y[:70]), 32)  # 32 + 32 + 6
    trainer.fit(InputPipeline(Split(x, y), 32, shuffle=True), epochs=3, validation_data=val)  # 7 full + 1 partial; 3,3,2 steps per call
    trainer.evaluate(val)
    trainer.predict(val)
    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert trainer.test_step.experimental_get_tracing_count() == 1
    assert trainer.predict_step.experimental_get_tracing_count() == 1


def test_steps_per_execution_gives_identical_weights():
    x, y = _data(200)
    results = []
    for k in (1, 4):
        model = _model()
        trainer = Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          keras.optimizers.SGD(0.1, momentum=0.9), ["accuracy"], steps_per_execution=k, verbose=0)
        h = trainer.fit(InputPipeline(Split(x, y), 32, shuffle=True, seed=2), epochs=2)
        results.append((model.get_weights(), h["loss"]))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)
    assert results[0][1] == results[1][1]


def test_clip_global_norm_matches_manual_clipping():
    x, y = _data(64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ref, ours = _model(), _model()
    ours.set_weights(ref.get_weights())
    # Oracle: gradients by hand, clipped with NumPy, applied by plain SGD (lr=1).
    with tf.GradientTape() as tape:
        l = loss(y, ref(x, training=True)) + tf.add_n(ref.losses)
    grads = tape.gradient(l, ref.trainable_variables)
    norm = np.sqrt(sum(float(np.sum(g.numpy() ** 2)) for g in grads))
    assert norm > 0.1
    for v, g in zip(ref.trainable_variables, grads):
        v.assign(v - g.numpy() * (0.1 / norm))
    opt = keras.optimizers.SGD(1.0)
    opt.build(ours.trainable_variables)
    step = steps.make_train_step(ours, loss, opt, clip_global_norm=0.1)
    step(iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(64)), tf.constant(1))
    assert _max_diff(ref, ours) < 1e-6


def test_nonfinite_stop_leaves_variables_untouched_and_skip_counts():
    x, y = _data(64)
    x[40] = np.inf  # in the second batch of 32
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for policy in ("stop", "skip"):
        model = _model()
        opt = keras.optimizers.SGD(0.1)
        opt.build(model.trainable_variables)
        step = steps.make_train_step(model, loss, opt, on_nonfinite=policy)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
        before = None
        it = iter(ds)
        out = step(it, tf.constant(1))
        assert int(out["steps_run"]) == 1 and not bool(out["nonfinite"])
        before = [w.copy() for w in model.get_weights()]
        out = step(it, tf.constant(1))
        assert bool(out["nonfinite"]) and int(out["steps_run"]) == 0 and int(out["skipped"]) == 1
        # Every weight (incl. BatchNorm statistics) is exactly as before the bad step.
        for a, b in zip(model.get_weights(), before):
            np.testing.assert_array_equal(a, b)
        assert int(opt.iterations.numpy()) == 1
        if policy == "skip":  # training goes on from clean state
            out = step(iter(tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(32)), tf.constant(1))
            assert int(out["steps_run"]) == 1 and all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_train_step_called_the_tutorial_way_says_how_to_call_it():
    """The TF tutorial's habit train_step(x, y) fails before TF, in one line that says how to call it."""
    x, y = _data(64)
    model = _model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    step = steps.make_train_step(model, loss, keras.optimizers.SGD(0.1))
    for args in [(x[:32], y[:32]), (tf.constant(x[:32]), tf.constant(y[:32])), (tf.data.Dataset.from_tensor_slices((x, y)).batch(32), 1), ()]:
        with pytest.raises(ConfigError, match=r"Call it as train_step\(iterator, num_steps\)") as info:
            step(*args)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="the number of steps"):
        step(iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(32)), tf.constant([1, 2]))
    # the right way, also with a Python int (no retrace between counts)
    it = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
    assert int(step(it, 1)["steps_run"]) == 1 and int(step(it, 2)["steps_run"]) == 2
    assert step.experimental_get_tracing_count() == 1
