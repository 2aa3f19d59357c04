"""Tests of tfcustom.training.sam.

Oracles: the closed-form SAM / ASAM update on a quadratic (NumPy, float64),
the plain train step (rho = 0), and the same closed form under a 2-replica
MirroredStrategy (subprocess with 2 logical CPU devices).
"""

import doctest
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom import optimizers
from tfcustom.training import sam
from tfcustom.training import steps
from tfcustom.errors import ConfigError
from tfcustom.training.sam import SAM, split_sam_name

A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
W0 = np.array([0.5, -1.0, 0.75])


@keras.saving.register_keras_serializable(package="tfcustom_test")
class Quadratic(keras.layers.Layer):
    """Outputs 0.5 * w^T A w for every example (shape [batch, 1]); ignores x's values."""

    def __init__(self, a, w0, **kwargs):
        super().__init__(**kwargs)
        self.a = np.asarray(a, "float32")
        self.w0 = np.asarray(w0, "float32")

    def build(self, input_shape):
        self.w = self.add_weight(shape=(len(self.w0),), initializer=keras.initializers.Constant(self.w0), name="w")

    def call(self, x):
        w = self.w
        value = 0.5 * tf.reduce_sum(w * tf.linalg.matvec(tf.constant(self.a), w))
        return tf.zeros_like(x[:, :1]) + value

    def get_config(self):
        return {**super().get_config(), "a": self.a.tolist(), "w0": self.w0.tolist()}


class IdentityLoss(keras.losses.Loss):
    """Per-example loss = the model output."""

    def call(self, y_true, y_pred):
        return y_pred[:, 0]


def _quadratic_model():
    model = keras.Sequential([keras.Input((2,)), Quadratic(A, W0)])
    return model


def _quadratic_batches(batch=4):
    x = np.ones((batch, 2), "float32")
    y = np.zeros((batch, 1), "float32")
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def _closed_form(w, lr, rho, adaptive=False):
    g = A @ w
    if adaptive:
        e = rho * w**2 * g / np.linalg.norm(np.abs(w) * g)
    else:
        e = rho * g / np.linalg.norm(g)
    return w - lr * A @ (w + e)


@pytest.mark.parametrize(
    "rho, adaptive, jit",
    [(0.05, False, False), (0.3, False, False), (0.5, True, False), (0.3, False, True)],
    ids=["sam", "sam_rho0.3", "asam", "sam_jit"],
)
def test_sam_sgd_step_matches_closed_form(rho, adaptive, jit):
    lr = 0.1
    model = _quadratic_model()
    step = steps.make_train_step(
        model, IdentityLoss(), keras.optimizers.SGD(lr), gradient_fn=SAM(rho, adaptive=adaptive), jit_compile=jit
    )
    out = step(iter(_quadratic_batches()), tf.constant(1))
    w1 = np.array(model.layers[-1].w)
    np.testing.assert_allclose(w1, _closed_form(W0, lr, rho, adaptive), rtol=0, atol=1e-6)
    # the reported loss is the first pass' (at the unperturbed w)
    np.testing.assert_allclose(float(out["loss"]), 0.5 * W0 @ A @ W0, rtol=1e-6)
    # a second step starts from the updated weights
    step(iter(_quadratic_batches()), tf.constant(1))
    np.testing.assert_allclose(
        np.array(model.layers[-1].w), _closed_form(_closed_form(W0, lr, rho, adaptive), lr, rho, adaptive), atol=1e-6
    )


def test_sam_with_own_sgd_and_sample_weights():
    """Sample weights scale the loss; with all weights 2 the gradient doubles."""
    lr, rho = 0.05, 0.1
    model = _quadratic_model()
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    ds = tf.data.Dataset.from_tensors((x, y, np.full((4,), 2.0, "float32"))).repeat()
    step = steps.make_train_step(model, IdentityLoss(), optimizers.get("sgd", lr), gradient_fn=SAM(rho))
    step(iter(ds), tf.constant(1))
    np.testing.assert_allclose(np.array(model.layers[-1].w), _closed_form(W0, 2 * lr, rho), atol=1e-6)


class _Subclassed(keras.Model):
    """call() does not forward `training` to its sublayers (Keras propagates it
    through the call context; model.call() alone would not)."""

    def __init__(self):
        super().__init__()
        self.d1 = keras.layers.Dense(8, kernel_regularizer=keras.regularizers.L2(1e-2))
        self.bn = keras.layers.BatchNormalization()
        self.drop = keras.layers.Dropout(0.3, seed=7)
        self.d2 = keras.layers.Dense(3)

    def call(self, x, training=None):
        return self.d2(self.drop(self.bn(self.d1(x))))


def _noisy_model(seed, subclassed=False):
    keras.utils.set_random_seed(seed)
    if subclassed:
        model = _Subclassed()
        model(np.zeros((1, 6), "float32"))
        return model
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, kernel_regularizer=keras.regularizers.L2(1e-2)),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.3, seed=7),
            keras.layers.Dense(3),
        ]
    )


