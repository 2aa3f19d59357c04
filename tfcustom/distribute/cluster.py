"""Starting a multi-worker cluster without silent waits.

``tf.distribute.MultiWorkerMirroredStrategy()`` blocks (holding the GIL) until
every worker of ``TF_CONFIG`` has started, without a word, and ignores Ctrl-C
and SIGTERM meanwhile. So `start_cluster` first waits in Python until
every other worker's port answers. Meanwhile it listens on this worker's own
port (so the others see it too, and a port already in use is reported at
once), and:

* logs ``waiting for workers [host:port, ...] to join (N s so far)`` every
  ``log_every`` seconds, naming the workers whose port does not answer yet;
* stops on Ctrl-C or SIGTERM within a fraction of a second
  (`ClusterInterrupted`, exit code 4 in the CLI);
* stops after ``timeout`` seconds naming the workers that never came
  (`ClusterTimeout`, a [`ConfigError`][tfcustom.errors.ConfigError]: exit code 2).

Then it closes its listener and builds the strategy, which now finds every
worker up.

Examples:
    >>> strategy = start_cluster(tf.distribute.MultiWorkerMirroredStrategy, "10.0.0.1:12345",
    ...                          peers=["10.0.0.2:12345"], timeout=300)   # doctest: +SKIP
"""

from __future__ import annotations

import signal
import socket
import time
from typing import Callable, List, Sequence

from absl import logging

from tfcustom.errors import ConfigError, TfcustomError, format_error

#: Exit code of the CLI when the wait is stopped by Ctrl-C or SIGTERM (as for a preempted run: run it again).
INTERRUPTED_EXIT_CODE = 4


class ClusterTimeout(ConfigError):
    """Some workers of ``TF_CONFIG`` did not start within the timeout."""

    exit_code = 2


class ClusterInterrupted(TfcustomError):
    """Ctrl-C or SIGTERM while waiting for the other workers."""

    exit_code = INTERRUPTED_EXIT_CODE


def unreachable(addresses: Sequence[str], timeout: float = 0.5) -> List[str]:
    """The ``host:port`` addresses that do not accept a TCP connection now."""
    missing = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                pass
        except (OSError, ValueError):
            missing.append(address)
    return missing


def _listen(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("", int(port)))
    except OSError as e:
        sock.close()
        raise ConfigError(format_error(
            f"this worker's port {port} (TF_CONFIG address {address}) cannot be opened ({e.strerror})", address,
            "stop the process that uses it, or give this worker a free port in TF_CONFIG")) from None
    sock.listen(64)
    return sock


def wait_for_peers(own_address: str, peers: Sequence[str], timeout: float, log_every: float = 10.0,
                   poll: float = 0.25) -> None:
    """Return when every address in ``peers`` accepts a connection (see the module doc).

    Must be called from the main thread (it installs SIGINT/SIGTERM handlers for the wait).
    """
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in handled}
    received = []  # a flag, not an exception: a signal may land inside a logging call, which swallows exceptions

    def note(signum, frame):
        received.append(signum)

    start = time.monotonic()
    next_log = start + min(2.0, log_every)
    listener = _listen(own_address)
    try:
        for sig in handled:
            signal.signal(sig, note)
        while not received:
            missing = unreachable(peers, timeout=min(0.5, poll * 2))
            if not missing:
                return
            now = time.monotonic()
            if now - start >= timeout:
                raise ClusterTimeout(format_error(
                    f"workers {missing} of TF_CONFIG never joined the cluster",
                    f"waited {now - start:.0f} s, cluster_timeout={timeout:g}",
                    "start the same command on those hosts (same TF_CONFIG, their own task index), check the "
                    "addresses and that the ports are open, or raise --cluster_timeout"))
            if now >= next_log:
                logging.info("waiting for workers [%s] to join (%.0f s so far; --cluster_timeout=%g)",
                             ", ".join(missing), now - start, timeout)
                next_log = now + log_every
            time.sleep(poll)
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        name = signal.Signals(received[0]).name if received else "SIGINT"
        raise ClusterInterrupted(
            f"{name} while waiting for workers {unreachable(peers)} to join the cluster "
            f"({time.monotonic() - start:.0f} s); nothing was trained. Run the same command again to start over"
        ) from None
    finally:
        listener.close()
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def start_cluster(make_strategy: Callable[[], object], own_address: str, peers: Sequence[str], timeout: float,
                  log_every: float = 10.0):
    """`wait_for_peers`, then ``make_strategy()``."""
    wait_for_peers(own_address, peers, timeout, log_every)
    return make_strategy()
