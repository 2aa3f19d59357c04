"""Faults an operator meets: two runs on one run directory, a stale lock, a full disk.

The oracle is the operating system: a real second process (the trainer CLI)
against a lock held by a live process, a lock record of a process that is
gone (its PID reaped), and a real tmpfs that fills (root mounts it; the
cases skip with the reason where mounting is not allowed). After a full disk
the same command, rerun once space is freed, must finish with weights
bitwise equal to an uninterrupted run's (read from model.keras with h5py).
TensorBoard's full disk is injected in-process (its writes are too small to
aim a tmpfs at).
"""

import json
import re
import os
import socket
import subprocess
import sys
import time

import pytest

from resume_helpers import args, run
from tfcustom.experiment.run_lock import LOCK_FILE, RunDirInUse, RunLock, read_holder

HOLD = ("import sys, time; from tfcustom.experiment.run_lock import RunLock; "
        "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)")


def _holder(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, run_dir], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_on_a_held_directory_exits_2_with_one_line(tmp_path, small_idx_dir):
    out = str(tmp_path / "run")
    holder = _holder(out)
    try:
        r = run(args(small_idx_dir, out, "--epochs=1"))
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith(("error", "warning"))]
    assert lines == [f"error: run directory {out} is in use by pid {holder.pid} on host {socket.gethostname()} "
                     f"since {json.load(open(os.path.join(out, LOCK_FILE)))['started']}"], r.stderr
    assert sorted(os.listdir(out)) == [LOCK_FILE]  # the refused run wrote nothing


def test_lock_is_refused_in_process_and_released_after(tmp_path):
    d = str(tmp_path)
    holder = _holder(d)
    try:
        with pytest.raises(RunDirInUse, match=f"in use by pid {holder.pid}"):
            RunLock(d).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(d):  # the kernel dropped the dead holder's fcntl lock
        assert read_holder(os.path.join(d, LOCK_FILE))["pid"] == os.getpid()
    assert not os.path.exists(os.path.join(d, LOCK_FILE))


