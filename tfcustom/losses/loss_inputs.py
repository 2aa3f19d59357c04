"""Catch a loss fed the wrong kind of predictions: logits vs probabilities.

Keras' classification losses take probabilities by default
(``from_logits=False``) and so do tfcustom's; tfcustom's models output
logits. Mixing the two trains quietly to a poor model (softmax outputs read
as logits) or computes nonsense (logits read as probabilities), so:

* `mismatch` looks at one batch of predictions and returns what is wrong,
  with the fix, or ``None``;
* the [`tfcustom.Trainer`][tfcustom.Trainer] runs it on the first training batch before
  training and refuses with a [`tfcustom.errors.ConfigError`][tfcustom.errors.ConfigError];
* tfcustom's losses run it on eager calls (a custom loop, a notebook cell) and
  warn once per loss object.

Inside a ``tf.function`` nothing is checked (no Python side effects there).

>>> import numpy as np, tfcustom
>>> loss = tfcustom.losses.SparseCategoricalCrossentropy()          # from_logits=False
>>> mismatch(loss, np.array([[2.0, -1.0, 0.5]])) is not None        # logits
True
"""

from __future__ import annotations

import inspect
from typing import Optional

import numpy as np

#: Slack for probabilities computed in float16/bfloat16.
TOLERANCE = 1e-3


def from_logits_of(loss) -> Optional[bool]:
    """The loss' ``from_logits`` setting, or ``None`` when it has none
    (e.g. mean squared error)."""
    value = getattr(loss, "from_logits", None)
    if value is None:
        try:
            value = loss.get_config().get("from_logits")
        except Exception:  # noqa: BLE001 - a loss without a usable config has no such setting
            value = None
    fn = getattr(loss, "fn", None)
    if value is None and callable(fn):  # a function wrapped by compile() / the Trainer: its own default
        value = getattr(loss, "_fn_kwargs", {}).get("from_logits")
        if value is None:
            try:
                param = inspect.signature(fn).parameters.get("from_logits")
            except (TypeError, ValueError):
                param = None
            value = None if param is None else param.default
    return value if isinstance(value, bool) else None


def mismatch(loss, y_pred) -> Optional[str]:
    """What is wrong with feeding ``y_pred`` (a ``[batch, classes]`` array) to
    ``loss``, or ``None``.

    * ``from_logits=False`` and values outside ``[0, 1]``: logits given to a
      loss that expects probabilities.
    * ``from_logits=True`` and every row already a probability distribution
      (values in ``[0, 1]`` summing to 1): probabilities given as logits.
    """
    setting = from_logits_of(loss)
    pred = np.asarray(y_pred, dtype=np.float64)
    if setting is None or pred.ndim < 2 or pred.shape[-1] < 2 or pred.size == 0 or not np.all(np.isfinite(pred)):
        return None
    name = type(loss).__name__
    low, high = float(pred.min()), float(pred.max())
    if not setting and (low < -TOLERANCE or high > 1 + TOLERANCE):
        return (f"{name}(from_logits=False) expects probabilities in [0, 1], but the model outputs values in "
                f"[{low:.3g}, {high:.3g}] (logits: tfcustom's models end without softmax) (received: from_logits=False). "
                f"Pass {name}(from_logits=True), or end the model with a softmax")
    rows = pred.reshape(-1, pred.shape[-1])
    if setting and low >= -TOLERANCE and high <= 1 + TOLERANCE and np.allclose(rows.sum(axis=-1), 1.0, atol=TOLERANCE):
        return (f"{name}(from_logits=True) expects logits, but every row of the model's output is already a probability "
                "distribution (values in [0, 1] summing to 1: the model ends with a softmax) (received: from_logits=True). "
                f"Pass {name}(from_logits=False) (Keras' default), or remove the final softmax")
    return None
