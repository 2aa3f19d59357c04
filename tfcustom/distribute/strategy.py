"""Choose the ``tf.distribute`` strategy and the precision policy by name.

One call picks where training runs; the model, step and config do not change:

>>> from tfcustom.distribute import strategy as strategy_lib
>>> strategy = strategy_lib.select("auto")            # TPU, else GPU(s), else CPU
>>> strategy = strategy_lib.select("mirrored", num_cpu_replicas=2)  # 2 logical CPUs
>>> policy = strategy_lib.set_precision("auto", strategy)          # 'float32' on CPU

Names (`STRATEGY_NAMES`):

* ``auto``: a TPU if one is reachable (``tpu=``, ``$TPU_NAME``,
  ``$COLAB_TPU_ADDR``, or a local TPU on a TPU VM), else every visible GPU
  (``MirroredStrategy`` if more than one, the default strategy on one),
  else the default strategy on the CPU. Never hangs: a remote TPU address is
  probed with a socket timeout first; a TPU that fails falls back with a
  warning.
* ``cpu``: the default strategy with GPUs hidden (one replica on the CPU).
* ``gpu``: every visible GPU, as above; an error if there is none.
* ``mirrored``: ``MirroredStrategy`` over ``devices``, or over
  ``num_cpu_replicas`` logical CPU devices (the CPU split in N, to test
  multi-replica code on a laptop), or over every GPU, else every logical CPU.
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` from ``$TF_CONFIG``
  (validated here first).
* ``tpu``: ``TPUClusterResolver`` (``tpu="local"`` on a TPU VM; a
  ``grpc://host:port`` address or a Cloud TPU name otherwise),
  ``connect_to_cluster``, ``initialize_tpu_system``, ``TPUStrategy``.

A strategy that cannot be built fails at once with a
[`tfcustom.errors.ConfigError`][tfcustom.errors.ConfigError] that says what was found and what to do;
only ``auto`` falls back. The choice and the replica count are logged.

Call [`select`][tfcustom.distribute.strategy.select] **first**, before anything builds a model or runs a
TensorFlow op: splitting the CPU into logical devices and starting the
multi-worker runtime are only possible before TensorFlow initialises its
devices.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional, Sequence

import tensorflow as tf
from absl import logging

from tfcustom.errors import TfcustomError, check, check_one_of, config_error
from tfcustom.distribute.precision import PRECISIONS, device_type, resolve_precision, set_precision, visible_gpus, wrap_optimizer
from tfcustom.distribute.tpu import TPU_PROBE_TIMEOUT_S, tpu_hinted, tpu_strategy

__all__ = [
    "STRATEGY_NAMES", "PRECISIONS", "select", "configure_cpu_replicas", "parse_tf_config",
    "device_type", "resolve_precision", "set_precision", "wrap_optimizer", "describe",
    "TPU_PROBE_TIMEOUT_S",  # from tfcustom.distribute.tpu; the precision functions from tfcustom.distribute.precision
]

STRATEGY_NAMES = ("auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu")


# ---------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------

#: What initialised TensorFlow's devices, when a call of this module did
#: (for the error of a later `configure_cpu_replicas`).
_initialised_by: Optional[str] = None


def devices_initialised() -> bool:
    """True once TensorFlow has created its logical devices (after the first op,
    model, ``tf.config.list_logical_devices`` or strategy in the process);
    from then on the CPU can no longer be split into logical devices."""
    from tensorflow.python.eager import context  # no public API answers this without initialising

    return context.context()._context_handle is not None


def configure_cpu_replicas(n: int) -> None:
    """Split the (first) physical CPU into ``n`` logical devices ``/cpu:0..n-1``.

    Must run before TensorFlow initialises its devices; calling it again with
    the same ``n`` is a no-op.

    Args:
      n: the number of logical CPU devices (>= 1).

    Examples:
        >>> configure_cpu_replicas(4)  # doctest: +SKIP
        >>> select("mirrored").num_replicas_in_sync  # doctest: +SKIP
        4
    """
    check(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1,
        "num_cpu_replicas must be a positive integer", n, "pass e.g. num_cpu_replicas=2",
    )
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if (current is None and n == 1) or (current is not None and len(current) == n):
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        found = len(current) if current else len(tf.config.list_logical_devices("CPU"))
        cause = _initialised_by or (
            "code that ran earlier in this process initialised them (the first TensorFlow op, building a model or "
            "layer, tf.config.list_logical_devices, or creating a tf.distribute strategy does)"
        )
        raise config_error(
            f"cannot split the CPU into {n} logical devices: TensorFlow's devices are already initialised with "
            f"{found} logical CPU device(s), and they cannot change within a process; {cause}",
            f"num_cpu_replicas={n}",
            f"make tfcustom.distribute.strategy.select('mirrored', num_cpu_replicas={n}) the first TensorFlow call of the program "
            "and select only once per process (in a notebook: restart the kernel and make it the first cell)",
        ) from None


def _single_device(hide_gpus: bool = False) -> tf.distribute.Strategy:
    """One device: TF's default strategy (ops go to the first GPU if any, else the CPU).

    Measured here: ``OneDeviceStrategy("/cpu:0")`` runs the same train step
    about 2x slower (its multi-device iterator) and stalls ~20 s between
    epochs, so a single device uses the default strategy instead.
    """
    if hide_gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            check(not visible_gpus(), "strategy 'cpu' asked for after TF placed work on a GPU",
                  "GPU initialised", "call tfcustom.distribute.strategy.select('cpu') before building models")
    return tf.distribute.get_strategy()


def _gpu_strategy(found_what: str) -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    check(
        bool(gpus),
        f"no GPU is visible to TensorFlow ({found_what})",
        "0 GPUs",
        "check `nvidia-smi`, $CUDA_VISIBLE_DEVICES and that the CUDA build of TensorFlow is installed "
        "(pip install 'tensorflow[and-cuda]'); or pick --strategy=cpu or auto",
    )
    if len(gpus) == 1:
        return _single_device()
    return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(len(gpus))])


def _mirrored(devices: Optional[Sequence[str]], num_cpu_replicas: Optional[int]) -> tf.distribute.Strategy:
    if devices is not None:
        devices = list(devices)
        check(bool(devices) and all(isinstance(d, str) for d in devices), "devices must be a non-empty list of device names",
              devices, "pass e.g. devices=['/gpu:0', '/gpu:1']")
        check(num_cpu_replicas is None, "pass either devices or num_cpu_replicas, not both", (devices, num_cpu_replicas),
              "drop one of them")
        return tf.distribute.MirroredStrategy(devices)
    if num_cpu_replicas is not None:
        configure_cpu_replicas(num_cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_cpu_replicas)])
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(len(gpus))])
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(len(cpus))])


# ---------------------------------------------------------------------------
# Multi-worker
# ---------------------------------------------------------------------------


def _check_address(addr, where: str) -> None:
    ok = isinstance(addr, str) and addr.count(":") >= 1
    if ok:
        host, _, port = addr.rpartition(":")
        ok = bool(host) and port.isdigit() and 0 < int(port) < 65536
    check(ok, f"TF_CONFIG {where} is not a 'host:port' address", addr, "write addresses as \"10.0.0.1:12345\"")


def parse_tf_config(text: Optional[str] = None) -> Dict[str, Any]:
    """Parse and validate ``TF_CONFIG`` (default: ``$TF_CONFIG``); return it as a dict.

    Checks what TensorFlow would otherwise fail on late or obscurely: valid
    JSON, a ``cluster`` with ``worker`` (and/or ``chief``) lists of
    ``host:port`` addresses, a ``task`` with a ``type`` of the cluster and an
    ``index`` within its list.

    Args:
      text: the JSON text (default: ``$TF_CONFIG``).

    Returns:
      The parsed ``TF_CONFIG``, checked.

    Raises:
      ConfigError: what is wrong with it, and a ``TF_CONFIG`` that works.

    Examples:
        >>> config = parse_tf_config('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        ...                          '"task": {"type": "worker", "index": 1}}')
        >>> config["task"], len(config["cluster"]["worker"])
        ({'type': 'worker', 'index': 1}, 2)
        >>> parse_tf_config('{"cluster": {"worker": ["host1:12345"]}, "task": {"type": "worker", "index": 1}}')
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: TF_CONFIG task index is out of range for the 1 'worker' address(es) of the cluster (received: 1). Use an index in 0..0.
    """
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\' (index 1 on the second host)')
    if text is None:
        text = os.environ.get("TF_CONFIG")
    check(bool(text and text.strip()), "multi_worker needs the cluster description in $TF_CONFIG, which is not set",
          text, f"on every worker set {example}")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as e:
        raise config_error(f"TF_CONFIG is not valid JSON ({e.msg} at character {e.pos})", text, f"set {example}") from None
    check(isinstance(tf_config, dict), "TF_CONFIG must be a JSON object", text, f"set {example}")
    cluster = tf_config.get("cluster")
    check(isinstance(cluster, dict) and cluster, "TF_CONFIG has no \"cluster\" object", text,
          f"add the list of workers, e.g. {example}")
    check(bool(cluster.get("worker") or cluster.get("chief")), "TF_CONFIG cluster lists no \"worker\" (or \"chief\")",
          sorted(cluster), f"list the workers' addresses, e.g. {example}")
    for job, addrs in cluster.items():
        check(isinstance(addrs, list) and addrs, f"TF_CONFIG cluster job {job!r} must be a non-empty list of addresses",
              addrs, "write e.g. \"worker\": [\"host1:12345\", \"host2:12345\"]")
        for a in addrs:
            _check_address(a, f"cluster[{job!r}] entry")
    task = tf_config.get("task")
    check(isinstance(task, dict), "TF_CONFIG has no \"task\" object (which worker this process is)", text,
          "add e.g. \"task\": {\"type\": \"worker\", \"index\": 0}, with a different index on each worker")
    ttype, index = task.get("type"), task.get("index")
    check(ttype in cluster, "TF_CONFIG task type is not a job of the cluster", ttype,
          f"use one of: {', '.join(sorted(cluster))}")
    check(isinstance(index, int) and not isinstance(index, bool), "TF_CONFIG task index must be an integer", index,
          "set \"index\": 0 on the first worker, 1 on the second, ...")
    check(0 <= index < len(cluster[ttype]), f"TF_CONFIG task index is out of range for the {len(cluster[ttype])} "
          f"{ttype!r} address(es) of the cluster", index, f"use an index in 0..{len(cluster[ttype]) - 1}")
    return tf_config


def _multi_worker(cluster_timeout: float) -> tf.distribute.Strategy:
    from tfcustom.distribute.cluster import start_cluster

    tf_config = parse_tf_config()
    task = tf_config["task"]
    peers = [addr for job, addrs in tf_config["cluster"].items() if job in ("chief", "worker")
             for i, addr in enumerate(addrs) if (job, i) != (task["type"], task["index"])]
    logging.info("multi_worker: task %s:%d of cluster %s", task["type"], task["index"], json.dumps(tf_config["cluster"]))
    try:
        own = tf_config["cluster"][task["type"]][task["index"]]
        strategy = start_cluster(tf.distribute.MultiWorkerMirroredStrategy, own, peers, cluster_timeout)
    except TfcustomError:
        raise
    except (RuntimeError, ValueError) as e:
        raise config_error(
            f"cannot start the multi-worker runtime ({e})", f"task {task['type']}:{task['index']}",
            "call tfcustom.distribute.strategy.select('multi_worker') first in the program, before any other TensorFlow "
            "operation, and check that this host's address in TF_CONFIG is right",
        ) from None
    return strategy


# ---------------------------------------------------------------------------
# The selector
# ---------------------------------------------------------------------------


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line for the logs: the strategy's kind, replica count and devices.

    For instance ``"MirroredStrategy, 2 replica(s) on /job:localhost/replica:0/task:0/device:CPU:0, ..."``.
    The default strategy is described without initialising TensorFlow's devices.

    Args:
      strategy: any ``tf.distribute`` strategy.

    Returns:
      The description.

    Examples:
        >>> describe(tf.distribute.get_strategy())
        'default strategy, 1 replica(s) on /device:CPU:0'
    """
    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        gpus = visible_gpus()  # not list_logical_devices: that would initialise the devices
        return f"default strategy, 1 replica(s) on {'/device:GPU:0' if gpus else '/device:CPU:0'}"
    try:
        devices = ", ".join(strategy.extended.worker_devices)
    except (RuntimeError, AttributeError, NotImplementedError):
        devices = "the default device"
    return f"{type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s) on {devices}"


