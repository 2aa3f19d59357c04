"""examples/sweep.py's library function: runs, resumes after an interruption, csv and plot."""

import csv
import json
import logging
import os
import signal
import threading
import time

import pytest
import tensorflow as tf


def test_expand_grid_and_settings():
    from tfcustom import TrainConfig
    from tfcustom.errors import ConfigError
    from tfcustom.experiment.sweep import apply_settings, expand_grid, pareto_front, run_name

    runs = expand_grid({"model": ["mlp", "cnn"], "model_kwargs.dropout": [0, 0.2], "learning_rate": [1e-3]})
    assert runs == [{"model": m, "model_kwargs.dropout": d, "learning_rate": 1e-3} for m in ("mlp", "cnn") for d in (0, 0.2)]
    config = apply_settings(TrainConfig(model_kwargs={"hidden_units": [64]}), {"model": "mlp", "model_kwargs.dropout": 0.2})
    assert config.model == "mlp" and config.model_kwargs == {"hidden_units": [64], "dropout": 0.2}
    assert run_name({"model_kwargs.hidden_units": [256, 128], "learning_rate": 0.003}) == "hidden_units=256x128,learning_rate=0.003"
    with pytest.raises(ConfigError, match="unknown config field in the grid"):
        apply_settings(TrainConfig(), {"lerning_rate": 1e-3})
    with pytest.raises(ConfigError, match="non-empty list"):
        expand_grid({"model": "mlp"})
    # (time, accuracy): the second is slower and worse than the first.
    assert pareto_front([(1.0, 0.8), (2.0, 0.7), (3.0, 0.9), (0.5, 0.6)]) == [3, 0, 2]


def test_sweep_resumes_after_an_interruption(tmp_path, small_idx_dir, caplog):
    """Two runs; Ctrl-C during the second. Again: the first is skipped, the second resumes."""
    from tfcustom import TrainConfig
    from tfcustom.data import load
    from tfcustom.distribute.preemption import TrainingInterrupted
    from tfcustom.experiment.sweep import run_sweep

    dataset = load("fashion_mnist", small_idx_dir)
    base = TrainConfig(model="mlp", epochs=2, batch_size=32, validation_size=200, verbose=0, checkpoint_every_steps=4, log_every_steps=8)
    grid = {"model_kwargs.hidden_units": [[16], [32]]}
    out = tmp_path / "sweep"
    second = out / "hidden_units=32" / "checkpoints" / "checkpoint"

    def interrupt_when_the_second_run_saved():
        deadline = time.time() + 300
        while not second.exists() and time.time() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # handled by the training loop (saves, then stops)

    thread = threading.Thread(target=interrupt_when_the_second_run_saved, daemon=True)
    thread.start()
    with pytest.raises(TrainingInterrupted):
        run_sweep(base, grid, str(out), dataset=dataset)
    thread.join()
    first_results = out / "hidden_units=16" / "results.json"
    assert first_results.exists() and not (out / "hidden_units=32" / "results.json").exists()
    finished_at = first_results.stat().st_mtime_ns

    with caplog.at_level(logging.INFO, logger="absl"):
        rows = run_sweep(base, grid, str(out), dataset=dataset)
    messages = [r.getMessage() for r in caplog.records]
    assert any("hidden_units=16: finished before, skipped" in m for m in messages)
    assert any(m.startswith("Resumed from") and "hidden_units=32" in m for m in messages)
    assert first_results.stat().st_mtime_ns == finished_at  # skipped, not trained again
    assert [r["run"] for r in rows] == ["hidden_units=16", "hidden_units=32"]
    with open(out / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == [r["run"] for r in rows]
    for row, name in zip(table, ("hidden_units=16", "hidden_units=32")):
        results = json.loads((out / name / "results.json").read_text())
        history = results["history"]
        assert len(history) == 2
        assert float(row["test_accuracy"]) == pytest.approx(results["test"]["accuracy"])
        assert float(row["best_val_accuracy"]) == pytest.approx(max(r["val_accuracy"] for r in history))
        hidden = json.loads(row["model_kwargs.hidden_units"])[0]
        assert int(row["parameters"]) == 784 * hidden + hidden + hidden * 10 + 10  # Dense(784->h), Dense(h->10)
    png = tf.io.decode_png((out / "sweep.png").read_bytes())
    assert png.shape[1] > 600 and png.shape[0] > 300
    # Every run's TensorBoard summaries under the sweep directory.
    assert sorted(p.split(os.sep)[0] for p in (os.path.relpath(d, out) for d in out.glob("*/tensorboard/validation"))) == [r["run"] for r in rows]
