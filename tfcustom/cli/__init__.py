"""Command-line entry points (the only place that reads absl flags).

`parse_flags` is absl's flag parsing for ``app.run(main,
flags_parser=parse_flags)`` with three differences: ``--help`` shows
tfcustom's flags first, grouped, and exits 0 (``--helpfull`` adds absl's and
TensorFlow's flags and exits 0); a bad flag, an unknown flag or an unreadable
flagfile is one ``error:`` line and exit code 2, like every other config error;
and logging is set up quietly (see `tfcustom.training.logs`).
"""

import difflib
import re
import sys
from typing import Dict, Optional, Sequence

from absl import flags

from tfcustom.cli.help import print_help

HELP_ARGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")
HELPFULL_ARGS = ("--helpfull", "-helpfull")


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _unknown_flag(e: "flags.UnrecognizedFlagError") -> str:
    name = e.flagname
    received = e.flagvalue or f"--{name}"  # absl passes the whole argument, e.g. '--epoch=3'
    close = difflib.get_close_matches(name, list(flags.FLAGS), n=1, cutoff=0.6)
    hint = f"did you mean --{close[0]}? " if close else ""
    return f"unknown flag --{name} (received: {received!r}); {hint}See --help for the flags"


def _flagfile_error(e: Exception) -> str:
    text = str(e)
    found = re.search(r"'([^']+)'", text)
    path = found.group(1) if found else text.replace("ERROR::", "").strip()
    return (f"cannot open flagfile (received: {path!r}). Check the path; configs live in configs/, "
            "e.g. --flagfile=configs/fashion_mnist_cnn.flags")


def report_error(e: Exception, stopped_hint: str = "") -> int:
    """Print the one line for a tfcustom error raised by training; return its exit code.

    4 when training was stopped by SIGTERM/Ctrl-C (``stopped: ...`` plus
    ``stopped_hint``), 3 for a non-finite loss, 75 for a full disk or an I/O
    error (:data:`tfcustom.disk_errors.DISK_EXIT_CODE`), 2 for any
    other tfcustom error.
    """
    from tfcustom.errors import NonFiniteLossError
    from tfcustom.distribute.preemption import TrainingInterrupted

    if isinstance(e, TrainingInterrupted):
        print(f"stopped: {e}{stopped_hint}", file=sys.stderr)
        return TrainingInterrupted.exit_code
    print(f"error: {e}", file=sys.stderr)
    return 3 if isinstance(e, NonFiniteLossError) else getattr(e, "exit_code", 2)


def parse_flags(argv: Sequence[str], groups: Optional[Dict[str, Sequence[str]]] = None, doc: Optional[str] = None):
    """Parse ``argv`` into ``flags.FLAGS``; help and errors as described in the module doc."""
    from tfcustom.training import logs

    args = list(argv[1:])
    if any(a in HELPFULL_ARGS for a in args):
        print_help(groups, doc, full=True)
        sys.exit(0)
    if any(a in HELP_ARGS for a in args):
        print_help(groups, doc, full=False)
        sys.exit(0)
    try:
        rest = flags.FLAGS(list(argv))
    except flags.UnrecognizedFlagError as e:
        _error(_unknown_flag(e) + ".")
    except flags.CantOpenFlagFileError as e:
        _error(_flagfile_error(e) + ".")
    except flags.Error as e:
        message = str(e).strip().rstrip(".")
        _error(f"{message}. See --help for every flag and its allowed values.")
    logs.configure()
    return rest
