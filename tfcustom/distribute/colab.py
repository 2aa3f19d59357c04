"""Notebook helpers: pick the TPU if it works, else explain why and fall back.

On a Colab TPU runtime TensorFlow is easy to get wrong: TensorFlow is not
preinstalled there (since March 2025), only the ``tensorflow-tpu`` build can
drive the TPU, and installing anything that depends on ``tensorflow`` (the CPU
build) on top of it overwrites it. TensorFlow then fails deep inside
``initialize_tpu_system`` with ``No OpKernel was registered to support Op
'ConfigureDistributedTPU' ... Registered devices: [CPU]``.
[`select_strategy`][tfcustom.distribute.colab.select_strategy] turns that (and the other ways a TPU fails) into one
paragraph of what happened and what to try, and carries on with the GPU(s) or
with ``num_cpu_replicas`` logical CPU devices, so that the rest of a notebook
runs the very same cells:

>>> from tfcustom.distribute import colab
>>> choice = colab.select_strategy(num_cpu_replicas=8)   # first, before any TF op
>>> choice.device, choice.strategy.num_replicas_in_sync
('CPU', 8)

[`load_fashion_mnist`][tfcustom.distribute.colab.load_fashion_mnist] reads the IDX files where they are installed
(Debian's ``dataset-fashion-mnist``) and downloads them with
``keras.datasets`` elsewhere (Colab).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.metadata
import os
import sys
import textwrap
from typing import Callable, Dict, Optional

__all__ = [
    "TPU_PACKAGE", "StrategyChoice", "TpuFailure", "diagnose_tpu_failure", "in_colab",
    "installed_versions", "load_fashion_mnist", "select_strategy", "tpu_runtime",
]

#: The pip package whose TensorFlow build has the TPU kernels.
TPU_PACKAGE = "tensorflow-tpu"
_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", TPU_PACKAGE, "libtpu", "keras")


def in_colab() -> bool:
    """True inside a Google Colab runtime.

    Returns:
      Whether ``google.colab`` is imported or ``$COLAB_RELEASE_TAG`` is set.

    Examples:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"COLAB_RELEASE_TAG": "release-colab_20251201-060111_RC00"}):
        ...     print(in_colab())
        True
    """
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


def tpu_runtime() -> bool:
    """Cheap signs that this machine has a TPU (no TensorFlow call).

    Returns:
      True when ``$COLAB_TPU_ADDR``, ``$TPU_NAME`` or ``$TPU_ACCELERATOR_TYPE``
      is set, or a TPU device file (``/dev/accel*``, ``/dev/vfio/*``) exists.

    Examples:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"TPU_ACCELERATOR_TYPE": "v5litepod-8"}):
        ...     print(tpu_runtime())
        True
    """
    if any(os.environ.get(k) for k in ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE")):
        return True
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def installed_versions() -> Dict[str, Optional[str]]:
    """Installed versions of the packages a TPU run depends on (None: not installed).

    Returns:
      ``{distribution name: version or None}`` for ``tensorflow``,
      ``tensorflow-cpu``, ``tensorflow-tpu``, ``libtpu`` and ``keras``.

    Examples:
        >>> import keras
        >>> versions = installed_versions()
        >>> sorted(versions)
        ['keras', 'libtpu', 'tensorflow', 'tensorflow-cpu', 'tensorflow-tpu']
        >>> versions["keras"] == keras.__version__
        True
    """
    versions = {}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclasses.dataclass(frozen=True)
class TpuFailure:
    """Why the TPU could not be used, as [`diagnose_tpu_failure`][tfcustom.distribute.colab.diagnose_tpu_failure] tells it.

    Attributes:
      kind: ``"no_tpu_kernels"`` (the CPU build of TensorFlow),
        ``"version_mismatch"`` (``tensorflow`` and ``tensorflow-tpu`` differ),
        ``"no_tpu"`` (none attached) or ``"other"``.
      paragraph: what happened and what to try, for a person.

    Examples:
        >>> failure = diagnose_tpu_failure(ValueError("Please provide a TPU Name to connect to."), versions={})
        >>> failure.kind, failure.paragraph.startswith("The TPU could not be used: no TPU is attached to this runtime.")
        ('no_tpu', True)
    """

    kind: str
    paragraph: str


def _error_text(error: BaseException) -> str:
    """The messages of ``error`` and of the errors it was raised from or during."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(parts)


def _root_message(error: BaseException) -> str:
    """First line of the innermost error of the chain (TensorFlow's own, under tfcustom's ConfigError)."""
    seen = set()
    while id(error) not in seen and (error.__cause__ or error.__context__) is not None:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _versions_text(versions: Dict[str, Optional[str]]) -> str:
    shown = [k for k in _DISTRIBUTIONS if k != "keras" and (versions.get(k) or k in ("tensorflow", TPU_PACKAGE))]
    return ", ".join(f"{k} {versions.get(k) or 'not installed'}" for k in shown)


def diagnose_tpu_failure(error: BaseException, versions: Optional[Dict[str, Optional[str]]] = None,
                         fallback: str = "the CPU") -> TpuFailure:
    """One paragraph explaining a failed TPU start, from the error chain and the installed packages.

    Args:
      error: what starting the TPU raised (its ``__cause__`` / ``__context__`` chain is read too).
      versions: ``{distribution: version or None}`` (default: [`installed_versions`][tfcustom.distribute.colab.installed_versions]).
      fallback: what the run continues on, for the paragraph.

    Returns:
      A [`TpuFailure`][tfcustom.distribute.colab.TpuFailure].

    Examples:
        >>> error = RuntimeError("No OpKernel was registered to support Op 'ConfigureDistributedTPU' ... "
        ...                      "Registered devices: [CPU]")
        >>> failure = diagnose_tpu_failure(error, versions={"tensorflow": "2.20.0", "tensorflow-tpu": None})
        >>> failure.kind, "Installed: tensorflow 2.20.0, tensorflow-tpu not installed." in failure.paragraph
        ('no_tpu_kernels', True)
        >>> diagnose_tpu_failure(RuntimeError("..."), versions={"tensorflow": "2.19.0", "tensorflow-tpu": "2.20.0"}).kind
        'version_mismatch'
    """
    versions = installed_versions() if versions is None else versions
    text = _error_text(error)
    root = _root_message(error)
    first = root if len(root) <= 200 else root[:197] + "..."
    tf_version, tpu_version = versions.get("tensorflow"), versions.get(TPU_PACKAGE)
    install = (f"run `pip uninstall -y tensorflow tensorflow-cpu` and `pip install {TPU_PACKAGE}==<version>` (the setup "
               "cell does this on a fresh TPU runtime, and installs tfcustom with --no-deps so that pip does not bring "
               "the CPU build back), then Runtime > Restart session and run all again")
    if tf_version and tpu_version and tf_version != tpu_version:
        kind = "version_mismatch"
        what = (f"the TensorFlow and {TPU_PACKAGE} versions do not match (tensorflow {tf_version}, {TPU_PACKAGE} "
                f"{tpu_version}): both packages install the same `tensorflow` module, so the one installed last "
                "overwrote the other and TensorFlow cannot drive the TPU")
    elif "ConfigureDistributedTPU" in text or "Registered devices: [CPU" in text:
        kind = "no_tpu_kernels"
        what = ("this TensorFlow build has no TPU kernels (`No OpKernel was registered to support Op "
                "'ConfigureDistributedTPU'`, registered devices: CPU only). That happens when the CPU build of "
                "TensorFlow is the one installed on a TPU runtime: Colab's TPU runtimes no longer come with "
                f"TensorFlow, and `pip install tensorflow` (or of a package that depends on it) brings the CPU build, "
                f"which also replaces a {TPU_PACKAGE} installed before it")
    elif any(s in text for s in ("TPU not found", "Please provide a TPU Name", "0 TPU device(s)", "no TPU answers",
                                 "Could not find any TPU", "No TPU")):
        kind = "no_tpu"
        what = "no TPU is attached to this runtime"
        install = ("pick Runtime > Change runtime type > TPU (a v2-8 has the 8 cores this notebook shards over) and "
                   "run all again; on a Cloud TPU VM pass tpu='local', on a TPU node its grpc:// address")
    else:
        kind = "other"
        what = f"TensorFlow failed to start the TPU ({first})"
    paragraph = (f"The TPU could not be used: {what}. Installed: {_versions_text(versions)}. What to try: {install}; or "
                 f"pick a GPU or CPU runtime. Continuing on {fallback}, so the rest of the notebook runs the same cells. "
                 f"(The error was: {first})")
    return TpuFailure(kind, paragraph)


@dataclasses.dataclass
class StrategyChoice:
    """What [`select_strategy`][tfcustom.distribute.colab.select_strategy] picked.

    Attributes:
      strategy: the ``tf.distribute`` strategy to build the model under.
      device: ``"TPU"``, ``"GPU"`` or ``"CPU"``.
      failure: the [`TpuFailure`][tfcustom.distribute.colab.TpuFailure] that made it fall back
        (None if it did not; ``fell_back`` says the same).

    Examples:
        >>> choice = select_strategy(num_cpu_replicas=0, try_tpu=False)
        >>> choice.device, choice.strategy.num_replicas_in_sync, choice.fell_back
        ('CPU', 1, False)
    """

    strategy: object
    device: str
    failure: Optional[TpuFailure] = None

    @property
    def fell_back(self) -> bool:
        return self.failure is not None


def select_strategy(num_cpu_replicas: int = 8, tpu: Optional[str] = None, try_tpu: Optional[bool] = None,
                    echo: Callable[[str], None] = print) -> StrategyChoice:
    """The TPU if it works, else every GPU, else ``num_cpu_replicas`` logical CPUs.

    Call it first, before anything runs a TensorFlow op: the CPU is split into
    ``num_cpu_replicas`` logical devices up front (only possible before
    TensorFlow initialises its devices, and harmless on a TPU machine), so
    that a fall-back after a failed TPU start still has them.

    Args:
      num_cpu_replicas: logical CPU devices to mirror over when there is no
        TPU or GPU (0 or None: TF's default strategy, one replica).
      tpu: passed to ``tfcustom.distribute.strategy.select("tpu", tpu=...)``.
      try_tpu: try the TPU (default: when [`tpu_runtime`][tfcustom.distribute.colab.tpu_runtime] or ``tpu`` says so).
      echo: where the explanation of a TPU failure goes (default: print, wrapped).

    Returns:
      A [`StrategyChoice`][tfcustom.distribute.colab.StrategyChoice].

    Examples:
        On a machine without a TPU, trying one falls back and says why:

        >>> told = []
        >>> choice = select_strategy(num_cpu_replicas=0, try_tpu=True, echo=told.append)
        >>> choice.device, choice.fell_back, told[0].startswith("The TPU could not be used:")
        ('CPU', True, True)
    """
    import tensorflow as tf

    from tfcustom.distribute import strategy as strategy_lib

    gpus = tf.config.list_physical_devices("GPU")
    if num_cpu_replicas and not gpus:
        strategy_lib.configure_cpu_replicas(num_cpu_replicas)
    if try_tpu is None:
        try_tpu = bool(tpu) or tpu_runtime()
    failure = None
    fallback = f"{len(gpus)} GPU(s)" if gpus else (f"{num_cpu_replicas} logical CPU devices" if num_cpu_replicas else "the CPU")
    if try_tpu:
        try:
            return StrategyChoice(strategy_lib.select("tpu", tpu=tpu), "TPU")
        except Exception as e:  # noqa: BLE001 - every TPU failure falls back, explained
            failure = diagnose_tpu_failure(e, fallback=fallback)
            echo(textwrap.fill(failure.paragraph, width=100, break_on_hyphens=False, break_long_words=False))
    if gpus:
        return StrategyChoice(strategy_lib.select("gpu"), "GPU", failure)
    if num_cpu_replicas:
        return StrategyChoice(strategy_lib.select("mirrored", num_cpu_replicas=num_cpu_replicas), "CPU", failure)
    return StrategyChoice(strategy_lib.select("cpu"), "CPU", failure)


def load_fashion_mnist(data_dir: Optional[str] = None):
    """Fashion-MNIST as a [`tfcustom.data.Dataset`][tfcustom.data.Dataset]: the IDX files from
    ``data_dir`` / ``$TFCUSTOM_DATA_DIR`` / the Debian path when that directory
    exists, else downloaded by ``keras.datasets.fashion_mnist`` (needs a network).

    Args:
      data_dir: the directory of the four IDX files (default:
        ``$TFCUSTOM_DATA_DIR``, then ``/usr/share/datasets/fashion-mnist``).

    Returns:
      The [`Dataset`][tfcustom.data.Dataset] (uint8 images ``(N, 28, 28, 1)``, 10 classes).

    Examples:
        >>> import tempfile
        >>> import numpy as np
        >>> from tfcustom.data import write_idx
        >>> d = tempfile.mkdtemp()
        >>> for split, n in (("train", 3), ("t10k", 2)):
        ...     write_idx(os.path.join(d, f"{split}-images-idx3-ubyte.gz"), np.zeros((n, 28, 28), np.uint8))
        ...     write_idx(os.path.join(d, f"{split}-labels-idx1-ubyte.gz"), np.array([9, 0, 1][:n], np.uint8))
        >>> ds = load_fashion_mnist(d)
        >>> len(ds.train), [ds.class_names[i] for i in ds.test.y]
        (3, ['Ankle boot', 'T-shirt/top'])
    """
    from tfcustom.data import sources

    if os.path.isdir(sources.resolve_data_dir("fashion_mnist", data_dir)):
        return sources.load("fashion_mnist", data_dir)
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    return sources.from_numpy(x_train, y_train, x_test, y_test, num_classes=10,
                              class_names=sources.FASHION_MNIST_CLASSES, name="fashion_mnist")
