"""Tests for tfcustom.losses against independent oracles.

Oracles: Keras' built-in categorical losses on one-hot labels, and NumPy
formulas written here in float64. Gradients: tape vs central finite
differences in float64 (tfcustom.testing.check_gradients).
"""

from __future__ import annotations

import functools
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom import losses as L
from tfcustom.errors import ConfigError
from tfcustom.testing import check_gradients

NUM_CLASSES = 5
# The tests below feed logits: tfcustom's losses default to from_logits=False
# (Keras' default), so these build them with from_logits=True unless a test says otherwise.
CE = functools.partial(L.SparseCategoricalCrossentropy, from_logits=True)
Focal = functools.partial(L.SparseFocalLoss, from_logits=True)
Poly = functools.partial(L.PolyLoss, from_logits=True)
CLASS_WEIGHTS = [1.0, 2.5, 0.5, 0.0, 3.0]


# --------------------------------------------------------------------------
# data and NumPy oracles
# --------------------------------------------------------------------------


def _data(batch=16, num_classes=NUM_CLASSES, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=batch)
    logits = (rng.normal(size=(batch, num_classes)) * scale).astype("float32")
    weights = rng.uniform(0.0, 2.0, size=batch).astype("float32")
    return labels, logits, weights


def _np_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def _np_target(labels, num_classes, ls):
    t = np.eye(num_classes)[labels]
    return t * (1.0 - ls) + ls / num_classes


def _np_cross_entropy(labels, logits, ls=0.0, class_weights=None):
    t = _np_target(labels, logits.shape[-1], ls)
    ce = -(t * _np_log_softmax(logits)).sum(-1)
    if class_weights is not None:
        ce = ce * np.asarray(class_weights)[labels]
    return ce


def _np_focal(labels, logits, gamma, alpha):
    log_pt = _np_log_softmax(logits)[np.arange(len(labels)), labels]
    out = -((-np.expm1(log_pt)) ** gamma) * log_pt
    if alpha is None:
        return out
    return out * (np.asarray(alpha)[labels] if isinstance(alpha, list) else alpha)


def _np_poly1(labels, logits, epsilon, ls=0.0):
    """Poly-1 (Leng et al. 2022): CE + epsilon * (1 - p_t), p_t = <t, softmax>."""
    t = _np_target(labels, logits.shape[-1], ls)
    logp = _np_log_softmax(logits)
    p = np.exp(logp)
    return -(t * logp).sum(-1) + epsilon * (1.0 - (t * p).sum(-1))


def _np_reduce(per_example, weights, reduction):
    v = per_example * (1.0 if weights is None else weights)
    if reduction == "none":
        return v
    if reduction == "sum":
        return v.sum()
    return v.sum() / v.size  # sum_over_batch_size


# --------------------------------------------------------------------------
# values against oracles
# --------------------------------------------------------------------------


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("class_weights", [None, CLASS_WEIGHTS])
@pytest.mark.parametrize("label_shape", ["flat", "column"])
def test_crossentropy_matches_keras_categorical(label_smoothing, class_weights, label_shape):
    labels, logits, _ = _data()
    oracle = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=label_smoothing, reduction="none"
    )(np.eye(NUM_CLASSES)[labels], logits).numpy()
    if class_weights is not None:
        oracle = oracle * np.asarray(class_weights)[labels]
    loss = CE(
        class_weights=class_weights, label_smoothing=label_smoothing, reduction="none"
    )
    y = labels if label_shape == "flat" else labels[:, None]
    per_example = loss.call(y, logits)
    assert per_example.shape == (len(labels),)
    np.testing.assert_allclose(per_example.numpy(), oracle, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss(y, logits).numpy(), oracle, rtol=1e-5, atol=1e-6)
    # and the NumPy float64 formula
    np.testing.assert_allclose(
        per_example.numpy(),
        _np_cross_entropy(labels, logits, label_smoothing, class_weights),
        rtol=1e-5,
        atol=1e-6,
    )


