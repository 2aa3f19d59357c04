"""The values the Trainer reports from its metrics, and their training state while an evaluation shows in them.

``fit``'s logs and ``evaluate``'s results are [`results`][tfcustom.training.metric_state.results]: the loss and each
metric's scalar result (a metric with a vector result, e.g. a per-class one,
is left out of the logs). After ``evaluate`` the user's metric objects hold the
evaluation's values, as after ``keras.Model.evaluate``
([`show_evaluation`][tfcustom.training.metric_state.show_evaluation]); the next ``fit`` gives them back their
training state ([`restore_training_state`][tfcustom.training.metric_state.restore_training_state]).

Examples:
    >>> import keras
    >>> loss = keras.metrics.Mean(name="loss")
    >>> loss.update_state([1.0, 2.0])
    >>> results(loss, [], prefix="val_")
    {'val_loss': 1.5}
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from tfcustom.training.compile_args import copy_state


def scalar_results(metric) -> Dict[str, float]:
    """A metric's result as ``{name: float}``; ``{}`` for a vector result.

    Args:
      metric: a Keras metric.

    Returns:
      ``{metric.name: value}`` when the result is a scalar, else ``{}``.

    Examples:
        >>> import keras
        >>> m = keras.metrics.Mean(name="m")
        >>> m.update_state([3.0])
        >>> scalar_results(m)
        {'m': 3.0}
    """
    value = np.asarray(metric.result())
    if value.ndim == 0:
        return {metric.name: float(value)}
    return {}


def results(loss_metric, metrics: Sequence, prefix: str = "") -> Dict[str, float]:
    """``{prefix + "loss": ..., prefix + <metric name>: ...}`` as Python floats.

    Args:
      loss_metric: the running mean of the loss.
      metrics: the metrics (vector results left out).
      prefix: prepended to every key (``"val_"``).

    Returns:
      The logs.

    Examples:
        >>> import keras
        >>> results(keras.metrics.Mean(name="loss"), [])
        {'loss': 0.0}
    """
    out = {prefix + "loss": float(loss_metric.result())}
    for m in metrics:
        out.update({prefix + k: v for k, v in scalar_results(m).items()})
    return out


def show_evaluation(eval_metrics: Sequence, train_metrics: Sequence, saved: Optional[List]) -> List:
    """Copy the evaluation's state into the training metrics, keeping their training state first.

    Args:
      eval_metrics: the metrics the evaluation updated.
      train_metrics: the user's metric objects (same kinds, same order).
      saved: the training state kept by an earlier call not yet restored (None: keep it now).

    Returns:
      The kept training state, for [`restore_training_state`][tfcustom.training.metric_state.restore_training_state].

    Examples:
        >>> import keras
        >>> train, val = keras.metrics.Mean(), keras.metrics.Mean()
        >>> train.update_state([1.0]); val.update_state([5.0])
        >>> saved = show_evaluation([val], [train], None)
        >>> float(train.result())
        5.0
        >>> restore_training_state([train], saved) is None and float(train.result())
        1.0
    """
    if saved is None:
        saved = [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for m in train_metrics for v in m.variables]
    for source, target in zip(eval_metrics, train_metrics):
        copy_state(source, target)
    return saved


def restore_training_state(train_metrics: Sequence, saved: Optional[List]) -> None:
    """Give the metrics back the training state [`show_evaluation`][tfcustom.training.metric_state.show_evaluation] kept (None: nothing to do).

    Args:
      train_metrics: the user's metric objects.
      saved: what ``show_evaluation`` returned, or None.

    Returns:
      None (the state is given back; keep None as "nothing kept").

    Examples:
        >>> restore_training_state([], None) is None
        True
    """
    if saved is not None:
        for v, value in zip([v for m in train_metrics for v in m.variables], saved):
            v.assign(value)
