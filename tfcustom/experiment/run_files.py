"""A training run's output directory: the names of its files and directories
(written by [`tfcustom.experiment.train.train_and_evaluate`][tfcustom.experiment.train.train_and_evaluate], read by
[`tfcustom.experiment.export`][tfcustom.experiment.export], `tfcustom.experiment.run_dir` and [`tfcustom.experiment.sweep`][tfcustom.experiment.sweep]),
and the bookkeeping of a run that writes them: deciding what to do with an
existing directory ([`prepare_output_dir`][tfcustom.experiment.run_files.prepare_output_dir]), and holding it for the run
([`claimed_run_dir`][tfcustom.experiment.run_files.claimed_run_dir]: its lock, and what a failed run leaves behind).
"""

from __future__ import annotations

import contextlib
import os
import shutil

from tfcustom import disk_errors
from tfcustom.errors import check, config_error, is_writable_dir
from tfcustom.experiment.config import TrainConfig
from tfcustom.experiment.run_lock import LOCK_FILE, RunLock
from tfcustom.run_json import read_json

CHECKPOINT_CHOICES = ("final", "latest", "best")
SPLITS = ("test", "validation", "train")
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
CHECKPOINT_DIR = "checkpoints"
BEST_SUBDIR = "best"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"  # written last: a run directory is finished iff it exists
TENSORBOARD_DIR = "tensorboard"


def _delete_run(workdir: str) -> None:
    """Delete everything in ``workdir`` but this run's lock file."""
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if name == LOCK_FILE:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def prepare_output_dir(workdir: str, config: TrainConfig, overwrite: bool = False, chief: bool = True) -> bool:
    """Decide what to do with ``workdir`` before anything is written.

    Returns True when an unfinished run of the same config is there to resume.
    Refuses a finished run, a different config (naming the fields that differ)
    and a directory that cannot be written, unless ``overwrite`` (which deletes
    the old run). Nothing is created or changed when this raises.

    A non-chief worker of a cluster (``chief=False``) only writes temporary
    checkpoint copies: the chief decides about the directory (and deletes it
    with ``overwrite``). A worker resumes unless ``overwrite``, from whatever
    checkpoint the chief's directory holds; where it sees the chief's run
    (a shared directory) it refuses what the chief refuses, so that no worker
    is left waiting for a chief that has stopped.
    """
    config_path = os.path.join(workdir, CONFIG_FILE)
    if not chief:
        if not overwrite and os.path.exists(config_path):
            _check_resumable(workdir, config)
        return not overwrite
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise config_error("output path exists and is not a directory", workdir, "pass another --output_dir")
    if os.path.isdir(workdir) and [n for n in os.listdir(workdir) if n != LOCK_FILE]:
        if overwrite:
            check(is_writable_dir(workdir), "output directory is not writable", workdir, "choose a writable --output_dir")
            _delete_run(workdir)
            return False
        if not os.path.exists(os.path.join(workdir, RESULTS_FILE)) and not os.path.exists(config_path):
            raise config_error("output directory is not empty and holds no tfcustom run", workdir, "choose another --output_dir, or pass --overwrite to delete its content")
        _check_resumable(workdir, config)
        check(is_writable_dir(workdir), "output directory is not writable", workdir, "choose a writable --output_dir")
        return True
    parent = os.path.abspath(workdir)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    check(os.path.isdir(parent) and is_writable_dir(parent), "output directory cannot be created (not writable)", parent, "choose a writable --output_dir")
    return False


def _check_resumable(workdir: str, config: TrainConfig) -> None:
    """Refuse a finished run and a run of a different config (naming the fields)."""
    if os.path.exists(os.path.join(workdir, RESULTS_FILE)):
        read_json(os.path.join(workdir, RESULTS_FILE), dict, "delete it and rerun the same command to test and export the last checkpoint again, or pass --overwrite to start over")
        raise config_error("output directory already holds a finished run", workdir, "pass --overwrite to start over, or choose another --output_dir")
    diff = TrainConfig.read(os.path.join(workdir, CONFIG_FILE)).differences(config)
    if diff:
        fields = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in diff.items()))
        raise config_error(f"cannot resume: the config differs from the run's ({fields})", workdir,
                           "run with the same flags to resume, pass --overwrite to start over, or choose another --output_dir")


@contextlib.contextmanager
def claimed_run_dir(workdir: str, config, overwrite: bool, chief: bool):
    """Hold ``workdir`` for one run: refuse what [`prepare_output_dir`][tfcustom.experiment.run_files.prepare_output_dir]
    refuses, take the run's lock (the chief's; workers write where they do) and
    yield whether the run resumes.

    A disk error (full disk, I/O error) leaves saying what survives (one line,
    exit 75); a run refused before it wrote anything leaves no directory behind.
    """
    if not os.path.isdir(workdir):
        prepare_output_dir(workdir, config, overwrite, chief=chief)  # refuses an unwritable place first
    lock = RunLock(workdir, enabled=chief)  # one run per directory
    try:
        with lock:
            yield prepare_output_dir(workdir, config, overwrite, chief=chief)
    except disk_errors.DiskError as e:
        raise disk_errors.with_survivors(e, os.path.join(workdir, CHECKPOINT_DIR)) from None
    except Exception:
        if lock.created_dir and os.path.isdir(workdir) and not os.listdir(workdir):
            os.rmdir(workdir)
        raise

