"""Tests for tfcustom.metrics against scikit-learn and NumPy oracles.

Data: imbalanced random labels (one class never occurs as a label, one class
is never predicted, so zero_division paths run), random sample weights
(some exactly 0), accumulated over uneven batch sizes.
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as skm

from tfcustom import metrics as M
from tfcustom.errors import ConfigError

C = 6
BATCH_SIZES = [1, 7, 64, 3, 100, 25, 2, 58, 40]  # uneven, 300 examples
ATOL = 1e-6


def _data(seed=0, n=sum(BATCH_SIZES)):
    rng = np.random.default_rng(seed)
    # class 5 never occurs as a label; class 0 dominates
    labels = rng.choice(C, size=n, p=[0.5, 0.22, 0.13, 0.09, 0.06, 0.0])
    logits = rng.normal(size=(n, C)).astype("float32")
    logits[np.arange(n), labels] += 1.2  # better than chance, still many errors
    logits[:, 4] -= 50.0  # class 4 is never predicted
    weights = rng.uniform(0.0, 2.0, size=n).astype("float32")
    weights[rng.random(n) < 0.1] = 0.0
    return labels, logits, weights


def _accumulate(metric, labels, logits, weights=None, label_shape="flat"):
    start = 0
    for size in BATCH_SIZES:
        sl = slice(start, start + size)
        y = labels[sl] if label_shape == "flat" else labels[sl][:, None]
        metric.update_state(y, logits[sl], None if weights is None else weights[sl])
        start += size
    assert start == len(labels)
    return metric.result().numpy()


def _np_ece(labels, logits, weights, num_bins):
    """Guo et al. 2017: bins ((b-1)/M, b/M], ECE = sum_b n_b/N |acc_b - conf_b|."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf = p.max(1)
    correct = (p.argmax(1) == labels).astype(np.float64)
    w = np.ones(len(labels)) if weights is None else weights.astype(np.float64)
    total = w.sum()
    ece = 0.0
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        in_bin = (conf > lo) & (conf <= hi)
        n_b = w[in_bin].sum()
        if n_b > 0:
            acc_b = (w[in_bin] * correct[in_bin]).sum() / n_b
            conf_b = (w[in_bin] * conf[in_bin]).sum() / n_b
            ece += n_b / total * abs(acc_b - conf_b)
    return ece


# --------------------------------------------------------------------------
# the data really exercises the edge cases
# --------------------------------------------------------------------------


def test_fixture_is_imbalanced_with_absent_classes():
    labels, logits, weights = _data()
    preds = logits.argmax(1)
    assert 5 not in labels and 4 not in preds and 5 in preds
    counts = np.bincount(labels, minlength=C)
    assert counts[0] > 4 * counts[4] > 0
    assert (weights == 0).any()


# --------------------------------------------------------------------------
# precision / recall / F1 vs scikit-learn
# --------------------------------------------------------------------------

_SCORES = {"precision": (M.Precision, 0), "recall": (M.Recall, 1), "f1": (M.F1Score, 2)}


@pytest.mark.parametrize("score", sorted(_SCORES))
@pytest.mark.parametrize("average", [None, "macro", "micro", "weighted"])
@pytest.mark.parametrize("weighted", [True, False])
def test_precision_recall_f1_match_sklearn(score, average, weighted):
    cls, index = _SCORES[score]
    labels, logits, weights = _data(seed=1)
    w = weights if weighted else None
    got = _accumulate(cls(num_classes=C, average=average), labels, logits, w)
    expected = skm.precision_recall_fscore_support(
        labels,
        logits.argmax(1),
        labels=list(range(C)),
        average=average,
        sample_weight=w,
        zero_division=0,
    )[index]
    if average is None:
        assert got.shape == (C,)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_labels_of_shape_batch_by_one_and_float_labels():
    labels, logits, weights = _data(seed=2)
    flat = _accumulate(M.F1Score(C, average=None), labels, logits, weights)
    column = _accumulate(M.F1Score(C, average=None), labels, logits, weights, "column")
    as_float = _accumulate(M.F1Score(C, average=None), labels.astype("float32"), logits, weights)
    np.testing.assert_array_equal(flat, column)
    np.testing.assert_array_equal(flat, as_float)


def test_scalar_and_column_sample_weights():
    labels, logits, _ = _data(seed=3)
    m = M.ConfusionMatrix(C)
    m.update_state(labels, logits, sample_weight=2.0)
    np.testing.assert_allclose(
        m.result().numpy(), 2.0 * skm.confusion_matrix(labels, logits.argmax(1), labels=range(C))
    )
    w = np.linspace(0.0, 1.0, len(labels)).astype("float32")
    m2 = M.ConfusionMatrix(C)
    m2.update_state(labels, logits, sample_weight=w[:, None])
    np.testing.assert_allclose(
        m2.result().numpy(),
        skm.confusion_matrix(labels, logits.argmax(1), labels=range(C), sample_weight=w),
        atol=ATOL,
    )