def test_crossentropy_from_probabilities_matches_keras():
    labels, logits, _ = _data()
    probs = tf.nn.softmax(logits).numpy()
    oracle = keras.losses.CategoricalCrossentropy(
        from_logits=False, label_smoothing=0.2, reduction="none"
    )(np.eye(NUM_CLASSES)[labels], probs).numpy()
    got = CE(label_smoothing=0.2, from_logits=False).call(
        labels, probs
    )
    np.testing.assert_allclose(got.numpy(), oracle, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.5])
@pytest.mark.parametrize("alpha", [None, 0.25, [0.1, 0.4, 0.2, 0.9, 0.6]])
def test_focal_matches_keras_categorical_focal(gamma, alpha):
    labels, logits, _ = _data(seed=1)
    # Keras multiplies each class' term by alpha (scalar or per-class list);
    # with one-hot labels that is alpha[true class]. Our alpha=None == 1.0.
    oracle = keras.losses.CategoricalFocalCrossentropy(
        from_logits=True,
        gamma=gamma,
        alpha=1.0 if alpha is None else alpha,
        reduction="none",
    )(np.eye(NUM_CLASSES)[labels], logits).numpy()
    loss = Focal(gamma=gamma, alpha=alpha, reduction="none")
    np.testing.assert_allclose(loss.call(labels, logits).numpy(), oracle, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss(labels, logits).numpy(), oracle, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        loss.call(labels, logits).numpy(),
        _np_focal(labels, logits, gamma, alpha),
        rtol=1e-5,
        atol=1e-6,
    )


def test_focal_from_probabilities_matches_keras():
    labels, logits, _ = _data(seed=11)
    probs = tf.nn.softmax(logits).numpy()
    alpha = [0.1, 0.4, 0.2, 0.9, 0.6]
    oracle = keras.losses.CategoricalFocalCrossentropy(
        from_logits=False, gamma=1.5, alpha=alpha, reduction="none"
    )(np.eye(NUM_CLASSES)[labels], probs).numpy()
    got = Focal(gamma=1.5, alpha=alpha, from_logits=False).call(labels, probs)
    np.testing.assert_allclose(got.numpy(), oracle, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("epsilon", [1.0, 2.0, -1.0, 0.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_poly1_matches_numpy_formula(epsilon, label_smoothing):
    labels, logits, _ = _data(seed=2)
    loss = Poly(epsilon=epsilon, label_smoothing=label_smoothing, reduction="none")
    expected = _np_poly1(labels, logits, epsilon, label_smoothing)
    np.testing.assert_allclose(loss.call(labels, logits).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss(labels, logits).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_poly1_default_epsilon_is_one_and_hand_computed_value():
    # p = softmax([0, ln 3]) = [1/4, 3/4]; label 1: CE = ln(4/3), 1 - p_t = 1/4.
    loss = Poly(reduction="none")
    assert loss.epsilon == 1.0
    got = loss([1], [[0.0, np.log(3.0)]]).numpy()
    np.testing.assert_allclose(got, [np.log(4.0 / 3.0) + 0.25], rtol=1e-6)


# --------------------------------------------------------------------------
# reductions and sample weights (Keras __call__ machinery)
# --------------------------------------------------------------------------

_CASES = [
    (
        lambda r: CE(
            class_weights=CLASS_WEIGHTS, label_smoothing=0.1, reduction=r
        ),
        lambda y, z: _np_cross_entropy(y, z, 0.1, CLASS_WEIGHTS),
    ),
    (
        lambda r: Focal(gamma=2.0, alpha=0.25, reduction=r),
        lambda y, z: _np_focal(y, z, 2.0, 0.25),
    ),
    (
        lambda r: Poly(epsilon=2.0, label_smoothing=0.1, reduction=r),
        lambda y, z: _np_poly1(y, z, 2.0, 0.1),
    ),
]


@pytest.mark.parametrize("case", range(len(_CASES)))
@pytest.mark.parametrize("reduction", ["none", "sum", "sum_over_batch_size"])
@pytest.mark.parametrize("weighted", [False, True])
def test_reductions_and_sample_weight(case, reduction, weighted):
    make, oracle = _CASES[case]
    labels, logits, weights = _data(batch=11, seed=3)
    w = weights if weighted else None
    expected = _np_reduce(oracle(labels, logits), w, reduction)
    got = make(reduction)(labels, logits, sample_weight=w).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", range(len(_CASES)))
def test_call_is_per_example_for_the_train_step(case):
    """The tfcustom step: sum(w * loss.call(y, z)) / global_batch_size."""
    make, oracle = _CASES[case]
    labels, logits, weights = _data(batch=9, seed=4)
    loss = make("sum_over_batch_size")  # the reduction must not affect call()
    per_example = loss.call(labels, logits)
    assert per_example.shape == (9,)
    global_batch = 12  # e.g. a partial per-replica batch of a larger global batch
    step_loss = tf.reduce_sum(per_example * weights) / global_batch
    np.testing.assert_allclose(
        step_loss.numpy(), (oracle(labels, logits) * weights).sum() / global_batch, rtol=1e-5
    )


def test_call_computes_in_float32_for_float16_logits():
    labels, logits, _ = _data(seed=5)
    for loss in (CE(), Focal(), Poly()):
        out = loss.call(labels, tf.constant(logits, tf.float16))
        assert out.dtype == tf.float32


def test_works_inside_tf_function_with_unknown_batch():
    labels, logits, _ = _data(batch=7, seed=6)
    loss = Focal(gamma=1.0, alpha=[0.2, 0.2, 0.2, 0.2, 0.2])

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None, NUM_CLASSES], tf.float32),
        ]
    )
    def per_example(y, z):
        return loss.call(y, z)

    np.testing.assert_allclose(
        per_example(labels, logits).numpy(), _np_focal(labels, logits, 1.0, 0.2), rtol=1e-5
    )


