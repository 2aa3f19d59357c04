"""examples/evaluate.py and examples/predict.py on a real (small) run, as a user runs them."""

import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcustom
from tfcustom.data import load
from tfcustom.errors import ConfigError
from tfcustom.experiment.export import build_run_model, evaluate_run, load_predictor, read_png_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def run_example(name, *args, timeout=300):
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=ROOT)


def error_line(proc):
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_idx_dir):
    """A finished run of the example trainer (fresh process, as a user makes one)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    proc = run_example("train.py", "--model=mlp", "--model_kwargs={\"hidden_units\": [32]}", "--epochs=2", "--batch_size=64",
                       "--validation_size=200", f"--data_dir={small_idx_dir}", f"--output_dir={out}", "--verbose=0", "--seed=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_run_directory_holds_both_exports(run_dir, small_idx_dir):
    assert (run_dir / "model.keras").is_file() and (run_dir / "saved_model" / "saved_model.pb").is_file()
    assert not [p for p in os.listdir(run_dir) if p.startswith(".tmp-")]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["saved_model_path"] == str(run_dir / "saved_model")
    x = load("fashion_mnist", small_idx_dir).test.x[:8].astype("float32") / 255.0
    keras_model = keras.models.load_model(str(run_dir / "model.keras"))
    saved = tf.saved_model.load(str(run_dir / "saved_model"))
    np.testing.assert_allclose(saved.serve(x).numpy(), keras_model(x).numpy(), atol=1e-5)


def test_evaluate_final_reproduces_the_reported_test_metrics(run_dir, small_idx_dir):
    results = json.loads((run_dir / "results.json").read_text())
    logs = evaluate_run(str(run_dir), "final", small_idx_dir)
    assert logs["examples"] == 300
    assert logs["accuracy"] == pytest.approx(results["test"]["accuracy"], abs=1e-6)
    assert logs["loss"] == pytest.approx(results["test"]["loss"], abs=1e-5)

    proc = run_example("evaluate.py", f"--run_dir={run_dir}", "--checkpoint=final", f"--data_dir={small_idx_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = dict(re.findall(r"(\w+)=([0-9.]+)", proc.stdout))
    assert float(printed["accuracy"]) == pytest.approx(results["test"]["accuracy"], abs=1e-4)
    assert float(printed["loss"]) == pytest.approx(results["test"]["loss"], abs=1e-4)
    assert "300 examples" in proc.stdout


def test_evaluate_latest_restores_the_newest_checkpoint(run_dir, small_idx_dir, tmp_path):
    """The checkpoint path: the model is rebuilt from config.json and restored.

    Oracle: a copy of the run gets a newest checkpoint holding known, perturbed
    weights; evaluating "latest" equals evaluating that model directly, and
    differs from "final".
    """
    from tfcustom.training.checkpoint import model_checkpoint
    from tfcustom.experiment.config import TrainConfig

    # The run's own checkpoints (written by the Trainer at each epoch end): the
    # latest holds the final weights; the best one restores too.
    final = evaluate_run(str(run_dir), "final", small_idx_dir)
    assert evaluate_run(str(run_dir), "latest", small_idx_dir)["loss"] == pytest.approx(final["loss"], abs=1e-6)
    assert 0.0 < evaluate_run(str(run_dir), "best", small_idx_dir)["accuracy"] <= 1.0

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    model = build_run_model(config, 10)
    model.set_weights(keras.models.load_model(str(run / "model.keras")).get_weights())
    rng = np.random.default_rng(0)
    for w in model.trainable_weights:
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
    manager = tf.train.CheckpointManager(model_checkpoint(model), str(run / "checkpoints"), max_to_keep=10)
    manager.save(checkpoint_number=10 ** 6)  # newer than any the run wrote

    ds = load("fashion_mnist", small_idx_dir)
    direct = model(ds.test.x.astype("float32") / 255.0, training=False).numpy()
    expected_acc = float(np.mean(direct.argmax(1) == ds.test.y))
    latest = evaluate_run(str(run), "latest", small_idx_dir)
    assert latest["accuracy"] == pytest.approx(expected_acc, abs=1e-6)
    assert latest["loss"] != pytest.approx(evaluate_run(str(run), "final", small_idx_dir)["loss"], abs=1e-4)

    shutil.rmtree(run / "checkpoints")
    with pytest.raises(ConfigError, match="run has no latest checkpoint"):
        evaluate_run(str(run), "latest", small_idx_dir)
    with pytest.raises(ConfigError, match="run has no best checkpoint"):
        evaluate_run(str(run), "best", small_idx_dir)


def test_evaluate_user_errors(run_dir, small_idx_dir):
    # As a user meets them: one line, exit code 2.
    proc = run_example("evaluate.py", "--run_dir=/nonexistent/run", f"--data_dir={small_idx_dir}")
    assert proc.returncode == 2
    assert "run directory does not exist (received: '/nonexistent/run')" in error_line(proc)
    # The same template from the library (no extra processes).
    with pytest.raises(ConfigError, match=r"unknown checkpoint \(received: 'newest'\). Choose one of: final, latest, best"):
        evaluate_run(str(run_dir), "newest", small_idx_dir)
    with pytest.raises(ConfigError, match=r"unknown split \(received: 'dev'\)"):
        evaluate_run(str(run_dir), "final", small_idx_dir, split="dev")


def _write_png(path, image):
    tf.io.write_file(str(path), tf.io.encode_png(image))


def test_predict_pngs_and_idx_with_both_exports(run_dir, small_idx_dir, tmp_path):
    ds = load("fashion_mnist", small_idx_dir)
    images = ds.test.x[:5]  # uint8 (5, 28, 28, 1)
    model = keras.models.load_model(str(run_dir / "model.keras"))
    x = images.astype("float32") / 255.0
    probs = tf.nn.softmax(model(x, training=False)).numpy()
    names = json.loads((run_dir / "results.json").read_text())["class_names"]
    expected = [names[i] for i in probs.argmax(1)]

    paths = []
    for i, img in enumerate(images):
        paths.append(str(tmp_path / f"img{i}.png"))
        _write_png(paths[-1], img)
    # The last one as a 56x56 RGB PNG: read as grey and resized back to 28x28.
    big = np.repeat(np.repeat(np.repeat(images[4], 2, axis=0), 2, axis=1), 3, axis=2)
    paths[-1] = str(tmp_path / "big_rgb.png")
    _write_png(paths[-1], big)
    np.testing.assert_allclose(read_png_images(paths), x, atol=1.5 / 255)
    np.testing.assert_array_equal(read_png_images(paths[:4]), x[:4])  # grey 28x28: exact

    proc = run_example("predict.py", f"--model={run_dir / 'model.keras'}", "--images=" + ",".join(paths))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [l.split("\t") for l in proc.stdout.strip().splitlines()]
    assert [r[0] for r in rows] == paths
    assert [r[1] for r in rows] == expected
    np.testing.assert_allclose([float(r[2]) for r in rows], probs.max(1), atol=2e-3)

    idx = os.path.join(small_idx_dir, "t10k-images-idx3-ubyte.gz")
    proc = run_example("predict.py", f"--model={run_dir / 'saved_model'}", f"--idx={idx}", "--limit=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [l.split("\t") for l in proc.stdout.strip().splitlines()]
    assert [r[1] for r in rows] == expected
    np.testing.assert_allclose([float(r[2]) for r in rows], probs.max(1), atol=1e-4)


def test_predict_user_errors(run_dir, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    proc = run_example("predict.py", f"--model={run_dir / 'model.keras'}", f"--images={tmp_path / 'notes.png'}")
    assert proc.returncode == 2 and "file is not a PNG image" in error_line(proc)
    with pytest.raises(ConfigError, match="model path does not exist"):
        load_predictor(str(tmp_path / "missing.keras"))
    with pytest.raises(ConfigError, match="directory is not a SavedModel"):
        load_predictor(str(tmp_path))


def test_restore_backbone_from_a_run_directory_and_its_checkpoint(run_dir):
    from tfcustom.experiment.transfer import restore_backbone

    final = keras.models.load_model(str(run_dir / "model.keras"))
    for source in (str(run_dir), str(run_dir / "checkpoints")):  # model.keras; the newest checkpoint
        new = tfcustom.models.get("mlp", num_classes=5, hidden_units=[32])
        new(tf.zeros((1, 28, 28, 1)))
        assert restore_backbone(new, source, exclude=("logits",)) == ["hidden_0"]
        for a, b in zip(new.get_layer("hidden_0").weights, final.get_layer("hidden_0").weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
