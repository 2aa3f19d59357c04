"""Helpers of the exact-resume tests (tests/test_resume*.py): the trainer in a
subprocess, signalled at a known step (not a test module)."""

import os
import re
import subprocess
import sys
import time

from process_helpers import history_without_times as history
from process_helpers import assert_same_weights

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


MIRRORED = ["--strategy=mirrored", "--num_cpu_replicas=2"]


def assert_same_run(a, b):
    assert history(a) == history(b)
    assert_same_weights(a, b)  # bitwise, every variable