# --------------------------------------------------------------------------
# numerical stability and gradients
# --------------------------------------------------------------------------

_EXTREME_LOGITS = np.array(
    [
        [1e4, -1e4, 0.0],
        [1e4, -1e4, 0.0],
        [1e4, -1e4, 0.0],
        [-1e4, -1e4, 1e4],
        [1e4, 1e4, -1e4],
        [0.0, 0.0, 0.0],
    ],
    dtype="float32",
)
_EXTREME_LABELS = np.array([0, 1, 2, 2, 0, 1])

_STABILITY_LOSSES = {
    "ce": lambda: CE(reduction="none"),
    "ce_smoothed_weighted": lambda: CE(
        class_weights=[1.0, 2.0, 0.5], label_smoothing=0.2, reduction="none"
    ),
    "focal_gamma2": lambda: Focal(gamma=2.0, reduction="none"),
    "focal_gamma0.5": lambda: Focal(gamma=0.5, alpha=[0.3, 0.3, 0.4], reduction="none"),
    "focal_gamma0.01": lambda: Focal(gamma=0.01, reduction="none"),
    "focal_gamma0": lambda: Focal(gamma=0.0, reduction="none"),
    "poly1": lambda: Poly(reduction="none"),
    "poly1_smoothed": lambda: Poly(epsilon=2.0, label_smoothing=0.1, reduction="none"),
}

_STABILITY_ORACLES = {
    "ce": lambda y, z: _np_cross_entropy(y, z),
    "ce_smoothed_weighted": lambda y, z: _np_cross_entropy(y, z, 0.2, [1.0, 2.0, 0.5]),
    "focal_gamma2": lambda y, z: _np_focal(y, z, 2.0, None),
    "focal_gamma0.5": lambda y, z: _np_focal(y, z, 0.5, [0.3, 0.3, 0.4]),
    "focal_gamma0.01": lambda y, z: _np_focal(y, z, 0.01, None),
    "focal_gamma0": lambda y, z: _np_focal(y, z, 0.0, None),
    "poly1": lambda y, z: _np_poly1(y, z, 1.0),
    "poly1_smoothed": lambda y, z: _np_poly1(y, z, 2.0, 0.1),
}