def test_empty_metric_result_is_zero_not_nan():
    for metric in (
        M.Precision(C),
        M.Recall(C, average="weighted"),
        M.F1Score(C, average="micro"),
        M.BalancedAccuracy(C),
        M.ExpectedCalibrationError(),
    ):
        assert float(metric.result()) == 0.0


# --------------------------------------------------------------------------
# confusion matrix, balanced accuracy, ECE
# --------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [True, False])
def test_confusion_matrix_matches_sklearn(weighted):
    labels, logits, weights = _data(seed=4)
    w = weights if weighted else None
    got = _accumulate(M.ConfusionMatrix(C), labels, logits, w)
    expected = skm.confusion_matrix(labels, logits.argmax(1), labels=list(range(C)), sample_weight=w)
    assert got.shape == (C, C)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("weighted", [True, False])
def test_balanced_accuracy_matches_sklearn(weighted):
    labels, logits, weights = _data(seed=5)
    w = weights if weighted else None
    got = _accumulate(M.BalancedAccuracy(C), labels, logits, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        expected = skm.balanced_accuracy_score(labels, logits.argmax(1), sample_weight=w)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("num_bins", [15, 10, 1, 37])
@pytest.mark.parametrize("weighted", [True, False])
def test_expected_calibration_error_matches_numpy(num_bins, weighted):
    labels, logits, weights = _data(seed=6)
    logits = logits * 1.7  # spread the confidences over many bins
    logits[:, 4] = 0.0
    w = weights if weighted else None
    got = _accumulate(M.ExpectedCalibrationError(num_bins=num_bins), labels, logits, w)
    expected = _np_ece(labels, logits, w, num_bins)
    assert expected > 0.01
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_ece_default_bins_and_perfect_calibration_hand_case():
    assert M.ExpectedCalibrationError().num_bins == 15
    # two examples at confidence 0.5 (logits equal), one right one wrong:
    # acc = conf = 0.5 in the same bin -> ECE 0.
    m = M.ExpectedCalibrationError(num_bins=4)
    m.update_state([0, 1], [[0.0, 0.0], [0.0, 0.0]])
    assert float(m.result()) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------
# state handling
# --------------------------------------------------------------------------

_ALL = [
    lambda: M.Precision(C, average=None),
    lambda: M.Recall(C, average="micro"),
    lambda: M.F1Score(C, average="weighted"),
    lambda: M.ConfusionMatrix(C),
    lambda: M.BalancedAccuracy(C),
    lambda: M.ExpectedCalibrationError(num_bins=7),
]


@pytest.mark.parametrize("make", _ALL, ids=lambda f: type(f()).__name__)
def test_reset_state_zeroes(make):
    labels, logits, weights = _data(seed=7)
    metric = make()
    first = _accumulate(metric, labels, logits, weights)
    assert np.any(first != 0)
    metric.reset_state()
    for v in metric.variables:
        assert np.all(np.asarray(v) == 0), v.name
    np.testing.assert_array_equal(metric.result().numpy(), np.zeros_like(first))
    np.testing.assert_allclose(_accumulate(metric, labels, logits, weights), first, atol=1e-12)


@pytest.mark.parametrize("make", _ALL, ids=lambda f: type(f()).__name__)
def test_state_is_sum_aggregated_counts(make):
    metric = make()
    assert metric.variables
    for v in metric.variables:
        assert v.aggregation == "sum", (v.name, v.aggregation)
        assert v.dtype == "float64"


def test_update_inside_tf_function_matches_eager():
    labels, logits, weights = _data(seed=8)
    eager = _accumulate(M.F1Score(C), labels, logits, weights)
    metric = M.F1Score(C)

    @tf.function(reduce_retracing=True)
    def update(y, z, w):
        metric.update_state(y, z, w)

    start = 0
    for size in BATCH_SIZES:
        sl = slice(start, start + size)
        update(labels[sl], logits[sl], weights[sl])
        start += size
    np.testing.assert_allclose(metric.result().numpy(), eager, atol=1e-12)


# --------------------------------------------------------------------------
# invalid labels must not be counted silently
# --------------------------------------------------------------------------


@pytest.mark.parametrize("make", _ALL, ids=lambda f: type(f()).__name__)
@pytest.mark.parametrize("bad", [-1, C])
def test_out_of_range_labels_raise_eagerly_and_in_graph(make, bad):
    labels, logits, _ = _data(seed=9, n=8)
    labels[3] = bad
    metric = make()
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be"):
        metric.update_state(labels, logits)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be"):
        tf.function(metric.update_state)(labels, logits)
    for v in metric.variables:  # nothing was accumulated
        assert np.all(np.asarray(v) == 0)


def test_wrong_number_of_logits_is_a_config_error():
    with pytest.raises(ConfigError, match="one logit per class"):
        M.Precision(C).update_state([0, 1], np.zeros((2, C + 1), "float32"))


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: M.Precision(0), "num_classes"),
        (lambda: M.Recall(2.5), "num_classes"),
        (lambda: M.F1Score(3, average="binary"), "average"),
        (lambda: M.ConfusionMatrix("3"), "num_classes"),
        (lambda: M.BalancedAccuracy(-3), "num_classes"),
        (lambda: M.ExpectedCalibrationError(num_bins=0), "num_bins"),
    ],
)
def test_constructor_validation_uses_error_template(make, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        make()
    assert "(received: " in str(info.value)


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------


def test_registry_builds_each_metric():
    expected = {
        "accuracy": keras.metrics.SparseCategoricalAccuracy,
        "precision": M.Precision,
        "recall": M.Recall,
        "f1": M.F1Score,
        "f1_score": M.F1Score,
        "balanced_accuracy": M.BalancedAccuracy,
        "ece": M.ExpectedCalibrationError,
        "expected_calibration_error": M.ExpectedCalibrationError,
        "confusion_matrix": M.ConfusionMatrix,
    }
    assert M.names() == sorted(expected)
    for name, cls in expected.items():
        metric = M.get(name, C)
        assert type(metric) is cls, name
        if hasattr(metric, "num_classes"):
            assert metric.num_classes == C
    assert M.get("f1", num_classes=3, average="micro").average == "micro"
    assert M.get("ece", C, num_bins=5).num_bins == 5


def test_registry_errors():
    with pytest.raises(ConfigError) as info:
        M.get("auc", C)
    for name in M.names():
        assert name in str(info.value)


@pytest.mark.parametrize("cls", [M.Precision, M.Recall, M.F1Score, M.BalancedAccuracy, M.ConfusionMatrix])
def test_num_classes_is_inferred_from_the_first_batch(cls):
    """Precision() etc. without num_classes, as Keras users write them; oracle: the metric given num_classes."""
    rng = np.random.default_rng(11)
    labels, logits = rng.integers(0, C, 40), rng.normal(size=(40, C)).astype("float32")
    inferred, given = cls(), cls(num_classes=C)
    for m in (inferred, given):
        m.update_state(labels[:25], logits[:25])
        m.update_state(labels[25:], logits[25:])
    assert inferred.num_classes == C and inferred.get_config()["num_classes"] == C
    np.testing.assert_array_equal(inferred.result(), given.result())
    assert M.get(cls().name).num_classes is None  # by name, too
    with pytest.raises(ConfigError, match="y_pred must hold one logit per class"):
        inferred.update_state(labels[:4], logits[:4, :3])


def test_precision_without_num_classes_in_keras_fit():
    """model.compile(metrics=[Precision()]) then fit: the oracle is scikit-learn on the model's predictions."""
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, C, 64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(C)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[M.Precision(), M.F1Score(average="weighted")])
    logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    pred = model.predict(x, verbose=0).argmax(-1)
    assert logs["precision"][0] == pytest.approx(skm.precision_score(y, pred, average="macro", labels=range(C), zero_division=0), abs=1e-6)
    assert logs["f1_score"][0] == pytest.approx(skm.f1_score(y, pred, average="weighted", labels=range(C), zero_division=0), abs=1e-6)


