"""Connect to a TPU for [`tfcustom.distribute.strategy.select`][tfcustom.distribute.strategy.select]: find its address
(``tpu=``, ``$COLAB_TPU_ADDR``, ``$TPU_NAME``, a local TPU VM), probe a remote
address with a socket timeout first (never hang), then build the
``TPUStrategy``."""

from __future__ import annotations

import os
import socket
import time
from typing import Optional

import tensorflow as tf

from tfcustom.errors import check, config_error

#: Seconds to wait for a remote TPU's gRPC port to accept a connection.
TPU_PROBE_TIMEOUT_S = 2.0

_TPU_FIX = (
    "on a Cloud TPU VM use tpu='local' (--tpu=local) with the tensorflow-tpu package installed; "
    "on a TPU node or legacy Colab pass the worker address (--tpu=grpc://HOST:8470, or set $COLAB_TPU_ADDR / $TPU_NAME); "
    "otherwise pick --strategy=auto, cpu or gpu"
)


def _tpu_address(tpu: Optional[str]) -> str:
    if tpu:
        return tpu
    if os.environ.get("COLAB_TPU_ADDR"):
        return "grpc://" + os.environ["COLAB_TPU_ADDR"]
    if os.environ.get("TPU_NAME"):
        return os.environ["TPU_NAME"]
    return "local"


def tpu_hinted() -> bool:
    """Cheap signs that a TPU might be there (used by ``auto`` only)."""
    if os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"):
        return True
    if os.path.exists("/dev/accel0") or os.environ.get("TPU_ACCELERATOR_TYPE"):
        return True
    try:
        return bool(tf.config.list_physical_devices("TPU"))
    except Exception:  # noqa: BLE001 - any failure means "no TPU here"
        return False


def _probe(address: str, timeout: float = TPU_PROBE_TIMEOUT_S) -> None:
    """Open (and close) a TCP connection to ``grpc://host:port`` within ``timeout`` s."""
    hostport = address[len("grpc://"):]
    host, _, port = hostport.rpartition(":")
    check(bool(host) and port.isdigit(), "TPU address must look like grpc://HOST:PORT", address, "pass e.g. --tpu=grpc://10.0.0.2:8470")
    start = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise config_error(
            f"no TPU answers at {address}: nothing accepted a connection on {host}:{port} within "
            f"{timeout:g} s ({type(e).__name__}: {e}, after {time.monotonic() - start:.1f} s)",
            address, _TPU_FIX,
        ) from None


def tpu_strategy(tpu: Optional[str]) -> tf.distribute.Strategy:
    """A ``TPUStrategy`` on the TPU at ``tpu`` (default: from the environment, else "local"); one clear error if none answers."""
    address = _tpu_address(tpu)
    if address.startswith("grpc://"):
        _probe(address)
    start = time.monotonic()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    except Exception as e:  # noqa: BLE001 - TF raises many types here; all mean "no usable TPU"
        found = tf.config.list_physical_devices("TPU")
        msg = str(e).split("\n")[0]
        msg = msg if len(msg) <= 160 else msg[:157] + "..."
        raise config_error(
            f"no usable TPU at {address!r}: {type(e).__name__}: {msg} "
            f"(after {time.monotonic() - start:.1f} s; {len(found)} TPU device(s) visible)",
            address, _TPU_FIX,
        ) from None
    return strategy
