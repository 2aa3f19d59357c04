"""The epoch's record in the log and on disk: one absl line per epoch, ``history.json`` / ``history.csv``.

Examples:
    >>> HistoryFiles(None).directory is None
    True
"""

from __future__ import annotations

from typing import Dict, Optional

from absl import logging

from tfcustom.callbacks.loop_callback import LoopCallback


class EpochLog(LoopCallback):
    """Log (absl INFO) ``epoch i/n: loss=..., accuracy=..., ...`` at each epoch's end.

    A subclass passed in ``fit(callbacks=[...])`` (overriding ``on_epoch_end``) replaces it.

    Examples:
        >>> EpochLog().run is None
        True
    """

    def on_epoch_end(self, epoch: int, record: Dict[str, float]) -> None:
        logging.info("epoch %d/%d: %s", epoch + 1, self.run.epochs, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))


class HistoryFiles(LoopCallback):
    """Write the Trainer's history (``history.json``, ``history.csv``) to ``directory`` at each epoch's end.

    Built from ``Trainer(output_dir=...)``.

    Args:
      directory: where to write (None: nothing is written).

    Examples:
        >>> HistoryFiles("runs/demo").directory
        'runs/demo'
    """

    def __init__(self, directory: Optional[str] = None):
        self.directory = directory

    def on_epoch_end(self, epoch: int, record: Dict[str, float]) -> None:
        if self.directory:
            self.run.trainer.history.write(self.directory)
