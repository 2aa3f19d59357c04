"""``--model=package.module:function``: a user's own model in the absl trainer (tests/user_models.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_cli import ROOT, error_line, small_args

TESTS = os.path.join(ROOT, "tests")


def run_with_user_models(script, *args):
    """Run an example with tests/ on PYTHONPATH, so ``user_models`` imports as a user's package would."""
    path = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONPATH=path)
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


def test_user_model_trains_and_its_run_rebuilds_from_config(tmp_path, small_idx_dir):
    import keras

    from tfcustom.data import load

    out = tmp_path / "run"
    args = small_args(small_idx_dir, out, "--model=user_models:small_mlp", '--model_kwargs={"units": 8}', "--epochs=1", "--notensorboard", "--nojit_compile", "--precision=float32")
    proc = run_with_user_models("train.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["model"] == "user_models:small_mlp"
    model = keras.models.load_model(str(out / "model.keras"))
    assert [l.units for l in model.layers if isinstance(l, keras.layers.Dense)] == [8, 10]  # the kwargs reached the function
    ds = load("fashion_mnist", small_idx_dir)
    accuracy = float(np.mean(model.predict(ds.test.x.astype("float32") / 255.0, verbose=0).argmax(1) == ds.test.y))
    # examples/evaluate.py rebuilds the model from config.json (the user's function) and restores the checkpoint.
    proc = run_with_user_models("evaluate.py", f"--run_dir={out}", "--checkpoint=latest", f"--data_dir={small_idx_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = dict(kv.split("=") for kv in proc.stdout.split(":", 1)[1].split())
    assert float(printed["accuracy"]) == pytest.approx(accuracy, abs=1e-4)


@pytest.mark.parametrize("model, message", [
    ("no_such_module:make", "cannot import the model's module 'no_such_module'"),
    ("user_models:no_model", "the user model function did not return a keras.Model"),
])
def test_user_model_errors_are_one_line_exit_2(tmp_path, small_idx_dir, model, message):
    out = tmp_path / "run"
    proc = run_with_user_models("train.py", *small_args(small_idx_dir, out, f"--model={model}"))
    assert proc.returncode == 2
    assert message in error_line(proc)
    assert "Traceback" not in proc.stderr
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("model, kwargs, message", [
    ("user_models:missing", {}, "module 'user_models' has no attribute 'missing'"),
    ("user_models:NOT_CALLABLE", {}, "the user model is not callable"),
    ("user_models:small_mlp", {"unitz": 3}, "unknown argument(s) for model 'user_models:small_mlp' (received: ['unitz'])"),
    ("user_models:small_mlp", {"num_classes": 3}, "model_kwargs may not set arguments the trainer passes"),
    ("user_models:", {}, "a user model must be written module:function"),
])
def test_user_model_config_errors(model, kwargs, message):
    from tfcustom import ConfigError, TrainConfig

    with pytest.raises(ConfigError) as e:
        TrainConfig(model=model, model_kwargs=kwargs).validate()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_user_model_build_passes_num_classes_and_input_shape():
    from tfcustom.experiment import user_model

    model = user_model.build("user_models:small_mlp", 5, (4, 3), units=7)
    assert model.input_shape == (None, 4, 3) and model.output_shape == (None, 5)
