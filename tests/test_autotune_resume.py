"""--deterministic with autotune active (>= 1000 steps): SIGKILL then resume is bitwise (subprocesses)."""

import json
import math
import signal

from resume_helpers import args, assert_same_weights, latest_step, run, start_and_signal

from tfcustom.experiment import autotune

# Batch 8 over the 1000 training images: 125 steps per epoch, 8 x 125 = 1000 steps, so autotune is
# active (MIN_TRAIN_STEPS) in 8 epochs (batch 32 needed 32 epochs, each with its validation and save).
BATCH_SIZE = 8
STEPS_PER_EPOCH = math.ceil(1000 / BATCH_SIZE)
EPOCHS = 8


def _args(data_dir, out):
    return args(data_dir, out, f"--epochs={EPOCHS}", f"--batch_size={BATCH_SIZE}", "--checkpoint_every_steps=50")


def test_sigkill_then_resume_with_autotune_active_is_bitwise(tmp_path, small_idx_dir):
    assert EPOCHS * STEPS_PER_EPOCH >= autotune.MIN_TRAIN_STEPS
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    proc = run(_args(small_idx_dir, reference))
    assert proc.returncode == 0, proc.stderr[-3000:]
    recorded = json.loads((reference / autotune.AUTOTUNE_FILE).read_text())
    assert "deterministic" in recorded["reasons"]["jit_compile"]
    assert latest_step(str(reference)) == EPOCHS * STEPS_PER_EPOCH  # the run's length autotune was given
    code, _, _ = start_and_signal(_args(small_idx_dir, killed), str(killed), signal.SIGKILL, 300, 700)
    assert code == -signal.SIGKILL and 300 <= latest_step(str(killed)) < 700
    proc = run(_args(small_idx_dir, killed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_weights(str(reference), str(killed))
