"""Tests of tfcustom.optimizers.

Oracles: keras.optimizers.SGD (same arguments, same data), closed-form NumPy
recurrences and schedule formulas, and the plain optimizer on a k-times larger
batch for gradient accumulation.
"""

import copy
import doctest
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom import optimizers
from tfcustom.training import steps
from tfcustom.errors import ConfigError
from tfcustom.optimizers import SGD


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]
    )


def _data(n=16, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.normal(size=(n, 2)).astype("float32")


def _train_eager(model, optimizer, x, y, steps_=6, batch=8):
    """Manual GradientTape loop, mean-squared error."""
    for s in range(steps_):
        lo = (s * batch) % len(x)
        xb, yb = x[lo : lo + batch], y[lo : lo + batch]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


# --------------------------------------------------------------------------
# SGD vs keras.optimizers.SGD
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(momentum=0.0),
        dict(momentum=0.9),
        dict(momentum=0.9, nesterov=True),
        dict(momentum=0.5, nesterov=True, weight_decay=0.01),
        dict(momentum=0.9, global_clipnorm=0.5),
    ],
    ids=["plain", "momentum", "nesterov", "nesterov_wd", "momentum_clip"],
)
def test_sgd_matches_keras_sgd(kwargs):
    x, y = _data()
    ours, ref = _model(), _model()
    ref.set_weights(ours.get_weights())
    initial = _weights(ours)
    _train_eager(ours, SGD(0.1, **kwargs), x, y)
    _train_eager(ref, keras.optimizers.SGD(0.1, **kwargs), x, y)
    for a, b, w0 in zip(_weights(ours), _weights(ref), initial):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert max(np.abs(a - w0).max() for a, w0 in zip(_weights(ours), initial)) > 1e-3  # it trained


def test_sgd_matches_keras_sgd_with_schedule_in_tf_function():
    x, y = _data()
    schedule = optimizers.make_schedule("cosine", 0.2, total_steps=6, warmup_steps=2)
    ours, ref = _model(), _model()
    ref.set_weights(ours.get_weights())
    opt_a = SGD(schedule, momentum=0.9, nesterov=True)
    opt_b = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    tf.function(lambda: _train_eager(ours, opt_a, x, y))()
    tf.function(lambda: _train_eager(ref, opt_b, x, y))()
    for a, b in zip(_weights(ours), _weights(ref)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_numpy_recurrence(nesterov):
    """Closed-form oracle on f(w) = 0.5 * c * w^2 (gradient c * w), float64.

    lr = 1/8 and momentum = 7/8 are exact in float32 (Keras keeps the learning
    rate in a float32 variable and casts the momentum through float32)."""
    c, lr, mu = np.array([1.0, 3.0]), 0.125, 0.875
    w_ref, v = np.array([1.0, -2.0]), np.zeros(2)
    var = keras.Variable(w_ref.copy(), dtype="float64")
    opt = SGD(lr, momentum=mu, nesterov=nesterov)
    for _ in range(5):
        g = c * w_ref
        opt.apply_gradients([(tf.constant(c * np.array(var)), var)])
        v = mu * v - lr * g
        w_ref = w_ref + (mu * v - lr * g if nesterov else v)
    np.testing.assert_allclose(np.array(var), w_ref, rtol=0, atol=1e-12)


def test_sgd_momentum_slots_built_from_reference():
    model = _model()
    opt = SGD(0.1, momentum=0.9)
    opt.build(model.trainable_variables)
    assert len(opt.momentums) == len(model.trainable_variables)
    for m, v in zip(opt.momentums, model.trainable_variables):
        assert tuple(m.shape) == tuple(v.shape) and m.dtype == v.dtype
        assert not np.any(np.array(m))
    plain = SGD(0.1)
    plain.build(model.trainable_variables)
    assert plain.momentums == []


def test_sgd_get_config_round_trip():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5)
    for opt in (SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, clipnorm=1.0), SGD(schedule)):
        config = opt.get_config()
        clone = SGD.from_config(copy.deepcopy(config))  # Keras' from_config mutates its argument
        assert type(clone) is SGD
        assert clone.get_config() == config
    assert SGD(0.05, momentum=0.9, nesterov=True).get_config()["nesterov"] is True


def test_sgd_keras_file_round_trip(tmp_path):
    x, y = _data()
    model = _model()
    model.compile(optimizer=SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-4), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is SGD
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert np.any(np.array(loaded.optimizer.momentums[0]))  # slots restored, not zeros


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(momentum=-0.1),
        dict(momentum=1.5),
        dict(momentum="0.9"),
        dict(momentum=0.0, nesterov=True),
        dict(nesterov="yes", momentum=0.9),
        dict(learning_rate=-1.0),
        dict(learning_rate="fast"),
    ],
)
def test_sgd_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        SGD(**kwargs)


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------


def test_names():
    assert optimizers.names() == ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "keras_sgd"]
    assert optimizers.schedule_names() == ["constant", "cosine", "exponential", "step"]