@pytest.mark.parametrize("subclassed", [False, True], ids=["sequential", "subclassed"])
def test_sam_rho_zero_equals_plain_step(subclassed):
    """rho = 0: same weights, same BN statistics (updated once) and same losses
    as the plain step, with dropout (same mask in both SAM passes), BN and an L2
    regularizer in the model."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6)).astype("float32")
    y = rng.integers(0, 3, size=(24,)).astype("int32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    sam_model, plain_model = _noisy_model(1, subclassed), _noisy_model(2, subclassed)
    for a, b in zip(plain_model.variables, sam_model.variables):  # incl. dropout seed state
        b.assign(a)
    results = []
    for model, fn in ((sam_model, SAM(0.0)), (plain_model, steps.compute_loss_and_gradients)):
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        step = steps.make_train_step(model, loss, keras.optimizers.SGD(0.1, momentum=0.9), gradient_fn=fn)
        results.append(float(step(iter(ds), tf.constant(3))["loss"]))
    assert results[0] == pytest.approx(results[1], abs=1e-6)
    for a, b in zip(sam_model.variables, plain_model.variables):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=0, atol=1e-6, err_msg=a.path)
    bn = sam_model.bn if subclassed else sam_model.layers[1]
    moving_mean = bn.moving_mean
    assert np.abs(np.array(moving_mean)).max() > 0  # BN statistics did move


def test_sam_does_not_touch_variables_and_returns_step_dict():
    model = _noisy_model(3)
    x = np.random.default_rng(1).normal(size=(8, 6)).astype("float32")
    y = np.zeros((8,), "int32")
    before = [np.array(v) for v in model.trainable_variables]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    out = tf.function(lambda: SAM(0.5)(model, loss, x, y, None, tf.constant(8.0), 1))()
    assert set(out) >= {"grads", "loss", "per_example", "y_pred", "regularization", "perturbed_loss"}
    assert len(out["grads"]) == len(model.trainable_variables)
    for a, b in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(a, np.array(b))
    plain = steps.compute_loss_and_gradients(model, loss, x, y, None, tf.constant(8.0), 1)
    # the second-pass gradient differs from the plain gradient (rho > 0)
    assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(out["grads"], plain["grads"])) > 1e-4
    # the loss at w + e_w is higher than at w (first-order ascent step)
    assert float(out["perturbed_loss"]) > float(out["loss"])


def test_sam_config_round_trip_and_validation():
    s = SAM(rho=0.2, adaptive=True)
    config = s.get_config()
    assert config == {"rho": 0.2, "adaptive": True}
    assert SAM.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert type(restored) is SAM and restored.get_config() == config
    assert SAM().get_config() == {"rho": 0.05, "adaptive": False}
    for bad in (dict(rho=-0.1), dict(rho="0.05"), dict(adaptive=1)):
        with pytest.raises(ConfigError):
            SAM(**bad)


def test_split_sam_name():
    assert split_sam_name("sam_sgd") == ("sgd", True)
    assert split_sam_name("SAM_Nesterov") == ("nesterov", True)
    assert split_sam_name("adamw") == ("adamw", False)
    for bad in ("sam_", "sam_adagrad", "adagrad", "sam", None):
        with pytest.raises(ConfigError):
            split_sam_name(bad)
    assert sam.names() == ["sam_" + n for n in optimizers.names()]
    for name in sam.names():
        assert split_sam_name(name)[1] is True


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, {tests_dir!r})
    import test_sam as t
    from tfcustom.training import steps
    from tfcustom.training.sam import SAM

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = t._quadratic_model()
        optimizer = keras.optimizers.SGD(0.1)
    # uneven global batch of 5 -> replicas see 3 and 2 examples
    x, y = np.ones((5, 2), "float32"), np.zeros((5, 1), "float32")
    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat())
    step = steps.make_train_step(model, t.IdentityLoss(), optimizer, strategy=strategy, gradient_fn=SAM(0.3))
    out = step(iter(ds), tf.constant(1))
    w1 = np.array(model.layers[-1].w)
    np.testing.assert_allclose(w1, t._closed_form(t.W0, 0.1, 0.3), rtol=0, atol=1e-6)
    np.testing.assert_allclose(float(out["loss"]), 0.5 * t.W0 @ t.A @ t.W0, rtol=1e-6)

    # BN + dropout + L2 under the strategy: SAM(rho=0) == the plain step
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 3, size=(16,)).astype("int32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trained = []
    for fn in (SAM(0.0), steps.compute_loss_and_gradients):
        with strategy.scope():
            model = t._noisy_model(1)
            optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
            optimizer.build(model.trainable_variables)
        ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
        step = steps.make_train_step(model, loss, optimizer, strategy=strategy, gradient_fn=fn)
        assert int(step(iter(ds), tf.constant(2))["steps_run"]) == 2
        trained.append([np.asarray(v) for v in model.variables])
    for a, b in zip(*trained):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    print("OK")
    """
)


@pytest.mark.slow
def test_sam_under_mirrored_strategy_two_replicas():
    """Each replica perturbs with its own gradient (same direction A w here),
    without assigning mirrored variables in the replica context."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT.format(tests_dir=tests_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "OK" in proc.stdout


def test_docstring_examples_run():
    result = doctest.testmod(sam, verbose=False)
    assert result.attempted > 0 and result.failed == 0
