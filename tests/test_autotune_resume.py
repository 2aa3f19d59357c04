"""--deterministic with autotune active (>= 1000 steps): SIGKILL then resume is bitwise (subprocesses)."""

import json
import signal

from resume_helpers import STEPS_PER_EPOCH, args, assert_same_weights, latest_step, run, start_and_signal

from tfcustom.experiment import autotune

EPOCHS = 32  # 32 x 32 = 1024 steps: autotune is active (MIN_TRAIN_STEPS)


def _args(data_dir, out):
    return args(data_dir, out, f"--epochs={EPOCHS}", "--checkpoint_every_steps=50")


def test_sigkill_then_resume_with_autotune_active_is_bitwise(tmp_path, small_idx_dir):
    assert EPOCHS * STEPS_PER_EPOCH >= autotune.MIN_TRAIN_STEPS
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    proc = run(_args(small_idx_dir, reference))
    assert proc.returncode == 0, proc.stderr[-3000:]
    recorded = json.loads((reference / autotune.AUTOTUNE_FILE).read_text())
    assert "deterministic" in recorded["reasons"]["jit_compile"]
    code, _, _ = start_and_signal(_args(small_idx_dir, killed), str(killed), signal.SIGKILL, 300, 700)
    assert code == -signal.SIGKILL and 300 <= latest_step(str(killed)) < 700
    proc = run(_args(small_idx_dir, killed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_weights(str(reference), str(killed))
