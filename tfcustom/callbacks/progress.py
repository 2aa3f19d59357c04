"""The progress bar of ``fit``: Keras' ``Progbar``, one per epoch.

Examples:
    >>> bar = ProgressBar(verbose=0)   # shows nothing
    >>> bar.verbose
    0
"""

from __future__ import annotations

from typing import Dict

import keras

from tfcustom.callbacks.loop_callback import LoopCallback, Step

NOT_SHOWN = ("epoch", "time_s")  # keys of the epoch record the bar does not show


class ProgressBar(LoopCallback):
    """``Epoch i/n`` and a ``keras.utils.Progbar`` of the running loss and metrics, per epoch.

    Built by the Trainer from its ``verbose`` (1: shown, 0: nothing). To
    replace it, subclass it (override ``on_epoch_begin``, ``on_step_end``,
    ``on_epoch_end``) and pass an instance in ``fit(callbacks=[...])``; to show
    none, pass ``ProgressBar(verbose=0)`` or build the Trainer with ``verbose=0``.

    Args:
      verbose: 1 shows the bar, 0 shows nothing.

    Examples:
        >>> class Quiet(ProgressBar):
        ...     def on_step_end(self, step):
        ...         pass   # only the epoch lines
        >>> Quiet(verbose=1).verbose
        1
    """

    def __init__(self, verbose: int = 1):
        self.verbose = verbose
        self.bar = None

    def on_epoch_begin(self, epoch: int) -> None:
        self.bar = keras.utils.Progbar(self.run.steps, stateful_metrics=None, verbose=self.verbose) if self.verbose else None
        if self.bar is not None:
            print(f"Epoch {epoch + 1}/{self.run.epochs}")

    def on_step_end(self, step: Step) -> None:
        if self.bar is not None:
            self.bar.update(step.done, values=list(step.logs.items()), finalize=False)

    def on_epoch_end(self, epoch: int, record: Dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(self.run.steps, values=[(k, v) for k, v in record.items() if k not in NOT_SHOWN], finalize=True)
