"""Quiet logs by default: tfcustom's own lines and the progress bar, not TensorFlow's.

``import tfcustom`` imports TensorFlow through `import_tensorflow_quietly`,
which hides TensorFlow's C++ start-up lines (oneDNN notice, CUDA stubs, the
``cuInit`` error of a CPU machine) and sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless
it is already set. `configure` (called by the command-line entry points)
routes TensorFlow's Python logger through absl once (no doubled
``INFO:tensorflow:`` lines) and keeps it at ERROR.

TensorFlow's own logs come back with ``TFCUSTOM_TF_LOGS=1`` in the environment,
or with ``--verbosity=1`` (``-v=1``) on the command line of a tfcustom script.

Examples:
    >>> import tfcustom.training.logs
    >>> tfcustom.training.logs.tf_logs_wanted(["train.py", "--verbosity=1"])
    True
"""

from __future__ import annotations

import logging as _pylogging
import os
import sys
import tempfile
from typing import Optional, Sequence

TF_LOGS_ENV = "TFCUSTOM_TF_LOGS"


def tf_logs_wanted(argv: Optional[Sequence[str]] = None) -> bool:
    """True when ``$TFCUSTOM_TF_LOGS`` is set (not 0) or the command line has ``--verbosity>=1`` / ``-v=N>=1``."""
    if os.environ.get(TF_LOGS_ENV, "").strip() not in ("", "0"):
        return True
    argv = sys.argv if argv is None else argv
    for arg in argv[1:]:
        if arg in ("-v", "--verbosity", "--v"):
            return True
        for prefix in ("-v=", "--v=", "--verbosity="):
            if arg.startswith(prefix):
                try:
                    return int(arg[len(prefix):]) >= 1
                except ValueError:
                    return False
    return False


def import_tensorflow_quietly():
    """``import tensorflow``, hiding the C++ lines it writes to stderr while loading.

    Does nothing special when TensorFlow is already imported or TF's logs are
    wanted (`tf_logs_wanted`). If the import fails, what it wrote is
    replayed so the cause is not lost.
    """
    if "tensorflow" in sys.modules or tf_logs_wanted():
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (e.g. some notebooks)
        import tensorflow

        return tensorflow
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow


def configure(verbose_tf: Optional[bool] = None) -> None:
    """Set up logging for a command-line run.

    Our lines go through absl at INFO. TensorFlow's Python logger propagates to
    absl's handler only (its own handler is removed, so nothing is printed
    twice) and stays at ERROR unless TF's logs are wanted.
    """
    from absl import logging

    import tensorflow as tf

    if verbose_tf is None:
        verbose_tf = tf_logs_wanted()
    if logging.get_verbosity() < logging.INFO:
        logging.set_verbosity(logging.INFO)
    tf_logger = tf.get_logger()
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)
    tf_logger.propagate = True
    tf_logger.setLevel(_pylogging.DEBUG if verbose_tf else _pylogging.ERROR)
    if not verbose_tf:
        # Keras/absl warnings that are about TF internals, not about the user's run.
        absl_logger = _pylogging.getLogger("absl")
        if _drop_tf_internal not in absl_logger.filters:
            absl_logger.addFilter(_drop_tf_internal)


def _drop_tf_internal(record: _pylogging.LogRecord) -> bool:
    path = (record.pathname or "").replace("\\", "/")
    return "/tensorflow/" not in path and "/keras/" not in path and "/tensorflow_datasets/" not in path
