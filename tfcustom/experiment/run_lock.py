"""One training run per run directory: a lock file with host, PID and start time.

The chief of a run takes ``<run dir>/.tfcustom.lock`` before it reads or
writes anything there: an ``fcntl`` lock on the open file (released by the
kernel when the process dies, however it dies) plus a JSON record of the
holder, so that a second run can name it. Where ``fcntl`` locks are not
shared (across the hosts of some network filesystems) the record decides: a
lock of a live process on this host, or of another host whose heartbeat (the
file's modification time, touched every ``HEARTBEAT_S``) is younger than
``STALE_AFTER_S``, refuses the second run; any other lock is stale and is
taken over with a warning line. Readers (``examples/evaluate.py``,
``predict.py``, a sidecar evaluator) never take it.

Examples:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with RunLock(d):
    ...     pass
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time

from tfcustom.errors import ConfigError

LOCK_FILE = ".tfcustom.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0

try:
    import fcntl
except ImportError:  # not on this platform: the record alone decides
    fcntl = None


class RunDirInUse(ConfigError):
    """Another live run holds the run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path: str):
    """The lock record at ``path`` (a dict), or None when absent or unreadable."""
    try:
        with open(path) as f:
            record = json.load(f)
        record["heartbeat"] = os.path.getmtime(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "pid" in record else None


def _is_live(record, here: str) -> bool:
    if record.get("host") == here:
        return record["pid"] != os.getpid() and _pid_alive(int(record["pid"]))
    return time.time() - record["heartbeat"] < STALE_AFTER_S


def in_use_message(run_dir: str, record) -> str:
    return (f"run directory {run_dir} is in use by pid {record['pid']} on host {record.get('host', '?')} "
            f"since {record.get('started', '?')}")


class RunLock:
    """Hold the run directory ``run_dir`` (created if needed) for this process.

    Raises `RunDirInUse` (exit code 2 in the CLI) when another live run
    holds it. ``enabled=False`` (a non-chief worker) makes it a no-op.
    """

    def __init__(self, run_dir: str, enabled: bool = True):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self.enabled = enabled
        self._fd = None
        self._stop = threading.Event()
        self.created_dir = False

    def _flock(self) -> bool:
        """True when the fcntl lock is taken or unsupported; False when another process holds it."""
        if fcntl is None:
            return True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            # ENOLCK/EOPNOTSUPP: no fcntl locks on this filesystem; the record decides.
        return True

    def acquire(self) -> "RunLock":
        if not self.enabled:
            return self
        self.created_dir = not os.path.isdir(self.run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        here = socket.gethostname()
        record = read_holder(self.path)
        if not self._flock() or (record is not None and _is_live(record, here)):
            os.close(self._fd)
            self._fd = None
            raise RunDirInUse(in_use_message(self.run_dir, record or {"pid": "?"}))
        if record is not None:
            print(f"warning: taking over the stale lock of {in_use_message(self.run_dir, record)} "
                  "(that process is gone)", file=sys.stderr, flush=True)
        mine = {"pid": os.getpid(), "host": here, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(mine).encode(), 0)
        os.fsync(self._fd)
        threading.Thread(target=self._heartbeat, daemon=True, name="tfcustom-run-lock").start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)  # drops the fcntl lock
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
