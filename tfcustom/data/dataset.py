"""The in-memory dataset: a [`Split`][tfcustom.data.Split] of images and labels, a
[`Dataset`][tfcustom.data.Dataset] of two splits, and the check every source runs on its labels.

Examples:
    >>> split = validate_split(Split(np.zeros((2, 28, 28), np.uint8), np.array([1, 0])), 10, "mine")
    >>> split.x.shape, split.y.dtype
    ((2, 28, 28, 1), dtype('int32'))
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from tfcustom.errors import data_error


@dataclasses.dataclass(frozen=True)
class Split:
    """Images ``x`` of shape (N, H, W, C) and integer labels ``y`` of shape (N,).

    Attributes:
      x: the images (``uint8``, or floats in [0, 1]).
      y: the labels (or any targets; a dict: one per output of the model).

    Examples:
        >>> split = Split(np.zeros((3, 2, 2, 1), np.uint8), np.array([0, 1, 0]))
        >>> len(split)
        3
    """

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        y = next(iter(self.y.values())) if isinstance(self.y, dict) else self.y  # dict: one target per output
        return int(np.shape(y)[0])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification dataset held in memory: what [`load`][tfcustom.data.load] returns.

    Attributes:
      name: e.g. ``"fashion_mnist"``.
      train: the training [`Split`][tfcustom.data.Split].
      test: the test split.
      num_classes: the number of classes.
      class_names: one name per class.

    Examples:
        >>> from tfcustom.data import from_numpy
        >>> ds = from_numpy(np.zeros((4, 2, 2, 1), np.uint8), np.array([0, 1, 2, 1]),
        ...                 np.zeros((2, 2, 2, 1), np.uint8), np.array([0, 2]))
        >>> ds.num_classes, ds.input_shape, len(ds.train)
        (3, (2, 2, 1), 4)
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    class_names: Sequence[str]

    @property
    def input_shape(self):
        return tuple(self.train.x.shape[1:])


def validate_split(split: Split, num_classes: int, where: str) -> Split:
    """Check shapes and label range; return the split with int32 labels.

    Args:
      split: the [`Split`][tfcustom.data.Split] to check.
      num_classes: labels must lie in ``[0, num_classes)``.
      where: names the split in the error message, e.g. ``"mnist train"``.

    Returns:
      The split with labels of shape ``(N,)`` (an ``(N, 1)`` column is
      flattened) as int32, and a channel axis added to ``(N, H, W)`` images.

    Raises:
      DataError: counts differ, labels are not integer class ids, or out of range.

    Examples:
        >>> split = validate_split(Split(np.zeros((3, 2, 2), np.uint8), np.array([[0], [2], [1]])), 3, "mine")
        >>> split.x.shape, split.y.dtype, split.y.tolist()
        ((3, 2, 2, 1), dtype('int32'), [0, 2, 1])
        >>> validate_split(Split(np.zeros((2, 2, 2)), np.array([0, 5])), 3, "mine train")
        Traceback (most recent call last):
        ...
        tfcustom.errors.DataError: mine train: labels outside [0, 3) (received: (0, 5)). Check the labels or set num_classes to at least 6.
    """
    x, y = np.asarray(split.x), np.asarray(split.y)
    if x.shape[0] != y.shape[0]:
        raise data_error(
            f"{where}: images and labels differ in count",
            (x.shape[0], y.shape[0]),
            "pass one label per example",
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise data_error(f"{where}: labels must be a vector of class ids", y.shape, "pass integer labels of shape (N,)")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise data_error(f"{where}: labels must be integer class ids", str(y.dtype), "pass integer labels, not one-hot or probabilities")
    if y.size:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise data_error(
                f"{where}: labels outside [0, {num_classes})",
                (lo, hi),
                f"check the labels or set num_classes to at least {hi + 1}",
            )
    if x.ndim == 3:  # (N, H, W) grey images -> add a channel axis
        x = x[..., None]
    return Split(x=x, y=y.astype(np.int32))
