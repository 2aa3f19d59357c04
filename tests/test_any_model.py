"""Any model ``keras.Model.fit`` trains, the Trainer trains with the same numbers (issue #20, items 1-2).

Oracle: ``keras.Model.fit`` / ``evaluate`` on the same initial weights, data,
loss, optimizer and metric names (tests/any_model_cases.py): regression (MSE,
``mae``), binary sigmoid (``accuracy``, ``auc``, ``precision``), one-hot
categorical, sparse softmax probabilities (``acc``), sparse logits, dict
inputs, masked Embedding+LSTM, per-pixel labels, mixed float16 with
``LossScaleOptimizer``, ``sample_weight`` and ``class_weight``. Same metric
names, values to 1e-5 (float16: 1e-4), on 1 replica (in process) and on 2 logical CPUs (a
subprocess, started first so that both run at once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfcustom
from tfcustom.errors import ConfigError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import any_model_cases  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5


def _assert_same(name, want, got):
    tol = any_model_cases.cases()[name.split(" ")[0]].get("tol", TOL)
    assert set(got) == set(want), (name, sorted(want), sorted(got))
    for k in want:
        assert abs(got[k] - want[k]) <= tol * max(1.0, abs(want[k])), (name, k, want[k], got[k])


@pytest.fixture(scope="module")
def two_replica_run():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "any_model_cases.py"), "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def test_every_case_evaluates_as_fit_on_one_and_two_replicas(two_replica_run):
    for name, (want, got, train_want, train_got) in any_model_cases.run_all().items():
        _assert_same(name, want, got)
        _assert_same(name + " (training logs)", train_want, train_got)
    out, err = two_replica_run.communicate(timeout=600)
    assert two_replica_run.returncode == 0, err[-4000:]
    results = json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][-1][len("RESULT "):])
    assert set(results) == set(any_model_cases.cases())
    for name, (want, got, train_want, train_got) in results.items():
        _assert_same(name + " on 2 replicas", want, got)
        _assert_same(name + " on 2 replicas (training logs)", train_want, train_got)


def test_accuracy_resolves_like_compile():
    """Keras' compile picks binary / sparse / categorical accuracy from the shapes; so does the Trainer."""
    from tfcustom.training.compile_metrics import auto_accuracy

    y_bin, p_bin = np.array([1.0, 0.0, 1.0]), np.array([[0.9], [0.4], [0.2]])
    np.testing.assert_allclose(auto_accuracy(y_bin, p_bin), keras.metrics.binary_accuracy(y_bin, p_bin))
    y_ids, p = np.array([2, 0]), np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    np.testing.assert_allclose(auto_accuracy(y_ids, p), keras.metrics.sparse_categorical_accuracy(y_ids, p))
    y_hot = np.eye(3)[[1, 0]]
    np.testing.assert_allclose(auto_accuracy(y_hot, p), keras.metrics.categorical_accuracy(y_hot, p))
    from tfcustom.training.compile_args import metric_from_spec

    m = metric_from_spec("accuracy", None)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
    assert again.name == "accuracy" and again._fn is auto_accuracy


def test_keras_metric_names_are_kept_and_logits_still_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    trainer = tfcustom.Trainer(model, "mse", "sgd", metrics=["mae", "auc", "AUC"], verbose=0)
    assert [m.name for m in trainer.train_metrics] == ["mae", "auc", "AUC"]
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(8,)).astype("float32")
    assert set(trainer.fit((x, y), epochs=1, batch_size=4).records[-1]) >= {"loss", "mae", "auc", "AUC"}
    logits = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    bad = tfcustom.Trainer(logits, "sparse_categorical_crossentropy", "sgd", verbose=0)
    with pytest.raises(ConfigError, match="from_logits=False"):
        bad.fit((x, np.arange(8) % 4), epochs=1, batch_size=4)


def test_multi_output_pieces_round_trip_and_refuse_stray_loss_weights():
    from tfcustom.training.compile_args import resolve_loss
    from tfcustom.training.compile_loss import MultiOutputLoss, OutputLoss
    from tfcustom.training.compile_metrics import OutputMetric, accuracy

    ser, de = keras.saving.serialize_keras_object, keras.saving.deserialize_keras_object
    y = {"a": np.array([1.0, 0.0]), "b": np.array([[0.5], [2.0]])}
    p = {"a": np.array([[0.8], [0.3]]), "b": np.array([[0.0], [1.0]])}
    loss = resolve_loss({"a": "binary_crossentropy", "b": "mse"}, {"b": 0.5})
    again = de(ser(loss))
    assert isinstance(again, MultiOutputLoss) and again.loss_weights == {"a": 1.0, "b": 0.5}
    want = keras.losses.binary_crossentropy(y["a"][:, None], p["a"]) + 0.5 * keras.losses.mean_squared_error(y["b"], p["b"])
    np.testing.assert_allclose(again.call(y, p), want, rtol=1e-6)
    out_loss = de(ser(OutputLoss(keras.losses.MeanSquaredError(), "b")))
    out_loss.update_state(y, p)
    assert out_loss.name == "b_loss" and float(out_loss.result()) == pytest.approx(float(np.mean((y["b"] - p["b"]) ** 2)))
    metric = de(ser(OutputMetric(accuracy(), "a")))
    metric.update_state(y, p)
    assert metric.name == "a_accuracy" and float(metric.result()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="loss_weights applies to a dict or list"):
        resolve_loss("mse", {"a": 1.0})


def test_predict_of_a_two_output_model_is_keras_predict():
    """A dict-output model: Trainer.predict returns the same dict of arrays as model.predict (uneven last batch)."""
    inp = keras.Input((4,))
    h = keras.layers.Dense(8, activation="relu")(inp)
    model = keras.Model(inp, {"cls": keras.layers.Dense(1, activation="sigmoid", name="cls")(h),
                              "reg": keras.layers.Dense(2, name="reg")(h)})
    x = np.random.default_rng(0).normal(size=(30, 4)).astype("float32")
    trainer = tfcustom.Trainer(model, {"cls": "binary_crossentropy", "reg": "mse"}, "adam", metrics={"cls": ["accuracy"]}, verbose=0)
    got, want = trainer.predict(x, batch_size=8), model.predict(x, batch_size=8, verbose=0)
    assert set(got) == set(want) == {"cls", "reg"}
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)


def test_compile_weighted_metrics_is_refused_in_one_line_naming_the_fix():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ConfigError, match=r"weighted_metrics .*Pass them as metrics="):
        tfcustom.Trainer(model, "mse", "sgd", weighted_metrics=["mae"])