@pytest.mark.parametrize(
    "name, cls, momentum, nesterov",
    [
        ("sgd", SGD, 0.0, False),
        ("momentum", SGD, 0.9, False),
        ("nesterov", SGD, 0.9, True),
        ("adam", keras.optimizers.Adam, None, None),
        ("adamw", keras.optimizers.AdamW, None, None),
        ("rmsprop", keras.optimizers.RMSprop, None, None),
        ("keras_sgd", keras.optimizers.SGD, 0.0, False),
    ],
)
def test_get_builds_named_optimizer(name, cls, momentum, nesterov):
    opt = optimizers.get(name, 0.01)
    assert type(opt) is cls
    assert float(opt.learning_rate) == pytest.approx(0.01)
    if momentum is not None:
        assert opt.momentum == momentum and opt.nesterov == nesterov


def test_get_momentum_and_case_insensitive():
    assert optimizers.get("Nesterov", 0.1, momentum=0.8).momentum == 0.8


def test_get_unknown_name_lists_names():
    with pytest.raises(ConfigError) as info:
        optimizers.get("adagrad", 0.1)
    for name in optimizers.names():
        assert name in str(info.value)


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (("sgd", 0.0), {}),
        (("sgd", "0.1"), {}),
        (("sgd", 0.1), dict(weight_decay=-1.0)),
        (("momentum", 0.1), dict(momentum=0.0)),
        (("sgd", 0.1), dict(gradient_accumulation_steps=0)),
        (("sgd", 0.1), dict(gradient_accumulation_steps=2.0)),
        (("adam", 0.1), dict(not_an_argument=1)),
    ],
)
def test_get_rejects_bad_arguments(args, kwargs):
    with pytest.raises(ConfigError):
        optimizers.get(*args, **kwargs)


@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam", "adamw", "rmsprop", "keras_sgd"])
def test_get_weight_decay_is_decoupled(name):
    """With a zero gradient, every optimizer only decays: w <- w * (1 - lr * wd)."""
    lr, wd = 0.1, 0.5
    opt = optimizers.get(name, lr, weight_decay=wd)
    assert opt.weight_decay == wd
    var = keras.Variable(np.array([1.0, -2.0], "float32"))
    opt.apply_gradients([(tf.zeros(2), var)])
    np.testing.assert_allclose(np.array(var), np.array([1.0, -2.0]) * (1 - lr * wd), rtol=0, atol=1e-6)


def test_get_passes_kwargs_and_schedule():
    schedule = optimizers.make_schedule("exponential", 0.1, total_steps=10)
    opt = optimizers.get("adam", schedule, beta_1=0.8, clipnorm=1.0)
    assert opt.beta_1 == 0.8 and opt.clipnorm == 1.0
    assert opt.get_config()["learning_rate"]["class_name"] == "ExponentialDecay"
    assert optimizers.get("sgd", 1).learning_rate.dtype == "float32"  # int accepted


def test_get_gradient_accumulation_argument():
    assert optimizers.get("sgd", 0.1, gradient_accumulation_steps=3).gradient_accumulation_steps == 3
    assert optimizers.get("sgd", 0.1, gradient_accumulation_steps=1).gradient_accumulation_steps is None
    assert optimizers.get("sgd", 0.1).gradient_accumulation_steps is None


# --------------------------------------------------------------------------
# gradient accumulation through the lead's train step
# --------------------------------------------------------------------------


def _run_train_step(model, optimizer, x, y, batch, num_steps):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    step = steps.make_train_step(model, keras.losses.MeanSquaredError(), optimizer)
    out = step(iter(ds), tf.constant(num_steps))
    assert int(out["steps_run"]) == num_steps
    return out


@pytest.mark.parametrize(
    "name, kwargs",
    [("sgd", {}), ("nesterov", dict(weight_decay=0.01)), ("adam", {})],
)
def test_gradient_accumulation_equals_large_batch(name, kwargs):
    """k micro-batches of b with accumulation == one batch of k*b (mean loss)."""
    k, b, updates = 4, 3, 2
    x, y = _data(n=k * b * updates, seed=3)
    acc_model, ref_model = _model(), _model()
    ref_model.set_weights(acc_model.get_weights())
    initial = _weights(acc_model)
    acc_opt = optimizers.get(name, 0.05, gradient_accumulation_steps=k, **kwargs)
    ref_opt = optimizers.get(name, 0.05, **kwargs)

    # k - 1 micro-batches only accumulate: the weights do not move yet.
    ds = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(b))
    step = steps.make_train_step(acc_model, keras.losses.MeanSquaredError(), acc_opt)
    step(ds, tf.constant(k - 1))
    for a, w0 in zip(_weights(acc_model), initial):
        np.testing.assert_array_equal(a, w0)
    step(ds, tf.constant(k * updates - (k - 1)))

    _run_train_step(ref_model, ref_opt, x, y, batch=k * b, num_steps=updates)
    assert int(acc_opt.iterations) == updates == int(ref_opt.iterations)
    for a, r, w0 in zip(_weights(acc_model), _weights(ref_model), initial):
        np.testing.assert_allclose(a, r, rtol=0, atol=1e-6)
    assert max(np.abs(r - w0).max() for r, w0 in zip(_weights(ref_model), initial)) > 1e-3


