"""Preemption of a multi-worker run: 2 local worker processes, TF_CONFIG on 127.0.0.1.

The model has BatchNorm, so each worker's replica keeps its own moving
statistics between the scheduled averages. A SIGTERM (or Ctrl-C) to one
worker must make every worker save at the same step and exit with code 4 (``ClusterPreemption`` around TF's
``PreemptionCheckpointHandler``); the same command on every worker then
resumes and ends bitwise equal to an uninterrupted multi-worker run (the
oracle). Each test starts real worker processes of ``examples/train.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from process_helpers import assert_same_weights, free_ports, history_without_times, tf_config, wait_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "examples", "train.py")
STEPS_PER_EPOCH = 32  # 1000 training images / global batch 32, rounded up
TIMEOUT_S = 240


def _latest_step(checkpoint_dir):
    try:
        text = open(os.path.join(checkpoint_dir, "checkpoint")).read()
    except OSError:
        return None
    m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', text, re.M)
    return int(m.group(1)) if m else None


def launch(outs, data_dir, signal_at=None):
    """Run a 2-worker cluster of the example trainer; ``outs[i]`` is worker i's --output_dir.

    ``signal_at=(sig, worker, lo, hi)`` sends ``sig`` to that worker once the
    chief's newest checkpoint is at a step in [lo, hi). Returns (exit codes, logs).
    """
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs, logs = [], []
    start = time.monotonic()
    try:
        for i in range(2):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", TF_CONFIG=tf_config(cluster, i))
            argv = [sys.executable, TRAIN, "--strategy=multi_worker", "--model=mlp", '--model_kwargs={"hidden_units": [64], "batch_norm": true}',
                    "--epochs=2", "--batch_size=32", "--validation_size=200", f"--data_dir={data_dir}",
                    f"--output_dir={outs[i]}", "--verbose=0", "--seed=5", "--deterministic", "--checkpoint_every_steps=4"]
            log = open(f"{outs[i]}.worker{i}.log", "a")
            logs.append(log)
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT))
        if signal_at is not None:
            sig, worker, lo, hi = signal_at
            while time.monotonic() - start < TIMEOUT_S and all(p.poll() is None for p in procs):
                step = _latest_step(os.path.join(outs[0], "checkpoints"))
                if step is not None and lo <= step < hi:
                    procs[worker].send_signal(sig)
                    break
                time.sleep(0.01)
    finally:
        wait_all(procs, TIMEOUT_S, start)
        for log in logs:
            log.close()
    texts = [open(f"{outs[i]}.worker{i}.log").read() for i in range(2)]
    return [p.returncode for p in procs], texts


def _stop_steps(texts):
    """The global step at which each worker says it stopped."""
    steps = []
    for t in texts:
        m = re.search(r"training stopped by .* at epoch (\d+), step (\d+) of the epoch", t)
        steps.append((int(m.group(1)) - 1) * STEPS_PER_EPOCH + int(m.group(2)) if m else None)
    return steps


def _tails(texts):
    return "\n".join(f"--- worker {i} ---\n{t[-3000:]}" for i, t in enumerate(texts))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_idx_dir):
    out = tmp_path_factory.mktemp("cluster") / "uninterrupted"
    codes, texts = launch([out, out], small_idx_dir)
    assert codes == [0, 0], _tails(texts)
    return out


def test_sigterm_to_one_worker_saves_on_all_at_one_step_and_resume_is_bitwise(tmp_path, small_idx_dir, uninterrupted):
    out = tmp_path / "preempted"  # one --output_dir for both workers, as on a shared filesystem
    # SIGTERM to worker 1 (not the chief) in the middle of epoch 2.
    codes, texts = launch([out, out], small_idx_dir, signal_at=(signal.SIGTERM, 1, STEPS_PER_EPOCH + 4, STEPS_PER_EPOCH + 20))
    assert codes == [4, 4], _tails(texts)  # both stop, with the documented exit code
    assert "training stopped by SIGTERM" in texts[1], _tails(texts)
    assert "training stopped by a termination notice to another worker" in texts[0], _tails(texts)
    stops = _stop_steps(texts)
    assert stops[0] == stops[1] and stops[0] is not None, stops  # both workers stopped at the same step
    step = stops[0]
    assert step % STEPS_PER_EPOCH != 0, step  # mid-epoch
    # The chief's checkpoint and worker 1's part of the same (collective) save hold that step.
    assert _latest_step(out / "checkpoints") == step and _latest_step(out / "checkpoints" / "tmp_worker_1") == step
    assert not (out / "results.json").exists()

    # Workers that see different directories would restore different steps: refused.
    split = [tmp_path / "split0", tmp_path / "split1"]
    shutil.copytree(out, split[0])
    codes, texts = launch(split, small_idx_dir)
    assert codes == [2, 2], _tails(texts)
    for t in texts:
        assert "the workers restored different checkpoints" in t and f"global steps [0, {step}]" in t, _tails(texts)

    # The same command on both workers resumes and ends bitwise equal.
    codes, texts = launch([out, out], small_idx_dir)
    assert codes == [0, 0], _tails(texts)
    for t in texts:
        assert f"ckpt-{step}: global step {step}" in t, _tails(texts)  # "Resumed from ...": both from the chief's checkpoint
        assert "Restored each of the 2 replicas' own copies of: the running train metrics" in t, _tails(texts)
    assert_same_weights(uninterrupted, out)  # bitwise, the BatchNorm moving statistics included
    assert history_without_times(out) == history_without_times(uninterrupted)
    assert not (out / "checkpoints" / "tmp_worker_1").exists()  # the non-chief's temporary copies are removed

    # The same command once more: the run is finished, and every worker (not
    # only the chief, which would leave the other waiting) refuses at once.
    codes, texts = launch([out, out], small_idx_dir)
    assert codes == [2, 2], _tails(texts)
    assert all("output directory already holds a finished run" in t for t in texts), _tails(texts)


def test_ctrl_c_to_the_chief_stops_every_worker_after_a_save(tmp_path, small_idx_dir):
    out = tmp_path / "interrupted"
    codes, texts = launch([out, out], small_idx_dir, signal_at=(signal.SIGINT, 0, 4, STEPS_PER_EPOCH - 6))
    assert codes == [4, 4], _tails(texts)
    assert "training stopped by SIGINT" in texts[0], _tails(texts)
    stops = _stop_steps(texts)
    assert stops[0] == stops[1] and stops[0] is not None, stops
    assert _latest_step(out / "checkpoints") == stops[0]
    assert _latest_step(out / "checkpoints" / "tmp_worker_1") == stops[0]  # worker 1's part of the same save


def test_cluster_preemption_refuses_a_single_process_strategy():
    import tensorflow as tf

    from tfcustom.errors import ConfigError
    from tfcustom.distribute.preemption import ClusterPreemption, is_cluster

    assert not is_cluster(tf.distribute.get_strategy())
    with pytest.raises(ConfigError, match="needs a multi-worker strategy over a cluster.*received: '_DefaultDistributionStrategy'"):
        ClusterPreemption(tf.distribute.get_strategy())
