"""A learning-rate range test (``--learning_rate=find``).

Leslie Smith's test, as fastai's ``lr_find`` runs it: train a throw-away copy
of the model for at most a few hundred steps while the learning rate grows
exponentially from ``min_lr`` to ``max_lr``, record the loss, smooth it, stop
once it has clearly diverged, and read a learning rate off the curve:

* ``"steepest"``: where the smoothed loss falls fastest against ``log(lr)``
  (before its minimum);
* ``"min_div_10"``: a tenth of the learning rate at the smoothed loss'
  minimum (the minimum itself is already too large: the loss is about to
  rise there).

The run's own model is not touched: ``build`` returns fresh objects. The
result goes into the run's ``autotune.json`` so that a resumed run trains
with the same learning rate without measuring again.

Examples:
    >>> import keras, numpy as np, tensorflow as tf
    >>> from tfcustom.experiment import lr_finder
    >>> x = np.random.default_rng(0).normal(size=(512, 4)).astype("float32")
    >>> y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")
    >>> def build():
    ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    ...     return model, keras.losses.MeanSquaredError(), keras.optimizers.SGD(1e-3)
    >>> batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
    >>> found = lr_finder.find_learning_rate(build, batches, steps=60)
    >>> 1e-3 < found.learning_rate < 1.0
    True
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Iterable, List, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.training import steps as steps_lib
from tfcustom.errors import check
from tfcustom.disk_errors import atomic

RULES = ("steepest", "min_div_10")
#: Where the sweep starts.
DEFAULT_MIN_LR = 1e-7
#: The picture the CLI writes beside the run's other files.
PLOT_FILE = "lr_finder.png"


@dataclasses.dataclass
class LRFinderResult:
    """The learning rate chosen, by which rule, and the curve it was read from.

    Attributes:
      learning_rate: the rate chosen (``steepest`` or ``min_div_10``, as ``rule`` says).
      rule: ``"steepest"`` or ``"min_div_10"``.
      learning_rates: the rates of the steps run (the sweep stops at divergence).
      losses: each step's training loss.
      smoothed: ``losses`` smoothed by `smooth`.
      steepest: where the smoothed loss falls fastest.
      min_div_10: a tenth of the rate at the smoothed loss' minimum.

    ``to_dict()`` and ``from_dict()`` carry it through ``autotune.json``.

    Examples:
        >>> result = LRFinderResult(0.01, "min_div_10", [1e-3, 1e-2, 0.1], [2.0, 1.0, 3.0], [2.0, 1.5, 2.0], 0.01, 0.001)
        >>> LRFinderResult.from_dict(result.to_dict()) == result, result.to_dict()["rule"]
        (True, 'min_div_10')
    """

    learning_rate: float
    rule: str
    learning_rates: List[float]
    losses: List[float]
    smoothed: List[float]
    steepest: float
    min_div_10: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LRFinderResult":
        return cls(**d)


def exponential_rates(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
    """``steps`` learning rates growing geometrically from ``min_lr`` to ``max_lr``.

    Args:
      min_lr: the first rate (> 0).
      max_lr: the last rate.
      steps: how many rates.

    Returns:
      A float array of ``steps`` rates, both ends included.

    Examples:
        >>> exponential_rates(1e-3, 10.0, 5).tolist()
        [0.001, 0.01, 0.1, 1.0, 10.0]
    """
    return np.geomspace(min_lr, max_lr, steps)


def smooth(losses, beta: float = 0.98) -> np.ndarray:
    """Exponential moving average with bias correction (fastai's smoothing).

    Args:
      losses: the losses, in step order.
      beta: the weight of the past (0 <= beta < 1).

    Returns:
      A float array as long as ``losses``: ``avg_i / (1 - beta**i)`` with
      ``avg_i = beta * avg_(i-1) + (1 - beta) * loss_i``.

    Examples:
        >>> smooth([1.0, 2.0, 3.0], beta=0.5).round(4).tolist()   # 0.5 / 0.5, 1.25 / 0.75, 2.125 / 0.875
        [1.0, 1.6667, 2.4286]
        >>> smooth([2.0, 2.0]).round(6).tolist()   # a constant stays constant: no bias toward 0
        [2.0, 2.0]
    """
    avg, out = 0.0, []
    for i, value in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * float(value)
        out.append(avg / (1 - beta**i))
    return np.asarray(out)


def suggest(learning_rates, smoothed) -> tuple:
    """``(steepest, min_div_10)`` read off a smoothed curve (a pure function).

    The steepest point is searched before the minimum only: past it the loss
    rises, and the first points are dominated by the smoothing's warm-up, so
    the first tenth of the curve is skipped.

    Args:
      learning_rates: the rates, increasing (at least 5).
      smoothed: the smoothed loss at each rate (see `smooth`).

    Returns:
      ``(steepest, min_div_10)``: the rate where the smoothed loss falls fastest
      against ``log(lr)``, and a tenth of the rate at its minimum.

    Examples:
        >>> rates = exponential_rates(1e-4, 1.0, 9)   # 1e-4, 3.2e-4, ..., 1
        >>> steepest, min_div_10 = suggest(rates, [5, 5, 4.9, 4, 1.5, 1, 0.5, 2, 8])
        >>> round(steepest, 5), min_div_10   # the fall 4.9 -> 1.5 around 10**-2.5; the minimum at 0.1
        (0.00316, 0.01)
    """
    lrs, s = np.asarray(learning_rates, np.float64), np.asarray(smoothed, np.float64)
    check(lrs.size >= 5 and lrs.size == s.size, "too few points for a learning-rate curve", lrs.size,
          "run the range test for more steps (at least 5)")
    lowest = int(np.nanargmin(s))
    start = max(1, lrs.size // 10)
    end = max(lowest, start + 2)
    slopes = np.gradient(s, np.log(lrs))[start:end]
    steepest = float(lrs[start + int(np.nanargmin(slopes))])
    return steepest, float(lrs[lowest] / 10.0)


def _set_learning_rate(optimizer, value: float) -> None:
    variable = optimizer.learning_rate
    check(isinstance(variable, tf.Variable) or hasattr(variable, "assign"),
          "the range test needs an optimizer with a constant learning rate", type(variable).__name__,
          "build the optimizer for the test with a float learning rate, not a schedule")
    variable.assign(value)


def find_learning_rate(
    build: Callable[[], tuple],
    batches: Iterable,
    *,
    strategy: Optional[tf.distribute.Strategy] = None,
    min_lr: float = DEFAULT_MIN_LR,
    max_lr: float = 10.0,
    steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
    rule: str = "min_div_10",
) -> LRFinderResult:
    """Run the range test; the chosen learning rate is ``result.learning_rate``.

    Args:
      build: ``build() -> (model, loss, optimizer)``, fresh objects each call,
        under the strategy's scope; the optimizer has a float learning rate.
      batches: training batches (a dataset, or a distributed dataset for a
        strategy with several replicas); repeated if it runs out.
      strategy: the run's strategy (default: the current one).
      min_lr: where the sweep starts.
      max_lr: where it ends (geometric steps in between).
      steps: training steps of the sweep (at most; it stops at divergence).
      beta: smoothing of the loss curve (see `smooth`).
      diverge: stop once the smoothed loss exceeds ``diverge`` times its minimum.
      rule: ``"min_div_10"`` or ``"steepest"`` (see the module docstring).

    Returns:
      An `LRFinderResult` (both rules' values, the curve).

    Examples:
        >>> import keras
        >>> x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
        >>> def build():
        ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        ...     return model, keras.losses.MeanSquaredError(), keras.optimizers.SGD(1e-3)
        >>> batches = tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(32).repeat()
        >>> found = find_learning_rate(build, batches, steps=20, min_lr=1e-4, max_lr=10.0)
        >>> found.learning_rate == found.min_div_10, found.learning_rates[0]
        (True, 0.0001)
        >>> 1e-3 < found.learning_rate < 0.93   # SGD is stable here below 2 / (the Hessian's largest eigenvalue) = 0.93
        True
    """
    check(0 < min_lr < max_lr, "min_lr must be positive and below max_lr", (min_lr, max_lr), "pass e.g. 1e-7 and 10")
    check(isinstance(steps, int) and steps >= 5, "steps must be an integer of at least 5", steps, "pass e.g. steps=100")
    check(rule in RULES, "unknown learning-rate rule", rule, f"pass one of {', '.join(RULES)}")
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model, loss, optimizer = build()
    step = steps_lib.make_train_step(model, loss, optimizer, strategy=strategy, on_nonfinite="skip")
    iterator = iter(batches)
    rates = exponential_rates(min_lr, max_lr, steps)
    tried, losses = [], []
    average, lowest = 0.0, math.inf  # the smoothed loss (as `smooth` computes it) and its minimum so far
    for lr in rates:
        _set_learning_rate(optimizer, float(lr))
        value = float(step(iterator, tf.constant(1))["loss"])
        if not math.isfinite(value):  # the sweep ends at the first non-finite loss, which is not kept
            break
        tried.append(float(lr))
        losses.append(value)
        average = beta * average + (1 - beta) * value
        current = average / (1 - beta ** len(losses))
        lowest = min(lowest, current)
        if len(losses) > 5 and current > diverge * lowest:
            break
    check(len(losses) >= 5, "the loss was not finite in the range test's first steps", losses,
          "pass a smaller min_lr (or check the data for NaN)")
    smoothed = smooth(losses, beta)
    steepest, min_div_10 = suggest(tried, smoothed)
    chosen = steepest if rule == "steepest" else min_div_10
    logging.info("Learning-rate range test: %d steps from %.2g to %.2g; steepest %.3g, minimum/10 %.3g; chose %.3g (%s)",
                 len(tried), tried[0], tried[-1], steepest, min_div_10, chosen, rule)
    return LRFinderResult(chosen, rule, tried, losses, smoothed.tolist(), steepest, min_div_10)


def plot(result: LRFinderResult, path: str) -> str:
    """The loss against the learning rate (log axis), both suggestions marked.

    Args:
      result: an `LRFinderResult`.
      path: the picture's file; its extension names the format (``png`` if none).

    Returns:
      ``path``, written atomically.

    Examples:
        >>> import tempfile
        >>> result = LRFinderResult(0.01, "min_div_10", [1e-3, 1e-2, 0.1], [2.0, 1.0, 3.0], [2.0, 1.5, 2.0], 0.01, 0.01)
        >>> path = plot(result, os.path.join(tempfile.mkdtemp(), PLOT_FILE))
        >>> open(path, "rb").read(4)
        b'\\x89PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.learning_rates, result.losses, alpha=0.3, label="loss")
    ax.plot(result.learning_rates, result.smoothed, label="smoothed")
    for value, rule in ((result.steepest, "steepest"), (result.min_div_10, "min_div_10")):
        ax.axvline(value, linestyle="-" if rule == result.rule else "--", color="C2" if rule == "steepest" else "C3",
                   label=f"{rule}: {value:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"Learning-rate range test: chose {result.learning_rate:.2g} ({result.rule})")
    ax.legend()
    fig.tight_layout()
    with atomic(path) as tmp:  # a full disk is one line
        fig.savefig(tmp, dpi=100, format=os.path.splitext(path)[1][1:] or "png")
    plt.close(fig)
    return path