def test_stale_lock_of_a_gone_process_is_taken_over_with_a_warning(tmp_path, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a PID that no longer runs
    d = str(tmp_path)
    with open(os.path.join(d, LOCK_FILE), "w") as f:
        json.dump({"pid": gone.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00Z"}, f)
    with RunLock(d):
        assert read_holder(os.path.join(d, LOCK_FILE))["pid"] == os.getpid()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: taking over the stale lock") and str(gone.pid) in err[0]


def test_other_host_lock_is_live_until_its_heartbeat_is_old(tmp_path, monkeypatch):
    import tfcustom.experiment.run_lock as run_lock

    d = str(tmp_path)
    path = os.path.join(d, LOCK_FILE)
    with open(path, "w") as f:
        json.dump({"pid": 1, "host": "other-host", "started": "2026-01-01T00:00:00Z"}, f)
    with pytest.raises(RunDirInUse, match="on host other-host"):
        RunLock(d).acquire()
    old = time.time() - run_lock.STALE_AFTER_S - 5
    os.utime(path, (old, old))
    with RunLock(d):
        assert read_holder(path)["host"] == socket.gethostname()


def test_non_chief_does_not_take_the_lock(tmp_path):
    d = str(tmp_path)
    holder = _holder(d)
    try:
        with RunLock(d, enabled=False):
            pass
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------
# A full disk: one line, exit 75, no temporaries, and the same command resumes
# --------------------------------------------------------------------------

import errno  # noqa: E402
import glob  # noqa: E402
import shutil  # noqa: E402

import tensorflow as tf  # noqa: E402

from fault_helpers import copy_run, error_lines, tiny_args  # noqa: E402
from process_helpers import assert_same_weights, history_without_times  # noqa: E402
from tfcustom import disk_errors  # noqa: E402

MOUNTED = []


def _mount(path, size):
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (run the fault tests as root, as .ci/run does)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here ({r.stderr.strip()[:200]})")
    MOUNTED.append(path)
    return path


def _resize(path, size):
    subprocess.run(["mount", "-o", f"remount,size={size}", path], check=True)


@pytest.fixture(scope="module", autouse=True)
def _unmount_all():
    yield
    for path in reversed(MOUNTED):
        subprocess.run(["umount", "-l", path], capture_output=True)


@pytest.fixture
def reference(tiny_run_dir):
    """The uninterrupted run of the tiny config (shared, see conftest.py)."""
    return tiny_run_dir


def _one_disk_line(r, pattern):
    assert r.returncode == disk_errors.DISK_EXIT_CODE and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and re.search(pattern, lines[0]), r.stderr[-3000:]
    return lines[0]


def _leftovers(directory):
    return [p for p in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
            if re.search(r"(_temp|\.tmp|\.tmp-|\.old-)", os.path.basename(p))]


def test_full_disk_during_a_checkpoint_then_the_same_command_resumes(tmp_path, small_idx_dir, reference):
    disk = _mount(str(tmp_path / "disk"), "700k")  # three checkpoints of ~200 KB, and no room for a fourth
    out = os.path.join(disk, "run")
    line = _one_disk_line(run(tiny_args(small_idx_dir, out)),
                          r"^error: no space left on device while writing checkpoint ckpt-\d+ to .*checkpoints \(.* free\); "
                          r"the last complete checkpoint ckpt-\d+ is intact: free space and rerun the same command to resume$")
    assert not _leftovers(out), _leftovers(out)  # ckpt-N_temp/ removed
    assert not os.path.exists(os.path.join(out, "results.json")) and not os.path.exists(os.path.join(out, "model.keras"))
    intact = re.search(r"checkpoint (ckpt-\d+) is intact", line).group(1)
    assert tf.train.latest_checkpoint(os.path.join(out, "checkpoints")).endswith(intact)
    _resize(disk, "8m")  # space freed
    r = run(tiny_args(small_idx_dir, out))
    assert r.returncode == 0 and f"Resumed from {out}/checkpoints/{intact}" in r.stderr, r.stderr[-3000:]
    assert_same_weights(out, reference)  # bitwise
    assert history_without_times(out) == history_without_times(reference)


def test_full_disk_during_export_leaves_no_finished_looking_run(tmp_path, reference):
    from tfcustom.experiment.config import TrainConfig
    from tfcustom.experiment.train import train_and_evaluate

    disk = _mount(str(tmp_path / "disk"), "8m")
    out = os.path.join(disk, "run")
    copy_run(reference, out)  # trained, not yet tested and exported
    for name in ("model.keras", "confusion_matrix.png", "misclassified.png", "learning_curves.png"):
        os.remove(os.path.join(out, name))
    shutil.rmtree(os.path.join(out, "tensorboard", "test"))  # what the resumed run deletes (it writes it again)
    _resize(disk, shutil.disk_usage(disk).used + 24 * 1024)  # room for the JSON rewrites, not for model.keras (~68 KB)
    config = TrainConfig.read(os.path.join(reference, "config.json"))
    with pytest.raises(disk_errors.DiskError, match=r"^no space left on device while writing the exported model \(model\.keras\) "
                       r"to .*; the last complete checkpoint ckpt-14 is intact: free space and rerun the same command to resume$"):
        train_and_evaluate(config, out)
    assert not _leftovers(out), _leftovers(out)
    assert not os.path.exists(os.path.join(out, "model.keras")) and not os.path.exists(os.path.join(out, "results.json"))
    _resize(disk, "8m")
    train_and_evaluate(config, out)  # the same call, space freed
    assert_same_weights(out, reference)


def test_full_disk_while_writing_tensorboard_then_resume(tmp_path, reference, monkeypatch):
    from tfcustom.experiment.config import TrainConfig
    from tfcustom.experiment.train import train_and_evaluate

    config = TrainConfig.read(os.path.join(reference, "config.json"))
    out = str(tmp_path / "run")
    scalar, calls = tf.summary.scalar, []

    def full_after_some(*a, **k):  # what TF's event writer raises on ENOSPC (an OpError, no errno)
        calls.append(1)
        if len(calls) > 8:  # in epoch 2 (epoch 1 writes about 8 scalars)
            raise tf.errors.ResourceExhaustedError(None, None, f"{out}/tensorboard/train/events.out; No space left on device")
        return scalar(*a, **k)

    monkeypatch.setattr(tf.summary, "scalar", full_after_some)
    with pytest.raises(disk_errors.DiskError, match=r"no space left on device while writing TensorBoard events to .*tensorboard "
                       r".*the last complete checkpoint ckpt-\d+ is intact") as e:
        train_and_evaluate(config, out)
    assert "\n" not in str(e.value) and not _leftovers(out)
    monkeypatch.setattr(tf.summary, "scalar", scalar)
    train_and_evaluate(config, out)  # the same call, space freed
    assert_same_weights(out, reference)


def test_full_disk_during_conversion_then_the_same_command(tmp_path, small_idx_dir, capsys):
    from tfcustom.data.convert import main as convert_main

    disk = _mount(str(tmp_path / "disk"), "300k")  # the 1200 + 300 images take ~1.2 MB as TFRecords
    argv = ["--dataset=fashion_mnist", f"--data_dir={small_idx_dir}", f"--output_dir={disk}", "--num_shards=4"]
    assert convert_main(argv) == disk_errors.DISK_EXIT_CODE
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.match(r"error: no space left on device while writing shard train-0000\d-of-00004\.tfrecord .*"
                                        r"free space and rerun the same command$", err), err
    assert not _leftovers(disk) and "dataset.json" not in os.listdir(disk)
    _resize(disk, "8m")
    assert convert_main(argv) == 0  # the unfinished shards are replaced without --overwrite
    expected = str(tmp_path / "expected")
    assert convert_main(argv[:2] + [f"--output_dir={expected}", "--num_shards=4"]) == 0
    assert json.load(open(os.path.join(disk, "dataset.json"))) == json.load(open(os.path.join(expected, "dataset.json")))


def test_environmental_errors_are_told_apart_from_bugs(tmp_path):
    for code, text in ((errno.ENOSPC, "no space left"), (errno.EIO, "input/output error"), (errno.EACCES, "permission denied"),
                       (errno.EROFS, "read-only")):
        assert text in disk_errors.reason(OSError(code, os.strerror(code)))
    assert disk_errors.reason(tf.errors.PermissionDeniedError(None, None, "x; Permission denied")) == "permission denied"
    assert disk_errors.reason(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")) is None  # memory, not disk
    assert disk_errors.reason(ValueError("No space left on device")) is None
    path = str(tmp_path / "results.json")
    with open(path, "w") as f:
        f.write("old")
    with pytest.raises(KeyError):  # not environmental: unchanged, and the old file stays
        with disk_errors.atomic(path) as tmp:
            open(tmp, "w").write("half")
            raise KeyError("bug")
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["results.json"]
    with pytest.raises(disk_errors.DiskError, match=r"^input/output error while writing results\.json to .*results\.json \(.* free\)$"):
        with disk_errors.atomic(path) as tmp:
            open(tmp, "w").write("half")
            raise OSError(errno.EIO, "Input/output error")
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["results.json"]


def test_a_resume_keeps_the_complete_events_of_a_file_cut_short(tmp_path):
    """An event file whose last record a full disk cut short: its complete records stay readable."""
    from tfcustom.callbacks.summaries import discard_after

    logdir = str(tmp_path / "tensorboard")
    writer = tf.summary.create_file_writer(os.path.join(logdir, "train"))
    with writer.as_default():
        for step in range(5):
            tf.summary.scalar("batch_loss", float(step), step=step)
    writer.close()
    (path,) = glob.glob(os.path.join(logdir, "train", "events.out.tfevents.*"))
    os.truncate(path, os.path.getsize(path) - 7)  # the last record loses its end
    discard_after(logdir, global_step=10, epochs_done=0)
    steps = [int(e.step) for e in tf.compat.v1.train.summary_iterator(path) if e.HasField("summary")]
    assert steps == [0, 1, 2, 3]  # read without a DataLossError: the cut record is gone, the rest kept
