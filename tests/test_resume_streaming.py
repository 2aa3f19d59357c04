"""Exact resume on the streaming path (``--dataset=tfrecord:DIR``), augmentation on: SIGKILL mid-epoch,
then the same command ends bitwise identical to an uninterrupted run, on 1 and on 2 replicas (subprocesses)."""

import signal

import pytest
from resume_helpers import MIRRORED, STEPS_PER_EPOCH, args, assert_same_run, latest_step, run, start_and_signal

from tfcustom.data.convert import convert


@pytest.fixture(scope="module")
def shard_args(tmp_path_factory, small_idx_dir):
    out = str(tmp_path_factory.mktemp("resume_shards") / "fm")
    convert("fashion_mnist", out, num_shards=5, data_dir=small_idx_dir)
    # A shuffle block of 100 examples: a resume re-reads at most one block, never the epoch.
    # One epoch (the in-process tests of tests/test_tfrecord.py resume later epochs): half the time.
    return [f"--dataset=tfrecord:{out}", "--augment=crop,flip", "--shuffle_buffer=100", "--epochs=1"]


@pytest.mark.parametrize("replicas", [1, 2])
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path, shard_args, replicas):
    extra = shard_args + (MIRRORED if replicas == 2 else [])
    ref = tmp_path / "uninterrupted"
    proc = run(args("unused", ref, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "killed"
    code, _, _ = start_and_signal(args("unused", out, *extra), str(out), signal.SIGKILL, 6, STEPS_PER_EPOCH - 4)
    assert code == -signal.SIGKILL
    step = latest_step(str(out))
    assert 0 < step < STEPS_PER_EPOCH  # killed mid-epoch (past the first shuffle block of 100 examples)
    proc = run(args("unused", out, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"global step {step}" in proc.stderr
    assert_same_run(ref, out)


def test_a_truncated_shard_is_one_error_line_exit_2_and_no_run(tmp_path, shard_args):
    import os
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(shard_args[0][len("--dataset=tfrecord:"):], bad)
    shard = bad / "train-00003-of-00005.tfrecord"
    os.truncate(shard, os.path.getsize(shard) // 2)
    out = tmp_path / "run"
    proc = run(args("unused", out, f"--dataset=tfrecord:{bad}", *shard_args[1:]))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train-00003-of-00005.tfrecord is truncated" in errors[0], errors
    assert not out.exists()