@pytest.mark.parametrize("name", sorted(_STABILITY_LOSSES))
def test_extreme_logits_give_finite_values_and_gradients(name):
    loss = _STABILITY_LOSSES[name]()
    z = tf.constant(_EXTREME_LOGITS)
    with tf.GradientTape() as tape:
        tape.watch(z)
        values = loss.call(_EXTREME_LABELS, z)
        total = tf.reduce_sum(values)
    grads = tape.gradient(total, z)
    assert np.all(np.isfinite(values.numpy())), values.numpy()
    assert np.all(np.isfinite(grads.numpy())), grads.numpy()
    # values are right, not just finite (e.g. CE of a -1e4 vs +1e4 logit is 2e4)
    np.testing.assert_allclose(
        values.numpy(), _STABILITY_ORACLES[name](_EXTREME_LABELS, _EXTREME_LOGITS), rtol=1e-6, atol=1e-6
    )
    # gradient of every loss lies in a bounded range: |d loss / d logit| is
    # O(1) per example for these losses (here at most a few units)
    assert np.max(np.abs(grads.numpy())) < 20.0
    # through Keras' reduction machinery too
    for reduction in ("sum", "sum_over_batch_size"):
        loss.reduction = reduction
        assert np.isfinite(loss(_EXTREME_LABELS, _EXTREME_LOGITS).numpy())


def test_extreme_crossentropy_value_is_logit_gap():
    got = CE(reduction="none").call([1, 0], [[1e4, -1e4], [1e4, -1e4]])
    np.testing.assert_allclose(got.numpy(), [2e4, 0.0], rtol=1e-7)


_GRADIENT_LOSSES = {
    "ce": lambda: CE(dtype="float64"),
    "ce_smoothed_weighted": lambda: CE(
        class_weights=CLASS_WEIGHTS, label_smoothing=0.15, dtype="float64"
    ),
    "ce_probabilities": lambda: CE(
        label_smoothing=0.1, from_logits=False, dtype="float64"
    ),
    "focal_gamma2_alpha_list": lambda: Focal(
        gamma=2.0, alpha=[0.1, 0.4, 0.2, 0.9, 0.6], dtype="float64"
    ),
    "focal_gamma0.5": lambda: Focal(gamma=0.5, alpha=0.25, dtype="float64"),
    "poly1": lambda: Poly(dtype="float64"),
    "poly1_smoothed": lambda: Poly(epsilon=-0.5, label_smoothing=0.2, dtype="float64"),
}


@pytest.mark.parametrize("name", sorted(_GRADIENT_LOSSES))
def test_gradients_match_finite_differences(name):
    labels, logits, weights = _data(batch=4, seed=7, scale=2.0)
    if name == "ce_probabilities":
        logits = tf.nn.softmax(tf.constant(logits, tf.float64)).numpy()
    loss = _GRADIENT_LOSSES[name]()
    coeffs = tf.constant(weights, tf.float64)  # distinct weight per example
    err = check_gradients(lambda z: coeffs * loss.call(labels, z), logits)
    assert err < 1e-6, err


# --------------------------------------------------------------------------
# labels and argument validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("loss_cls", [CE, Focal, Poly])
@pytest.mark.parametrize("bad_label", [-1, NUM_CLASSES])
def test_out_of_range_labels_raise(loss_cls, bad_label):
    labels, logits, _ = _data(batch=4)
    labels[2] = bad_label
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be"):
        loss_cls().call(labels, logits)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be"):
        tf.function(lambda y, z: loss_cls().call(y, z))(labels, logits)