def select(
    name: str = "auto",
    *,
    devices: Optional[Sequence[str]] = None,
    num_cpu_replicas: Optional[int] = None,
    tpu: Optional[str] = None,
    cluster_timeout: float = 300.0,
) -> tf.distribute.Strategy:
    """Build the ``tf.distribute`` strategy called ``name`` (see the module doc).

    Args:
      name: one of `STRATEGY_NAMES`.
      devices: ``mirrored`` only: the device list, e.g. ``["/gpu:0", "/gpu:1"]``.
      num_cpu_replicas: ``mirrored`` only: split the CPU into this many logical
        devices and mirror over them (must be called before TF initialises
        its devices).
      tpu: ``tpu``/``auto``: ``"local"``, ``"grpc://HOST:PORT"`` or a Cloud TPU
        name (default: ``$COLAB_TPU_ADDR``, ``$TPU_NAME``, then ``"local"``).
      cluster_timeout: ``multi_worker`` only: seconds to wait for the other
        workers of ``TF_CONFIG`` (the wait is logged and stops on Ctrl-C /
        SIGTERM; see `tfcustom.distribute.cluster`).

    Returns:
      The strategy (its choice and replica count are logged).

    Raises:
      ConfigError: the requested device is not there or the arguments do not
        fit the name; the message says what was found and what to do.

    Examples:
        >>> strategy = select("cpu")  # "auto": a TPU, else the GPU(s), else the CPU
        >>> strategy.num_replicas_in_sync
        1
    """
    check_one_of("strategy", name, STRATEGY_NAMES)
    check(devices is None or name == "mirrored", "devices applies only to strategy 'mirrored'", name,
          "pass strategy='mirrored' with devices, or drop devices")
    check(num_cpu_replicas is None or name == "mirrored", "num_cpu_replicas applies only to strategy 'mirrored'", name,
          "pass --strategy=mirrored --num_cpu_replicas=N, or drop --num_cpu_replicas")
    check(tpu is None or name in ("tpu", "auto"), "a TPU address applies only to strategy 'tpu' or 'auto'", name,
          "pass --strategy=tpu (or auto) with --tpu, or drop --tpu")
    global _initialised_by
    initialised_before = devices_initialised()
    start = time.monotonic()
    if name == "cpu":
        strategy = _single_device(hide_gpus=True)
    elif name == "gpu":
        strategy = _gpu_strategy("strategy 'gpu' needs at least one")
    elif name == "mirrored":
        strategy = _mirrored(devices, num_cpu_replicas)
    elif name == "multi_worker":
        strategy = _multi_worker(cluster_timeout)
    elif name == "tpu":
        strategy = tpu_strategy(tpu)
    else:
        strategy = None
        if tpu or tpu_hinted():
            try:
                strategy = tpu_strategy(tpu)
            except Exception as e:  # noqa: BLE001 - auto falls back, loudly
                logging.warning("auto: no TPU (%s); trying GPUs, then the CPU", e)
        if strategy is None:
            strategy = _gpu_strategy("") if tf.config.list_physical_devices("GPU") else _single_device()
    logging.info("Strategy %r: %s (selected in %.2f s)", name, describe(strategy), time.monotonic() - start)
    if not initialised_before and devices_initialised():
        _initialised_by = (f"an earlier tfcustom.distribute.strategy.select({name!r}) in this process created the "
                           f"{describe(strategy)} and so initialised them")
    return strategy
