"""The skip list of ``--on_nonfinite=rollback``: global steps whose batch is consumed without being applied.

The list lives in one ``tf.Variable`` of a fixed capacity (unused slots hold
-1), so the compiled step reads it without retracing when it grows, and it is
saved in the training checkpoint (`tfcustom.training.checkpoint`): a run
resumed after a rollback skips the same batches. Steps are numbered from 1:
step ``s`` is the one that brings the global step from ``s - 1`` to ``s``
(the checkpoint ``ckpt-s`` is written after it).

Examples:
    >>> skips = SkipList()
    >>> skips.add(7)
    >>> skips.steps(), bool(skips.contains(7)), bool(skips.contains(8))
    ([7], True, False)
"""

from __future__ import annotations

from typing import List

import numpy as np
import tensorflow as tf

from tfcustom.errors import check

CAPACITY = 64  # the most steps a run can skip (and so the highest --max_rollbacks)


class SkipList:
    """Global step numbers (from 1) to consume without applying, in a checkpointable variable.

    Create it under the strategy's scope (a mirrored variable: every replica
    reads the same list).

    Args:
      capacity: the most steps it can hold.

    Examples:
        >>> skips = SkipList(capacity=4)
        >>> skips.assign([9, 3])
        >>> skips.add(3)  # listed already
        >>> skips.steps(), len(skips), bool(skips.contains(9))
        ([9, 3], 2, True)
    """

    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self.variable = tf.Variable(np.full([capacity], -1, np.int64), trainable=False, name="skip_list")

    def contains(self, step) -> tf.Tensor:
        """A scalar bool tensor: global step ``step`` is on the list (usable in a ``tf.function``)."""
        return tf.reduce_any(tf.equal(tf.convert_to_tensor(self.variable), tf.cast(step, tf.int64)))

    def steps(self) -> List[int]:
        """The listed steps, in the order they were added."""
        return [int(s) for s in np.asarray(self.variable.numpy()) if s >= 0]

    def add(self, step: int) -> None:
        """Append ``step`` (a no-op when it is listed already)."""
        self.assign(self.steps() + [int(step)])

    def assign(self, steps: List[int]) -> None:
        """Make the list ``steps`` (duplicates dropped, the order kept)."""
        steps = list(dict.fromkeys(int(s) for s in steps))
        check(len(steps) <= self.capacity, f"the skip list is full ({self.capacity} steps)", steps[-1],
              "fix the divergence (a lower learning rate, --clip_global_norm, the data) instead of skipping more batches")
        values = np.full([self.capacity], -1, np.int64)
        values[: len(steps)] = steps
        self.variable.assign(values)

    def __len__(self) -> int:
        return len(self.steps())