def test_one_hot_labels_are_rejected_with_a_clear_error():
    labels, logits, _ = _data(batch=4)
    with pytest.raises(ConfigError, match="sparse integer labels"):
        CE().call(np.eye(NUM_CLASSES)[labels], logits)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CE(class_weights=[1.0, 2.0]).call([0], np.zeros((1, 3))),
        lambda: Focal(alpha=[0.5, 0.5, 0.5, 0.5]).call([0], np.zeros((1, 3))),
    ],
)
def test_per_class_list_length_must_match_num_classes(make):
    with pytest.raises(ConfigError, match="one entry per class"):
        make()


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: CE(label_smoothing=1.5), "label_smoothing"),
        (lambda: CE(label_smoothing=-0.1), "label_smoothing"),
        (lambda: CE(label_smoothing="0.1"), "label_smoothing"),
        (lambda: CE(class_weights=[]), "class_weights"),
        (lambda: CE(class_weights=[1.0, -1.0]), "class_weights"),
        (lambda: CE(class_weights=["a"]), "class_weights"),
        (lambda: CE(class_weights=3.0), "class_weights"),
        (lambda: CE(from_logits="yes"), "from_logits"),
        (lambda: CE(reduction="avg"), "reduction"),
        (lambda: Focal(gamma=-1.0), "gamma"),
        (lambda: Focal(gamma=float("nan")), "gamma"),
        (lambda: Focal(alpha=-0.5), "alpha"),
        (lambda: Focal(alpha=[0.5, float("inf")]), "alpha"),
        (lambda: Poly(epsilon=-2.0), "epsilon"),
        (lambda: Poly(label_smoothing=2.0), "label_smoothing"),
    ],
)
def test_constructor_validation_uses_error_template(make, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        make()
    assert "(received: " in str(info.value)


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------


def test_registry_names_and_aliases():
    assert L.names() == sorted(["sparse_categorical_crossentropy", "crossentropy", "focal", "poly1"])
    assert type(L.get("crossentropy")) is L.SparseCategoricalCrossentropy
    assert type(L.get("sparse_categorical_crossentropy")) is L.SparseCategoricalCrossentropy
    focal = L.get("focal", gamma=1.0, alpha=0.5)
    assert type(focal) is L.SparseFocalLoss and focal.gamma == 1.0 and focal.alpha == 0.5
    poly = L.get("poly1", epsilon=3.0)
    assert type(poly) is L.PolyLoss and poly.epsilon == 3.0


def test_registry_unknown_name_lists_names():
    with pytest.raises(ConfigError) as info:
        L.get("hinge")
    for name in L.names():
        assert name in str(info.value)


# --------------------------------------------------------------------------
# serialization
# --------------------------------------------------------------------------

_SERIALIZABLE = [
    CE(class_weights=CLASS_WEIGHTS, label_smoothing=0.1, name="ce_w"),
    CE(from_logits=False, reduction="sum"),
    Focal(gamma=1.5, alpha=[0.1, 0.4, 0.2, 0.9, 0.6]),
    Focal(gamma=2.0, alpha=0.25, reduction="none"),
    Focal(),
    Poly(epsilon=2.0, label_smoothing=0.05, dtype="float64"),
]


@pytest.mark.parametrize("index", range(len(_SERIALIZABLE)))
def test_config_round_trip(index):
    loss = _SERIALIZABLE[index]
    labels, logits, _ = _data(seed=8)
    config = loss.get_config()
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    np.testing.assert_allclose(clone.call(labels, logits), loss.call(labels, logits))
    # registered under the tfcustom package, through Keras' serialization
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == f"tfcustom>{type(loss).__name__}"
    restored = keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    assert type(restored) is type(loss) and restored.get_config() == config


def _small_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES)])


