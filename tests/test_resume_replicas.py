"""Exact resume under 2 replicas (MirroredStrategy over logical CPUs): SIGKILL and SIGTERM (subprocesses).

Split from tests/test_resume.py so that the two files run on different pytest-xdist workers.
"""

import re
import signal
import subprocess

import pytest
from resume_helpers import (MIRRORED, STEPS_PER_EPOCH, args, assert_same_run, history, latest_step, run, start_and_signal,
                            start_and_signal_at_log)


@pytest.fixture(scope="module")
def reference_mirrored(tmp_path_factory, small_idx_dir):
    out = tmp_path_factory.mktemp("resume_mirrored") / "uninterrupted"
    proc = run(args(small_idx_dir, out, *MIRRORED))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_sigkill_mid_epoch_under_two_replicas_is_bitwise_identical_and_restores_on_one(tmp_path, small_idx_dir, reference_mirrored):
    out = tmp_path / "killed2"
    code, _, _ = start_and_signal(args(small_idx_dir, out, *MIRRORED), str(out), signal.SIGKILL, STEPS_PER_EPOCH + 4, 2 * STEPS_PER_EPOCH - 4)
    assert code == -signal.SIGKILL
    step = latest_step(str(out))
    assert step % STEPS_PER_EPOCH != 0
    copy = tmp_path / "killed2_copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    proc = run(args(small_idx_dir, out, *MIRRORED))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(reference_mirrored, out)
    # The same 2-replica checkpoint resumes on 1 replica. (Not bitwise: each
    # replica draws its own dropout masks, so 1 and 2 replicas differ in
    # dropout noise; without dropout they agree to 1e-5, see test_distributed_training.)
    proc = run(args(small_idx_dir, copy))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(rf"Resumed from .*ckpt-{step}: global step {step}", proc.stderr)
    resumed, ref = history(copy), history(reference_mirrored)
    assert resumed[0] == ref[0]  # the epoch finished before the kill is kept as it was
    assert abs(resumed[-1]["val_accuracy"] - ref[-1]["val_accuracy"]) < 0.05


def test_sigterm_under_two_replicas_with_batch_norm_resumes_bitwise(tmp_path, small_idx_dir):
    # Each replica updates its own copy of the BatchNorm moving statistics; the
    # copies are averaged at each epoch end and periodic checkpoint. A SIGTERM
    # save in between must keep each replica's copy, or the resumed run's
    # statistics (and so its validation and test results) would drift.
    extra = [*MIRRORED, '--model_kwargs={"dropout": 0.3, "hidden_units": [64], "batch_norm": true}', "--checkpoint_every_steps=1000",
             "--log_replica_losses=1"]  # logs each step: the test signals on it
    ref = tmp_path / "uninterrupted"
    proc = run(args(small_idx_dir, ref, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "preempted"
    # SIGTERM a few steps into epoch 2.
    code, _, stderr = start_and_signal_at_log(args(small_idx_dir, out, *extra), signal.SIGTERM,
                                              rf"step {STEPS_PER_EPOCH + 3}: loss")
    assert code == 4, stderr[-3000:]
    step = latest_step(str(out))
    assert STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH, step  # mid-epoch: not a scheduled (epoch-end) save
    proc = run(args(small_idx_dir, out, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Restored each of the 2 replicas' own copies of: the running train metrics, the BatchNorm statistics" in proc.stderr, \
        [l for l in proc.stderr.splitlines() if "Restored" in l or "Resumed" in l or "replicas" in l][:10]
    assert_same_run(ref, out)  # every weight, the moving statistics included
