"""Faults an operator meets: two runs on one run directory, a stale lock.

The oracle is the operating system: a real second process (the trainer CLI)
against a lock held by a live process, and a lock record of a process that is
gone (its PID reaped).
"""

import json
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
