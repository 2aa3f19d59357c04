"""Helpers for the tests that run the trainer in real processes (not a test module)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
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


def saved_model_weights(run_dir) -> List[np.ndarray]:
    """The weights of ``run_dir/model.keras``, loaded in a fresh process (``import tfcustom`` only)."""
    code = f"""
import numpy as np, keras, tfcustom
m = keras.models.load_model({os.path.join(str(run_dir), 'model.keras')!r})
np.savez({os.path.join(str(run_dir), 'weights.npz')!r}, *m.get_weights())
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""))
    with np.load(os.path.join(str(run_dir), "weights.npz")) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def history_without_times(run_dir) -> List[dict]:
    """``run_dir/history.json`` without the wall-clock ``time_s`` of each epoch."""
    with open(os.path.join(str(run_dir), "history.json")) as f:
        return [{k: v for k, v in r.items() if k != "time_s"} for r in json.load(f)]
