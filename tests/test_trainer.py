import json

import keras
import numpy as np
import pytest

from tfcustom import EarlyStopping, History, Trainer
from tfcustom.data import InputPipeline, Split
from tfcustom.errors import ConfigError, NonFiniteLossError

L = keras.layers


def _data(n=200, d=10, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    w = rng.normal(size=(d, k))
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(n, k)), axis=1).astype("int32")
    return x, y


def _model(d=10, k=3, dropout=0.0):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((d,)), L.Dense(16, activation="relu"), L.Dropout(dropout), L.Dense(k)])


def _trainer(model, **kw):
    return Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.Adam(1e-2), ["accuracy"], verbose=0, **kw)


def test_evaluate_is_exact_against_numpy():
    x, y = _data(203)
    model = _model()
    t = _trainer(model)
    logs = t.evaluate(InputPipeline(Split(x, y), 64))
    logits = model.predict(x, verbose=0).astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    assert logs["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y), abs=1e-7)
    assert logs["loss"] == pytest.approx(-np.mean(logp[np.arange(203), y]), rel=1e-5)


def test_predict_keeps_input_order():
    x, y = _data(77)
    model = _model()
    t = _trainer(model)
    np.testing.assert_allclose(t.predict(InputPipeline(Split(x, y), 16)), model(x, training=False).numpy(), atol=1e-6)


def test_fit_learns_and_writes_history(tmp_path):
    x, y = _data(400)
    t = _trainer(_model(), output_dir=str(tmp_path))
    h = t.fit(InputPipeline(Split(x[:300], y[:300]), 32, shuffle=True), 5, InputPipeline(Split(x[300:], y[300:]), 50))
    assert len(h) == 5 and h["epoch"] == [1, 2, 3, 4, 5]
    assert h["loss"][-1] < h["loss"][0] and h["val_accuracy"][-1] > 0.6
    records = json.loads((tmp_path / "history.json").read_text())
    assert records == h.records
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0].split(",")[:4] == ["epoch", "loss", "accuracy", "val_loss"] and len(lines) == 6
    h.plot(str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert History.read(str(tmp_path)).records == h.records


def test_early_stopping_stops_and_restores_best():
    x, y = _data(300)
    model = _model()
    t = _trainer(model)
    # A validation set whose labels are noise: val_loss soon rises as the model fits train.
    rng = np.random.default_rng(1)
    val = InputPipeline(Split(x[:100], rng.integers(0, 3, 100).astype("int32")), 50)
    es = EarlyStopping("val_loss", patience=2, restore_best=True)
    h = t.fit(InputPipeline(Split(x, y), 32, shuffle=True), 30, val, early_stopping=es)
    best = int(np.argmin(h["val_loss"]))
    assert len(h) < 30
    assert len(h) == best + 1 + 2  # stopped `patience` epochs after the best
    assert int(es.best_epoch.numpy()) == best + 1
    # Restored weights give the best epoch's validation loss.
    assert t.evaluate(val)["loss"] == pytest.approx(h["val_loss"][best], rel=1e-5)


def test_early_stopping_mode_and_bad_monitor():
    assert EarlyStopping("val_accuracy").mode == "max"
    assert EarlyStopping("val_loss").mode == "min"
    with pytest.raises(ConfigError, match="patience"):
        EarlyStopping(patience=-1)
    x, y = _data(64)
    t = _trainer(_model())
    with pytest.raises(ConfigError, match="monitors a value the epoch logs do not have"):
        t.fit(InputPipeline(Split(x, y), 32), 2, early_stopping=EarlyStopping("val_f1"))


def test_learning_rate_schedule_is_followed():
    x, y = _data(64)
    sched = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.01])
    t = Trainer(_model(), keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.SGD(sched), verbose=0)
    h = t.fit(InputPipeline(Split(x, y), 32), 2)
    assert h["learning_rate"] == [pytest.approx(0.1), pytest.approx(0.01)]


def test_nonfinite_loss_stops_with_a_message():
    x, y = _data(64)
    x[50] = np.nan
    t = _trainer(_model())
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2 \(batch 1 of the epoch\).*--on_nonfinite=skip"):
        t.fit(InputPipeline(Split(x, y), 32), 1)
    assert all(np.all(np.isfinite(w)) for w in t.model.get_weights())


def test_constructor_validation():
    model = _model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ConfigError, match="steps_per_execution must be a positive integer"):
        Trainer(model, loss, keras.optimizers.Adam(), steps_per_execution=0)
    with pytest.raises(ConfigError, match="loss must be a keras.losses.Loss, a loss name or a function"):
        Trainer(model, 3, keras.optimizers.Adam())
    with pytest.raises(ConfigError, match="unknown loss name"):
        Trainer(model, "sparse_crossentropy", keras.optimizers.Adam())
    with pytest.raises(ConfigError, match="unknown optimizer name"):
        Trainer(model, loss, "adamm")
    unbuilt = keras.Sequential([L.Dense(3)])
    with pytest.raises(ConfigError, match="no trainable variables yet"):
        Trainer(unbuilt, loss, keras.optimizers.Adam())
    with pytest.raises(ConfigError, match="unknown on_nonfinite policy"):
        Trainer(model, loss, keras.optimizers.Adam(), on_nonfinite="ignore")
