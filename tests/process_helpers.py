"""Helpers for the tests that run the trainer in real processes (not a test module)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from typing import List, Optional, Sequence

import numpy as np


def free_ports(n: int) -> List[int]:
    """``n`` TCP ports on 127.0.0.1 that were free a moment ago."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tf_config(cluster: dict, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def wait_all(procs: Sequence[subprocess.Popen], deadline_s: float, start: Optional[float] = None) -> None:
    """Wait for every process until ``deadline_s`` after ``start``; kill those still running."""
    start = time.monotonic() if start is None else start
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline_s - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:  # always tear the processes down
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


def saved_model_variables(run_dir) -> dict:
    """Every variable stored in ``run_dir/model.keras`` (non-trainable ones such as the
    BatchNorm moving statistics included), read with h5py from the file itself: no
    TensorFlow, no Keras, no process to start. Keyed by their path in the weights file."""
    import h5py

    with zipfile.ZipFile(os.path.join(str(run_dir), "model.keras")) as z:
        blob = z.read("model.weights.h5")
    arrays = {}
    with h5py.File(io.BytesIO(blob), "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    assert arrays, f"no variables in {run_dir}/model.keras"
    return arrays


def saved_model_weights(run_dir) -> List[np.ndarray]:
    """The arrays of :func:`saved_model_variables`, in the sorted order of their paths."""
    arrays = saved_model_variables(run_dir)
    return [arrays[k] for k in sorted(arrays)]


def assert_same_weights(a, b) -> None:
    """The ``model.keras`` of runs ``a`` and ``b`` hold bitwise identical variables."""
    va, vb = saved_model_variables(a), saved_model_variables(b)
    assert sorted(va) == sorted(vb)
    for k in va:
        np.testing.assert_array_equal(va[k], vb[k], err_msg=k)  # bitwise


def history_without_times(run_dir) -> List[dict]:
    """``run_dir/history.json`` without the wall-clock ``time_s`` of each epoch."""
    with open(os.path.join(str(run_dir), "history.json")) as f:
        return [{k: v for k, v in r.items() if k != "time_s"} for r in json.load(f)]
