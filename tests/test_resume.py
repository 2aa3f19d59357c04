"""Exact resume: SIGKILL mid-epoch, SIGTERM, corrupt checkpoints, changed configs (subprocesses)."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from process_helpers import history_without_times as history
from process_helpers import saved_model_weights as weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "examples", "train.py")
STEPS_PER_EPOCH = 32  # 1000 training images (1200 - 200 validation) / batch 32, rounded up


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def args(data_dir, out, *extra):
    return [TRAIN, "--model=mlp", '--model_kwargs={"dropout": 0.3, "hidden_units": [64]}', "--epochs=3",
            "--batch_size=32", "--validation_size=200", f"--data_dir={data_dir}", f"--output_dir={out}",
            "--verbose=0", "--seed=5", "--deterministic", "--checkpoint_every_steps=2", *extra]


def run(argv, timeout=240):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)


def latest_step(out):
    try:
        text = open(os.path.join(out, "checkpoints", "checkpoint")).read()
    except OSError:
        return None
    m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', text, re.M)
    return int(m.group(1)) if m else None


def start_and_signal(argv, out, sig, lo, hi, timeout=180):
    """Start training; send ``sig`` once the newest checkpoint is at a step in [lo, hi)."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            step = latest_step(out)
            if step is not None and lo <= step < hi:
                proc.send_signal(sig)
                break
            time.sleep(0.01)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stdout, stderr


def start_and_signal_at_log(argv, sig, pattern, timeout=180):
    """Start training; send ``sig`` once a line of its log matches ``pattern``."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if re.search(pattern, line):
                proc.send_signal(sig)
                break
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stdout, "".join(seen) + stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_idx_dir):
    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    proc = run(args(small_idx_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


MIRRORED = ["--strategy=mirrored", "--num_cpu_replicas=2"]


@pytest.fixture(scope="module")
def reference_mirrored(tmp_path_factory, small_idx_dir):
    out = tmp_path_factory.mktemp("resume_mirrored") / "uninterrupted"
    proc = run(args(small_idx_dir, out, *MIRRORED))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _assert_same_run(a, b):
    assert history(a) == history(b)
    for x, y in zip(weights(a), weights(b)):
        np.testing.assert_array_equal(x, y)  # bitwise


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path, small_idx_dir, reference):
    out = tmp_path / "killed"
    code, _, _ = start_and_signal(args(small_idx_dir, out), str(out), signal.SIGKILL, STEPS_PER_EPOCH + 4, 2 * STEPS_PER_EPOCH - 4)
    assert code == -signal.SIGKILL
    step = latest_step(str(out))
    assert step % STEPS_PER_EPOCH != 0, "the kill must land mid-epoch"
    assert not (out / "results.json").exists()
    copy = tmp_path / "killed_copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    proc = run(args(small_idx_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(rf"Resumed from .*ckpt-{step}: global step {step}", proc.stderr)
    _assert_same_run(reference, out)
    # The same 1-replica checkpoint resumes on 2 replicas (not bitwise: each
    # replica draws its own dropout masks).
    proc = run(args(small_idx_dir, copy, *MIRRORED))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(rf"Resumed from .*ckpt-{step}: global step {step}", proc.stderr)
    resumed, ref = history(copy), history(reference)
    assert resumed[0] == ref[0] and len(resumed) == len(ref)
    assert abs(resumed[-1]["val_accuracy"] - ref[-1]["val_accuracy"]) < 0.05


def test_sigkill_mid_epoch_under_two_replicas_is_bitwise_identical_and_restores_on_one(tmp_path, small_idx_dir, reference_mirrored, reference):
    out = tmp_path / "killed2"
    code, _, _ = start_and_signal(args(small_idx_dir, out, *MIRRORED), str(out), signal.SIGKILL, STEPS_PER_EPOCH + 4, 2 * STEPS_PER_EPOCH - 4)
    assert code == -signal.SIGKILL
    step = latest_step(str(out))
    assert step % STEPS_PER_EPOCH != 0
    copy = tmp_path / "killed2_copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    proc = run(args(small_idx_dir, out, *MIRRORED))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_run(reference_mirrored, out)
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
    _assert_same_run(ref, out)  # every weight, the moving statistics included


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
    _assert_same_run(reference, out)


def test_corrupt_newest_checkpoint_falls_back_and_resumes(tmp_path, small_idx_dir, reference):
    out = tmp_path / "corrupt"
    code, _, _ = start_and_signal(args(small_idx_dir, out), str(out), signal.SIGKILL, STEPS_PER_EPOCH + 10, 2 * STEPS_PER_EPOCH - 4)
    assert code == -signal.SIGKILL
    newest = latest_step(str(out))
    data = out / "checkpoints" / f"ckpt-{newest}.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])  # truncated
    proc = run(args(small_idx_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ckpt-{newest} cannot be restored" in proc.stderr and "trying an older one" in proc.stderr
    _assert_same_run(reference, out)


def test_changed_config_is_refused_with_the_fields_named(tmp_path, small_idx_dir):
    out = tmp_path / "changed"
    code, _, _ = start_and_signal(args(small_idx_dir, out), str(out), signal.SIGKILL, 4, 10**6)
    assert code == -signal.SIGKILL
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
