"""The training checkpoint's routine saves: every N steps and at each epoch's end.

The save itself is the Trainer's (``FitRun.save``: it averages the replicas'
state first and writes through `tfcustom.training.checkpoint.save_checkpoint`);
saves on SIGTERM or a cluster's preemption are `tfcustom.callbacks.stop_signals`'.

Examples:
    >>> Checkpointing(manager=None, every_steps=100).every_steps
    100
"""

from __future__ import annotations

from typing import Dict, Optional

from tfcustom.callbacks.loop_callback import LoopCallback, Step


class Checkpointing(LoopCallback):
    """Save ``manager``'s checkpoint at each epoch end and every ``every_steps`` global steps.

    Built from ``fit(checkpoint_manager=, checkpoint_every_steps=)``; without a
    manager it saves nothing. A periodic save is not made at an epoch's last
    step (the end-of-epoch save follows), nor after a callback stopped training.

    To save at other steps, subclass it (override ``after_step`` / ``on_epoch_end``, save with
    ``self.run.save(self.manager, reason)``) and pass an instance in ``fit(callbacks=[...])``: it replaces this one.

    Args:
      manager: a ``tf.train.CheckpointManager`` of the training checkpoint (or None).
      every_steps: save when the global step crosses a multiple of it (None: only at epoch ends).

    Examples:
        >>> Checkpointing(None).manager is None
        True
    """

    def __init__(self, manager=None, every_steps: Optional[int] = None):
        self.manager = manager
        self.every_steps = every_steps

    def after_step(self, step: Step) -> None:
        if self.manager is None or not self.every_steps or step.done >= self.run.steps:
            return
        if step.global_step // self.every_steps > (step.global_step - step.ran) // self.every_steps:
            self.run.save(self.manager, f"every {self.every_steps} steps")

    def on_epoch_end(self, epoch: int, record: Dict[str, float]) -> None:
        if self.manager is not None:
            self.run.save(self.manager, "end of epoch")
