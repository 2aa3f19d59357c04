"""A full disk or an I/O error while a run writes: one line, a distinct exit code, no debris.

Every place that writes a run's files (checkpoints, the export, TensorBoard,
history, results and config JSON, pictures, TFRecord conversion) does so
inside :func:`writing`. An environmental ``OSError`` (no space, quota, I/O
error, permission, read-only filesystem) or the ``tf.errors.OpError`` that
TensorFlow raises for one becomes a :class:`DiskError` whose message says
what was being written, where, and the free space left; the temporary files
of that write are removed first. :func:`train_and_evaluate` adds what
survives (the last complete checkpoint) and the CLI prints the line and exits
:data:`DISK_EXIT_CODE` (75, ``EX_TEMPFAIL`` of sysexits.h: free space, then
run the same command again). Any other exception passes through unchanged.

Examples:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "results.json")
    >>> with atomic(path) as tmp:  # what a full disk does to a write
    ...     raise OSError(errno.ENOSPC, "No space left on device")
    Traceback (most recent call last):
    ...
    tfcustom.disk_errors.DiskError: no space left on device while writing results.json to ... free)
    >>> os.listdir(os.path.dirname(path))  # no results.json.tmp left
    []
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
from typing import Callable, Iterable, Optional

from tfcustom.errors import TfcustomError

DISK_EXIT_CODE = 75  # EX_TEMPFAIL: an environmental failure; the same command works once it is fixed

_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "input/output error",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large",
}
# How TensorFlow's C++ file system words the same errno (an OpError has no errno).
_TF_MESSAGES = {os.strerror(n): text for n, text in _ERRNOS.items()}


class DiskError(TfcustomError, RuntimeError):
    """A write of the run failed for an environmental reason (full disk, I/O, permission)."""

    exit_code = DISK_EXIT_CODE


def reason(error: BaseException) -> Optional[str]:
    """``"no space left on device"`` etc. when ``error`` is an environmental write
    failure, else None (a bug, a config error: not this module's business)."""
    if isinstance(error, TfcustomError):
        return None
    if isinstance(error, OSError) and error.errno in _ERRNOS:
        return _ERRNOS[error.errno]
    if type(error).__module__.startswith("tensorflow") or isinstance(error, (OSError, RuntimeError)):
        text = str(error)
        for message, short in _TF_MESSAGES.items():
            if message in text:
                return short
    cause = error.__cause__ or error.__context__
    return reason(cause) if cause is not None and cause is not error else None


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return ""  # unreachable


def free_space(path: str) -> str:
    """``"12.0 MB free"`` on the filesystem of ``path`` (its nearest existing ancestor)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        return f"{_human(shutil.disk_usage(probe).free)} free"
    except OSError:
        return "free space unknown"


def remove(paths: Iterable[str]) -> None:
    """Delete each file or directory in ``paths`` (glob patterns allowed); errors ignored."""
    for pattern in paths:
        for path in glob.glob(pattern) if glob.has_magic(pattern) else [pattern]:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)


@contextlib.contextmanager
def writing(what: str, where: str, cleanup: Optional[Callable[[], Iterable[str]]] = None, survives: str = ""):
    """Run the block; turn an environmental write failure into one :class:`DiskError` line.

    Args:
      what: what the block writes, e.g. ``"checkpoint ckpt-40"``.
      where: the file or directory it writes to (the free space is of its filesystem).
      cleanup: returns the temporary paths (or glob patterns) of this write,
        removed before the error is raised.
      survives: what is intact and what to do, appended to the message.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 -- only environmental failures are converted; the rest is re-raised
        why = reason(e)
        if why is None:
            raise
        if cleanup is not None:
            remove(cleanup())
        message = f"{why} while writing {what} to {where} ({free_space(where)})"
        raise DiskError(f"{message}; {survives}" if survives else message) from None


@contextlib.contextmanager
def atomic(path: str, what: Optional[str] = None):
    """Yield ``<path>.tmp`` to write; rename it to ``path`` when the block succeeds.

    A reader sees the old file or the new one, never half of one; a full disk
    (or an I/O error) is one :class:`DiskError` naming ``what`` (default: the
    file's name); on any failure the ``.tmp`` is removed.
    """
    tmp = path + ".tmp"
    try:
        with writing(what or os.path.basename(path), path):
            yield tmp
            os.replace(tmp, path)
    except BaseException:
        remove([tmp])  # whatever failed, no half-written sibling stays
        raise


def what_survives(checkpoint_dir: str) -> str:
    """The sentence of a run's survivors: its last complete checkpoint, and the way on."""
    import tensorflow as tf  # here: the CLI imports this module before TensorFlow is configured

    try:
        state = tf.train.get_checkpoint_state(checkpoint_dir) if os.path.isdir(checkpoint_dir) else None
    except Exception:  # noqa: BLE001 -- an unreadable index: say nothing is known to be complete
        state = None
    if state is None or not state.model_checkpoint_path:
        return "no checkpoint was complete yet: free space and rerun the same command to start again"
    name = os.path.basename(state.model_checkpoint_path)
    return f"the last complete checkpoint {name} is intact: free space and rerun the same command to resume"


def with_survivors(error: DiskError, checkpoint_dir: str) -> DiskError:
    """``error`` with :func:`what_survives` appended (once)."""
    text = str(error)
    return error if "rerun the same command" in text else DiskError(f"{text}; {what_survives(checkpoint_dir)}")
