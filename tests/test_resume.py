"""Exact resume: SIGKILL mid-epoch, SIGTERM, corrupt checkpoints, changed configs (subprocesses)."""

import os
import re
import shutil
import signal

import pytest
from resume_helpers import MIRRORED, STEPS_PER_EPOCH, args, assert_same_run, history, latest_step, run, start_and_signal


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_idx_dir):
    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    proc = run(args(small_idx_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory, small_idx_dir):
    """One run SIGKILLed mid-epoch 2, past step 10 of the epoch (so older mid-epoch checkpoints
    exist), and its newest step. Each test resumes its own copy; none touches this one."""
    out = tmp_path_factory.mktemp("resume") / "killed"
    code, _, _ = start_and_signal(args(small_idx_dir, out), str(out), signal.SIGKILL, STEPS_PER_EPOCH + 10, 2 * STEPS_PER_EPOCH - 4)
    assert code == -signal.SIGKILL
    step = latest_step(str(out))
    assert step % STEPS_PER_EPOCH != 0, "the kill must land mid-epoch"
    assert not (out / "results.json").exists()
    return out, step


def copy_of(run, dest):
    shutil.copytree(run, dest)
    return dest


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path, small_idx_dir, reference, killed):
    out = copy_of(killed[0], tmp_path / "killed")
    step = killed[1]
    proc = run(args(small_idx_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(rf"Resumed from .*ckpt-{step}: global step {step}", proc.stderr)
    assert_same_run(reference, out)
    # The same 1-replica checkpoint resumes on 2 replicas (not bitwise: each
    # replica draws its own dropout masks).
    copy = copy_of(killed[0], tmp_path / "killed_copy")
    proc = run(args(small_idx_dir, copy, *MIRRORED))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(rf"Resumed from .*ckpt-{step}: global step {step}", proc.stderr)
    resumed, ref = history(copy), history(reference)
    assert resumed[0] == ref[0] and len(resumed) == len(ref)
    assert abs(resumed[-1]["val_accuracy"] - ref[-1]["val_accuracy"]) < 0.05


def test_sigterm_saves_exits_4_and_resumes_exactly(tmp_path, small_idx_dir, reference):
    out = tmp_path / "preempted"
    code, _, stderr = start_and_signal(args(small_idx_dir, out, "--checkpoint_every_steps=1000"), str(out), signal.SIGTERM, 0, 10**6)
    # Only epoch-end checkpoints exist before the signal; the signal itself makes a save.
    assert code == 4, stderr[-3000:]
    assert "stopped: training stopped by SIGTERM" in stderr and "run the same command again to resume" in stderr
    step = latest_step(str(out))
    assert step is not None
    proc = run(args(small_idx_dir, out, "--checkpoint_every_steps=1000"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(reference, out)


def test_corrupt_newest_checkpoint_falls_back_and_resumes(tmp_path, small_idx_dir, reference, killed):
    out = copy_of(killed[0], tmp_path / "corrupt")
    newest = latest_step(str(out))
    data = out / "checkpoints" / f"ckpt-{newest}.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])  # truncated
    proc = run(args(small_idx_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ckpt-{newest} cannot be restored" in proc.stderr and "trying an older one" in proc.stderr
    assert_same_run(reference, out)


def test_changed_config_is_refused_with_the_fields_named(tmp_path, small_idx_dir, killed):
    out = copy_of(killed[0], tmp_path / "changed")
    before = sorted(os.listdir(out / "checkpoints"))
    proc = run(args(small_idx_dir, out, "--learning_rate=0.01", "--seed=6"))
    assert proc.returncode == 2
    line = [l for l in proc.stderr.splitlines() if l.startswith("error:")][-1]
    assert "cannot resume: the config differs" in line and "learning_rate: 0.001 -> 0.01" in line and "seed: 5 -> 6" in line
    assert "--overwrite" in line
    assert sorted(os.listdir(out / "checkpoints")) == before  # nothing touched
    # --epochs may change: a resumed run can be extended.
    proc = run(args(small_idx_dir, out, "--epochs=4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(history(out)) == 4
