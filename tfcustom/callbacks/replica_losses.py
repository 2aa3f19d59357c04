"""Each replica's share of the loss, logged every N steps (``Trainer(log_replica_losses=N)``).

The loss of a step is the sum of the replicas' shares; a replica whose share
differs a lot from the others' points at uneven data or a broken device.

Examples:
    >>> ReplicaLossLog(every=0).every   # 0: never
    0
"""

from __future__ import annotations

import numpy as np
from absl import logging

from tfcustom.callbacks.loop_callback import LoopCallback, Step


class ReplicaLossLog(LoopCallback):
    """Log (absl INFO) each replica's share of the last step's loss every ``every`` steps and at each epoch's end.

    Args:
      every: steps between two lines; 0 logs nothing.

    Examples:
        >>> ReplicaLossLog(10).every
        10
    """

    def __init__(self, every: int = 0):
        self.every = every

    def on_step_end(self, step: Step) -> None:
        if not self.every:
            return
        if step.done >= self.run.steps or step.global_step // self.every > (step.global_step - step.ran) // self.every:
            out = step.out
            shares = np.asarray(out["replica_losses"])
            scaler = int(out.get("loss_scale_skipped", 0))
            logging.info("step %d: loss %.6g = sum of the %d replicas' shares [%s]%s", step.global_step, float(out["loss"]), len(shares),
                         ", ".join(f"{v:.6g}" for v in shares), f"; {scaler} step(s) skipped by the loss scaler" if scaler else "")