# --------------------------------------------------------------------------
# serialization
# --------------------------------------------------------------------------


@pytest.mark.parametrize("make", _ALL, ids=lambda f: type(f()).__name__)
def test_config_round_trip(make):
    metric = make()
    config = metric.get_config()
    clone = type(metric).from_config(config)
    assert clone.get_config() == config
    labels, logits, weights = _data(seed=10)
    np.testing.assert_array_equal(
        _accumulate(clone, labels, logits, weights), _accumulate(metric, labels, logits, weights)
    )
    serialized = keras.saving.serialize_keras_object(metric)
    assert serialized["registered_name"] == f"tfcustom>{type(metric).__name__}"
    restored = keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    assert type(restored) is type(metric) and restored.get_config() == config


def _find_metrics(model):
    """All leaf metrics of a compiled model, through the public .metrics API."""
    found, stack = [], list(model.metrics)
    while stack:
        m = stack.pop()
        children = getattr(m, "metrics", None)
        if children:
            stack.extend(children)
        else:
            found.append(m)
    return found


def test_save_and_load_in_compiled_keras_model(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(61, 4)).astype("float32")
    y = rng.choice(C, size=61, p=[0.4, 0.3, 0.1, 0.1, 0.1, 0.0])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(C)])
    originals = [
        M.Precision(C, average="weighted", name="p_w"),
        M.Recall(C, average="macro"),
        M.F1Score(C, average="micro"),
        M.BalancedAccuracy(C),
        M.ExpectedCalibrationError(num_bins=10),
    ]
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=originals,
    )
    # uneven last batch (61 = 3 * 16 + 13), graph mode
    before = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    preds = model.predict(x, verbose=0).argmax(1)
    np.testing.assert_allclose(
        before["p_w"],
        skm.precision_score(y, preds, labels=range(C), average="weighted", zero_division=0),
        atol=ATOL,
    )
    np.testing.assert_allclose(
        before["f1_score"], skm.f1_score(y, preds, labels=range(C), average="micro"), atol=ATOL
    )

    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    after = reloaded.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    by_name = {m.name: m for m in _find_metrics(reloaded)}
    for original in originals:
        again = by_name[original.name]
        assert type(again) is type(original)
        assert again.get_config() == original.get_config()
        np.testing.assert_allclose(after[original.name], before[original.name], atol=1e-7)
