"""Helpers of the fault tests (tests/test_faults.py, tests/test_damaged_files.py): a tiny
run of the trainer CLI, copies of it, and a fingerprint of every file (not a test module)."""

import hashlib
import os
import shutil

from resume_helpers import TRAIN, run

STEPS = 14  # 400 training examples (600 - 200 validation) / batch 64, rounded up = 7 per epoch, 2 epochs


def tiny_args(data_dir, out, *extra):
    """A run of a few seconds: a 16-unit MLP on 400 examples, 2 epochs, a checkpoint every 4 steps."""
    return [TRAIN, "--model=mlp", '--model_kwargs={"hidden_units": [16]}', "--epochs=2", "--batch_size=64",
            "--train_subset=600", "--validation_size=200", "--test_subset=100", f"--data_dir={data_dir}",
            f"--output_dir={out}", "--verbose=0", "--seed=3", "--deterministic", "--checkpoint_every_steps=4",
            "--jit_compile=false", "--precision=float32", "--export_formats=", *extra]


def tiny_run(data_dir, out, *extra):
    r = run(tiny_args(data_dir, out, *extra))
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def copy_run(src, dst, unfinished=True):
    """A copy of the run ``src``; ``unfinished``: without results.json, so that the same
    command resumes it (reads config, autotune, history and checkpoints, then tests and exports)."""
    shutil.copytree(src, dst)
    if unfinished:
        os.remove(os.path.join(dst, "results.json"))
    return str(dst)


def fingerprint(directory):
    """{relative path: SHA-256} of every file under ``directory``."""
    out = {}
    for d, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def error_lines(stderr):
    """The lines a user reads: ``error:`` / ``warning:`` / ``stopped:`` (the rest is the INFO log)."""
    return [l for l in stderr.splitlines() if l.startswith(("error", "warning", "stopped"))]
