"""Files written by an older tfcustom load and resume on this one (issue #21: the layout move).

tests/fixtures/legacy/ was written by tests/fixtures/make_legacy.py on main before the
modules moved into packages: a finished run's ``model.keras`` (with its softmax on 16
test images) and a run directory SIGKILLed in its second epoch. Oracles: the saved
predictions, and an uninterrupted run of the same command on this code (bitwise).
"""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np

import tfcustom  # noqa: F401  (registers the custom objects, as a user's script does)
import legacy_fixture
from process_helpers import assert_same_weights, history_without_times

LEGACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "legacy")


def _train(data, out):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, *legacy_fixture.args(data, out, epochs=2)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=legacy_fixture.ROOT)


def test_an_old_model_keras_loads_and_predicts_the_same(small_idx_dir):
    saved = np.load(os.path.join(LEGACY, "predictions.npz"))
    model = keras.models.load_model(os.path.join(LEGACY, "model.keras"))
    np.testing.assert_array_equal(saved["x"], legacy_fixture.test_images(small_idx_dir))
    np.testing.assert_allclose(model.predict(saved["x"], verbose=0), saved["p"], rtol=0, atol=1e-6)


def test_an_old_checkpoint_resumes_to_the_uninterrupted_run(small_idx_dir, tmp_path):
    resumed, fresh = str(tmp_path / "resumed"), str(tmp_path / "fresh")
    shutil.copytree(os.path.join(LEGACY, "run"), resumed)
    first = _train(small_idx_dir, resumed)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "resum" in (first.stdout + first.stderr).lower(), first.stdout[-2000:]
    second = _train(small_idx_dir, fresh)
    assert second.returncode == 0, second.stderr[-3000:]
    assert_same_weights(resumed, fresh)
    assert history_without_times(resumed) == history_without_times(fresh)