@pytest.mark.parametrize(
    "loss",
    [
        CE(class_weights=CLASS_WEIGHTS, label_smoothing=0.1),
        Focal(gamma=1.5, alpha=[0.1, 0.4, 0.2, 0.9, 0.6]),
        Poly(epsilon=2.0, label_smoothing=0.05),
    ],
    ids=["crossentropy", "focal", "poly1"],
)
def test_save_and_load_in_compiled_keras_model(loss, tmp_path):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=40)
    model = _small_model()
    model.compile(
        optimizer="sgd", loss=loss, metrics=[keras.metrics.SparseCategoricalAccuracy()]
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # gradients flow through fit
    before = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert type(reloaded.loss) is type(loss)
    assert reloaded.loss.get_config() == loss.get_config()
    after = reloaded.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(after["loss"], before["loss"], rtol=1e-6)
    logits = model(x)
    np.testing.assert_allclose(reloaded.loss(y, logits), loss(y, logits), rtol=1e-6)


# --------------------------------------------------------------------------
# Keras' defaults: from_logits=False, fit(class_weight=...) weighting
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [L.SparseCategoricalCrossentropy, L.SparseFocalLoss, L.PolyLoss])
def test_default_is_probabilities_like_keras(cls):
    """A perfect probability prediction scores ~0, as with Keras' default loss."""
    labels = np.array([0, 2, 1])
    probs = np.eye(3, dtype="float32")[labels]
    oracle = float(keras.losses.SparseCategoricalCrossentropy()(labels, probs))
    assert cls().from_logits is False
    assert float(cls()(labels, probs)) == pytest.approx(oracle, abs=1e-5)
    assert oracle < 1e-5


def test_eager_call_warns_once_on_the_wrong_kind_of_predictions():
    labels, logits, _ = _data(batch=6)
    probs = tf.nn.softmax(logits).numpy()
    loss = L.SparseCategoricalCrossentropy()  # probabilities expected, logits given
    with pytest.warns(UserWarning, match=r"from_logits=False\) expects probabilities.*Pass SparseCategoricalCrossentropy\(from_logits=True\)"):
        loss(labels, logits)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(labels, logits)  # once per loss object
        L.SparseCategoricalCrossentropy()(labels, probs)  # the right kind: no warning
        CE()(labels, logits)
    with pytest.warns(UserWarning, match=r"from_logits=True\) expects logits.*already a probability distribution"):
        Focal()(labels, probs)


def _keras_fit_weights(loss, class_weight, x, y, sample_weight=None):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
    model.fit(x, y, batch_size=len(x), epochs=2, shuffle=False, verbose=0, class_weight=class_weight, sample_weight=sample_weight)
    return [w.numpy() for w in model.weights]


@pytest.mark.parametrize("class_weights", [{3: 0.0, 1: 2.5, 0: 0.5}, {"4": 3.0}, [1.0, 2.5, 0.5, 0.0, 3.0]])
def test_class_weights_dict_or_sequence_weigh_like_keras_fit_class_weight(class_weights):
    """Oracle: keras fit(class_weight=dict) with Keras' own loss; a dict may skip classes (weight 1.0)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(24, 4)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=24)
    as_dict = class_weights if isinstance(class_weights, dict) else dict(enumerate(class_weights))
    as_dict = {int(k): v for k, v in as_dict.items()}
    want = _keras_fit_weights(keras.losses.SparseCategoricalCrossentropy(from_logits=True), as_dict, x, y)
    got = _keras_fit_weights(CE(class_weights=class_weights), None, x, y)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # and the config round trip (JSON turns dict keys into strings) keeps the weighting
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(keras.saving.serialize_keras_object(CE(class_weights=class_weights)))))
    labels, logits, _ = _data(batch=10)
    np.testing.assert_allclose(clone.call(labels, logits), CE(class_weights=class_weights).call(labels, logits), rtol=1e-6)


@pytest.mark.parametrize("bad", ["1.0,2.0", {1.5: 2.0}, {-1: 2.0}, {"a": 1.0}, {0: -1.0}, {}, {0, 1}, 2.0])
def test_class_weights_refuse_other_forms_in_one_line(bad):
    with pytest.raises(ConfigError, match="class_weights") as info:
        L.SparseCategoricalCrossentropy(class_weights=bad)
    assert "\n" not in str(info.value) and "dict {class_id: weight}" in str(info.value)


def test_class_weights_dict_with_a_class_the_model_lacks_is_refused():
    with pytest.raises(ConfigError, match="class id 7"):
        CE(class_weights={7: 2.0}).call([0], np.zeros((1, 3), "float32"))