_MIRRORED_ACCUMULATION = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tfcustom import optimizers
    from tfcustom.training import steps

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 5)).astype("float32")
    y = rng.normal(size=(24, 2)).astype("float32")
    weights = []
    for k, batch in ((3, 4), (None, 12)):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
            opt = optimizers.get("nesterov", 0.05, gradient_accumulation_steps=k, weight_decay=0.01)
            opt.build(model.trainable_variables)  # slots must be created under the scope
        ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch))
        step = steps.make_train_step(model, keras.losses.MeanSquaredError(), opt, strategy=strategy)
        step(iter(ds), tf.constant(24 // batch))
        assert int(np.asarray(opt.iterations)) == 2
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    print("OK")
    """
)


@pytest.mark.slow
def test_gradient_accumulation_under_mirrored_strategy():
    """2 replicas, 3 micro-batches of 4 (2 per replica) == batches of 12."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_ACCUMULATION], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "OK" in proc.stdout


# --------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------


def _values(schedule, ks):
    return np.array([float(schedule(tf.constant(k, tf.int64))) for k in ks])


def test_schedule_constant():
    assert optimizers.make_schedule("constant", 0.1, total_steps=10) == 0.1
    s = optimizers.make_schedule("constant", 0.1, total_steps=10, warmup_steps=4)
    ks = [0, 1, 2, 4, 7, 10, 50]
    expected = [0.1 * min(k, 4) / 4 for k in ks]
    np.testing.assert_allclose(_values(s, ks), expected, rtol=1e-6, atol=1e-8)


def test_schedule_cosine():
    total, lr = 100, 0.3
    s = optimizers.make_schedule("cosine", lr, total_steps=total)
    assert isinstance(s, keras.optimizers.schedules.CosineDecay)
    ks = [0, 1, 25, 50, 99, 100, 150]
    expected = [lr * 0.5 * (1 + math.cos(math.pi * min(k, total) / total)) for k in ks]
    np.testing.assert_allclose(_values(s, ks), expected, rtol=1e-5, atol=1e-7)


def test_schedule_cosine_with_warmup():
    total, warm, lr = 100, 10, 0.3
    s = optimizers.make_schedule("cosine", lr, total_steps=total, warmup_steps=warm)

    def ref(k):
        if k < warm:
            return lr * k / warm
        d = total - warm
        return lr * 0.5 * (1 + math.cos(math.pi * min(k - warm, d) / d))

    ks = [0, 1, 5, 9, 10, 11, 55, 99, 100, 200]
    np.testing.assert_allclose(_values(s, ks), [ref(k) for k in ks], rtol=1e-5, atol=1e-7)


def test_schedule_exponential():
    s = optimizers.make_schedule("exponential", 0.2, total_steps=50, decay_rate=0.1)
    ks = [0, 10, 25, 50, 100]
    np.testing.assert_allclose(_values(s, ks), [0.2 * 0.1 ** (k / 50) for k in ks], rtol=1e-5)


@pytest.mark.parametrize("total", [100, 10, 7, 1])
def test_schedule_step(total):
    s = optimizers.make_schedule("step", 0.2, total_steps=total)
    ks = list(range(0, total + 3))
    expected = [0.2 * 0.1 ** ((k >= 0.5 * total) + (k >= 0.75 * total)) for k in ks]
    np.testing.assert_allclose(_values(s, ks), expected, rtol=1e-6)


def test_schedule_in_optimizer_follows_iterations():
    s = optimizers.make_schedule("step", 1.0, total_steps=4)
    opt = optimizers.get("sgd", s)
    var = keras.Variable(np.zeros(1, "float32"))
    moves = []
    for _ in range(4):
        before = float(np.array(var)[0])
        opt.apply_gradients([(tf.constant([-1.0]), var)])
        moves.append(float(np.array(var)[0]) - before)
    np.testing.assert_allclose(moves, [1.0, 1.0, 0.1, 0.01], rtol=1e-6)


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (("linear", 0.1), dict(total_steps=10)),
        (("cosine", 0.0), dict(total_steps=10)),
        (("cosine", 0.1), dict(total_steps=0)),
        (("cosine", 0.1), dict(total_steps=10, warmup_steps=10)),
        (("cosine", 0.1), dict(total_steps=10, warmup_steps=-1)),
        (("exponential", 0.1), dict(total_steps=10, warmup_steps=2)),
        (("step", 0.1), dict(total_steps=10, decay_rate=0.0)),
        (("step", 0.1), dict(total_steps=10.0)),
    ],
)
def test_schedule_rejects_bad_arguments(args, kwargs):
    with pytest.raises(ConfigError):
        optimizers.make_schedule(*args, **kwargs)


def test_docstring_examples_run():
    result = doctest.testmod(optimizers.by_name, verbose=False)
    assert result.attempted > 0 and result.failed == 0
