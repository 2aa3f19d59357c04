"""Atomic export (.keras + SavedModel) and reloading it in a fresh process."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcustom
from tfcustom.errors import ConfigError
from tfcustom.experiment.export import export_model

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def _model():
    """A small CNN with random (non-initial) weights, BatchNorm statistics included."""
    keras.utils.set_random_seed(5)
    model = tfcustom.models.get("cnn", num_classes=10, filters=[4, 8], dense_units=8)
    model(tf.zeros((1, 28, 28, 1)), training=False)
    rng = np.random.default_rng(1)
    for w in model.weights:
        value = rng.normal(0, 0.3, w.shape).astype("float32")
        w.assign(np.abs(value) + 0.5 if "variance" in w.path else value)
    return model


def _images(n=16):
    return np.random.default_rng(2).random((n, 28, 28, 1)).astype("float32")


def test_export_reloads_in_a_fresh_process_with_the_same_predictions(tmp_path):
    model = _model()
    x = _images()
    expected = model(x, training=False).numpy()
    paths = export_model(model, str(tmp_path / "export"))
    assert paths == {"keras": str(tmp_path / "export" / "model.keras"), "saved_model": str(tmp_path / "export" / "saved_model")}
    assert sorted(os.listdir(tmp_path / "export")) == ["model.keras", "saved_model"]  # no temporary leftovers
    np.save(tmp_path / "x.npy", x)
    # Both checks in one fresh process: the SavedModel first, before anything imports tfcustom.
    script = f"""
import sys, numpy as np, tensorflow as tf
x = np.load({str(tmp_path / 'x.npy')!r})
sm = tf.saved_model.load({paths['saved_model']!r})
serve = sm.serve(tf.constant(x)).numpy()
out = sm.signatures["serving_default"](images=tf.constant(x))
assert "tfcustom" not in sys.modules
import keras, tfcustom
k = keras.models.load_model({paths['keras']!r}, safe_mode=True)
np.savez({str(tmp_path / 'out.npz')!r}, serve=serve, logits=out["logits"].numpy(), probs=out["probabilities"].numpy(),
         ids=out["class_ids"].numpy(), keras=k(x, training=False).numpy())
print(type(k).__name__)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "CNN"
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["serve"], expected, atol=1e-5)
    np.testing.assert_allclose(out["keras"], expected, atol=1e-5)
    np.testing.assert_allclose(out["logits"], expected, atol=1e-5)
    np.testing.assert_allclose(out["probs"], tf.nn.softmax(expected).numpy(), atol=1e-5)
    np.testing.assert_array_equal(out["ids"], expected.argmax(-1))


def test_existing_export_without_overwrite_is_refused_and_left_intact(tmp_path):
    model = _model()
    d = tmp_path / "export"
    d.mkdir()
    (d / "model.keras").write_bytes(b"old model")
    with pytest.raises(ConfigError, match=r"export path already exists .*model.keras.*overwrite"):
        export_model(model, str(d))
    assert sorted(os.listdir(d)) == ["model.keras"] and (d / "model.keras").read_bytes() == b"old model"

    # With overwrite both are replaced, and the result is a loadable export.
    export_model(model, str(d), overwrite=True)
    assert sorted(os.listdir(d)) == ["model.keras", "saved_model"]
    reloaded = keras.models.load_model(str(d / "model.keras"))
    np.testing.assert_allclose(reloaded(_images(4)).numpy(), model(_images(4)).numpy(), atol=1e-6)
    # An existing SavedModel directory alone is also refused.
    os.remove(d / "model.keras")
    with pytest.raises(ConfigError, match="saved_model"):
        export_model(model, str(d))
    assert sorted(os.listdir(d)) == ["saved_model"]


def test_failure_mid_export_leaves_no_partial_export(tmp_path, monkeypatch):
    model = _model()

    def broken_save(obj, export_dir, *args, **kwargs):
        """The SavedModel write dies halfway: some files written, then an error."""
        os.makedirs(os.path.join(export_dir, "variables"))
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    fresh = tmp_path / "fresh"
    with pytest.raises(OSError, match="simulated"):
        export_model(model, str(fresh))
    assert os.listdir(fresh) == []  # neither the final paths nor temporary files

    # Overwriting a good export: the failure leaves the old one as it was.
    monkeypatch.undo()
    old = tmp_path / "old"
    export_model(model, str(old))
    before = {p: (old / p).stat().st_mtime_ns for p in ("model.keras", "saved_model/saved_model.pb")}
    keras_bytes = (old / "model.keras").read_bytes()
    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(OSError):
        export_model(_model(), str(old), overwrite=True)
    assert sorted(os.listdir(old)) == ["model.keras", "saved_model"]
    assert (old / "model.keras").read_bytes() == keras_bytes
    assert {p: (old / p).stat().st_mtime_ns for p in before} == before


def test_export_argument_errors(tmp_path):
    model = _model()
    with pytest.raises(ConfigError, match="must be a file name ending in .keras"):
        export_model(model, str(tmp_path), keras_name="model.h5")
    unbuilt = tfcustom.models.get("mlp", num_classes=3)
    with pytest.raises(ConfigError, match="built keras.Model"):
        export_model(unbuilt, str(tmp_path / "u"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        export_model(model, str(tmp_path / "file"))
    assert not (tmp_path / "u").exists()


def test_export_of_a_mirrored_model_matches(tmp_path):
    """The model of a tf.distribute run (built under a strategy scope) exports the same."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _model()
    x = _images(4)
    paths = export_model(model, str(tmp_path / "e"), input_shape=(28, 28, 1))
    reloaded = tf.saved_model.load(paths["saved_model"])  # keep a reference: its variables live with it
    np.testing.assert_allclose(reloaded.serve(x).numpy(), model(x, training=False).numpy(), atol=1e-5)
