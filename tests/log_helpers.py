"""absl's log messages captured in-process (not a test module)."""

import contextlib
import logging

from absl import logging as absl_logging


class Records(logging.Handler):
    """Keeps every message it receives."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def absl_info_messages():
    """Inside: absl logs at INFO; yields the list of the messages logged (read it after the block)."""
    records, absl_logger = Records(), logging.getLogger("absl")
    level, verbosity = absl_logger.level, absl_logging.get_verbosity()
    absl_logger.addHandler(records)
    absl_logger.setLevel(logging.INFO)
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        yield records.messages
    finally:
        absl_logger.removeHandler(records)
        absl_logger.setLevel(level)
        absl_logging.set_verbosity(verbosity)
