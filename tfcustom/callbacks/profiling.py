"""A profiler trace of the steps ``SummaryWriter(profile_steps=(start, end))`` names.

Examples:
    >>> Profiler(None).writer is None
    True
"""

from __future__ import annotations

from tfcustom.callbacks.loop_callback import LoopCallback, Step


class Profiler(LoopCallback):
    """Start and stop the TensorBoard profiler around the train-step calls of ``writer.profile_steps``.

    Args:
      writer: the Trainer's [`SummaryWriter`][tfcustom.callbacks.summaries.SummaryWriter] (None: nothing).

    Examples:
        >>> Profiler(None).on_step_begin(0, 1)   # no writer: nothing
    """

    def __init__(self, writer=None):
        self.writer = writer

    def on_step_begin(self, batch: int, num_steps: int) -> None:
        if self.writer is not None:
            self.writer.profile(int(self.run.trainer.global_step.numpy()), num_steps)

    def on_step_end(self, step: Step) -> None:
        if self.writer is not None:
            self.writer.profile(step.global_step, 0)
