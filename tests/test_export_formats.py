"""LiteRT and ONNX export: every shipped model, run in its own runtime, matches Keras.

Oracle: the Keras model's own logits on the same images (``model(x, training=False)``).
Tolerance: max abs logit difference <= 1e-4 (float32; measured ~3e-6), arg-max agreement 100 %.
"""

import builtins
import json
import os

import numpy as np
import pytest

from tfcustom import models
from tfcustom.errors import ConfigError
from tfcustom.experiment.export import export_model
from tfcustom.experiment import export_formats as ef

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("tf2onnx")

TOLERANCE = 1e-4


def _images(n=12, shape=(28, 28, 1), seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n,) + shape).astype(np.float32)


@pytest.mark.parametrize("name", models.names())
def test_every_shipped_model_exports_to_litert_and_onnx_matching_keras(tmp_path, name):
    x = _images()
    model = models.get(name, num_classes=10)
    expected = np.asarray(model(x, training=False))
    paths = export_model(model, tmp_path, input_shape=(28, 28, 1), formats=("saved_model", "litert", "onnx"),
                         check_images=x)
    assert set(paths) == {"keras", "saved_model", "litert", "onnx"}
    # Re-run the written files independently of export_model's own check, on other images too.
    for images in (x, _images(5, seed=1)):
        ref = np.asarray(model(images, training=False))
        for run, path in ((ef.run_litert, paths["litert"]), (ef.run_onnx, paths["onnx"])):
            got = run(path, images)
            assert got.shape == ref.shape
            assert np.max(np.abs(got - ref)) <= TOLERANCE
            np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(ref, -1))
    report = json.load(open(os.path.join(tmp_path, "export_check.json")))
    for fmt in ("litert", "onnx"):
        assert report[fmt]["argmax_agreement"] == 1.0
        assert report[fmt]["max_abs_diff"] == pytest.approx(
            float(np.max(np.abs({"litert": ef.run_litert, "onnx": ef.run_onnx}[fmt](paths[fmt], x) - expected))), abs=1e-7)
        assert report[fmt]["bytes"] == os.path.getsize(paths[fmt]) > 0
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_disagreeing_export_is_refused_and_deleted(tmp_path, monkeypatch):
    model = models.get("logistic_regression", num_classes=3)
    x = _images(4)
    model(x)
    monkeypatch.setitem(ef.RUNNERS, "onnx", lambda path, images: np.asarray(model(images)) + 1.0)
    with pytest.raises(ConfigError, match="disagrees with Keras"):
        ef.export_formats(model, str(tmp_path), ("onnx",), x)
    assert os.listdir(tmp_path) == []


def test_missing_runtime_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("onnxruntime"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(ef.importlib, "import_module", lambda name: fake_import(name))
    model = models.get("mlp", num_classes=10)
    model(_images(1))
    with pytest.raises(ConfigError) as e:
        export_model(model, tmp_path, formats=("onnx",))
    assert "tfcustom[export]" in str(e.value) and "onnxruntime" in str(e.value) and "\n" not in str(e.value)
    assert os.listdir(tmp_path) == []  # refused before anything is written


def test_unknown_format_and_existing_file_are_refused(tmp_path):
    model = models.get("logistic_regression", num_classes=3)
    model(_images(1))
    with pytest.raises(ConfigError, match="unknown export format"):
        export_model(model, tmp_path, formats=("tflite",))
    (tmp_path / "model.onnx").write_text("old")
    with pytest.raises(ConfigError, match="already exists"):
        export_model(model, tmp_path, formats=("onnx",))
    assert (tmp_path / "model.onnx").read_text() == "old"


def test_trainer_export_formats_flag_writes_checked_files(tmp_path, small_idx_dir):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    out = tmp_path / "run"
    args = ["--model=mlp", "--epochs=1", "--batch_size=64", "--validation_size=200", f"--data_dir={small_idx_dir}",
            f"--output_dir={out}", "--verbose=0", "--seed=3", "--export_formats=saved_model,litert,onnx"]
    proc = subprocess.run([sys.executable, "-m", "tfcustom.cli.train", *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.tflite").stat().st_size > 0 and (out / "model.onnx").stat().st_size > 0
    report = json.loads((out / "export_check.json").read_text())
    assert {k: report[k]["argmax_agreement"] for k in ("litert", "onnx")} == {"litert": 1.0, "onnx": 1.0}
    bad = subprocess.run([sys.executable, "-m", "tfcustom.cli.train", *args[:-1], "--export_formats=tflite", "--overwrite"],
                         capture_output=True, text=True, timeout=600, env=env, cwd=root)
    assert bad.returncode != 0 and "unknown export format" in bad.stderr and "Traceback" not in bad.stderr
