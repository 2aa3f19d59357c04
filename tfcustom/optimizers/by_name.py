"""Optimizers and learning-rate schedules by name.

* [`SGD`][tfcustom.optimizers.SGD]: plain, momentum and Nesterov SGD written from scratch on
  `keras.optimizers.Optimizer` (same update rules, bit for bit, as
  ``keras.optimizers.SGD``), to show what an optimizer's ``build`` and
  ``update_step`` do.
* [`get`][tfcustom.optimizers.get]: an optimizer from its name (``"sgd"``, ``"momentum"``,
  ``"nesterov"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``, ``"keras_sgd"``), with
  decoupled weight decay and gradient accumulation passed to Keras.
* [`make_schedule`][tfcustom.optimizers.make_schedule]: a learning rate (float) or a
  ``keras.optimizers.schedules.LearningRateSchedule`` from its name
  (``"constant"``, ``"cosine"``, ``"exponential"``, ``"step"``).

Sharpness-Aware Minimization is not an optimizer here but a gradient function
for the train step: see [`tfcustom.training.sam`][tfcustom.training.sam].

>>> import tfcustom.optimizers as opt
>>> schedule = opt.make_schedule("cosine", 0.1, total_steps=100, warmup_steps=10)
>>> optimizer = opt.get("nesterov", schedule, weight_decay=1e-4)
>>> type(optimizer).__name__, optimizer.momentum, optimizer.nesterov
('SGD', 0.9, True)
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tfcustom.errors import ConfigError, check, check_one_of, config_error

__all__ = ["SGD", "get", "names", "make_schedule", "schedule_names"]


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_nonneg_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# --- SGD from scratch ---
@keras.saving.register_keras_serializable(package="tfcustom")
class SGD(keras.optimizers.Optimizer):
    """Stochastic gradient descent, plain, with momentum, or Nesterov.

    The update rules are exactly those of ``keras.optimizers.SGD``, for the
    gradient ``g`` and learning rate ``lr`` of the current step:

    * ``momentum == 0``: ``w <- w - lr * g``;
    * momentum: ``v <- momentum * v - lr * g``; ``w <- w + v``;
    * Nesterov: ``v <- momentum * v - lr * g``;
      ``w <- w + momentum * v - lr * g``.

    ``v`` (one "momentum" slot per variable, created in [`build`][tfcustom.optimizers.SGD.build]) starts
    at zero. Everything else (learning-rate schedules, decoupled
    ``weight_decay``, ``clipnorm``/``global_clipnorm``, EMA,
    ``gradient_accumulation_steps``, tf.distribute) is handled by the Keras
    base class.

    Args:
        learning_rate: float or ``keras.optimizers.schedules.LearningRateSchedule``.
        momentum: float in ``[0, 1]``; 0 means plain SGD.
        nesterov: use Nesterov momentum (needs ``momentum > 0``).
        **kwargs: the Keras base-optimizer arguments (``weight_decay``,
            ``clipnorm``, ``global_clipnorm``, ``use_ema``,
            ``gradient_accumulation_steps``, ``name``, ...).

    Examples:
        >>> import numpy as np, keras
        >>> from tfcustom.optimizers import SGD
        >>> w = keras.Variable(np.array([1.0, 2.0], "float32"))
        >>> optimizer = SGD(learning_rate=0.1, momentum=0.9)
        >>> g = np.array([1.0, 1.0], "float32")
        >>> _ = optimizer.apply_gradients([(g, w)])
        >>> _ = optimizer.apply_gradients([(g, w)])
        >>> [round(float(x), 4) for x in w.numpy()]  # v: -0.1, then -0.19
        [0.71, 1.71]
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name=None, **kwargs):
        check(
            _is_number(momentum) and 0.0 <= momentum <= 1.0,
            "momentum must be a number in [0, 1]",
            momentum,
            "pass momentum=0.0 for plain SGD or e.g. momentum=0.9",
        )
        check(
            isinstance(nesterov, bool),
            "nesterov must be a bool",
            nesterov,
            "pass nesterov=True or nesterov=False",
        )
        check(
            not nesterov or momentum > 0,
            "nesterov=True needs a positive momentum",
            momentum,
            "pass momentum > 0 (e.g. 0.9) or nesterov=False",
        )
        _check_learning_rate(learning_rate)
        if _is_number(learning_rate):
            learning_rate = float(learning_rate)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.nesterov = nesterov

    def build(self, variables):
        """Create one zero-initialized momentum slot per variable (none if
        ``momentum == 0``)."""
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum != 0:
            for variable in variables:
                self.momentums.append(self.add_variable_from_reference(variable, name="momentum"))

    def update_step(self, gradient, variable, learning_rate):
        """Update ``variable`` (and its momentum slot) for one gradient."""
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(gradient, learning_rate))
            return
        m = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        # v <- momentum * v - lr * g
        self.assign(m, ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)))
        if self.nesterov:
            # w <- w + momentum * v - lr * g  (v already updated)
            self.assign_add(
                variable,
                ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)),
            )
        else:
            # w <- w + v
            self.assign_add(variable, m)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return config


# --- registry ---
_NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "keras_sgd")


def names() -> list:
    """The optimizer names [`get`][tfcustom.optimizers.get] accepts.

    Returns:
      A new list of the names (changing it changes nothing).

    Examples:
        >>> names()
        ['sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'rmsprop', 'keras_sgd']
    """
    return list(_NAMES)


def _check_learning_rate(learning_rate) -> None:
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return
    check(
        _is_number(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0,
        "learning_rate must be a positive float or a keras.optimizers.schedules.LearningRateSchedule",
        learning_rate,
        "pass e.g. learning_rate=0.1 or a schedule from tfcustom.optimizers.make_schedule",
    )


def _optimizer_args(name: str, kw: dict, weight_decay, momentum, gradient_accumulation_steps) -> dict:
    """The Keras optimizer's keyword arguments, each checked (what is wrong, what was received, what to do)."""
    check(
        weight_decay is None or (_is_number(weight_decay) and weight_decay >= 0),
        "weight_decay must be a non-negative float or None",
        weight_decay,
        "pass e.g. weight_decay=1e-4, or None for no weight decay",
    )
    check(
        gradient_accumulation_steps is None
        or (_is_nonneg_int(gradient_accumulation_steps) and gradient_accumulation_steps >= 1),
        "gradient_accumulation_steps must be a positive integer or None",
        gradient_accumulation_steps,
        "pass None (or 1) for no accumulation, or k >= 2 to average k micro-batch gradients per update",
    )
    if name in ("momentum", "nesterov"):
        check(
            _is_number(momentum) and 0 < momentum <= 1,
            f"optimizer {name!r} needs a momentum in (0, 1]",
            momentum,
            "pass e.g. momentum=0.9, or use the optimizer 'sgd' for no momentum",
        )
    args = dict(kw)
    if weight_decay is not None:
        args["weight_decay"] = float(weight_decay)
    if gradient_accumulation_steps is not None and gradient_accumulation_steps >= 2:
        args["gradient_accumulation_steps"] = gradient_accumulation_steps
    return args


def get(
    name: str,
    learning_rate,
    *,
    weight_decay=None,
    momentum: float = 0.9,
    gradient_accumulation_steps=None,
    **kw,
) -> keras.optimizers.Optimizer:
    """Build a Keras optimizer from its name.

    Args:
        name: one of [`names`][tfcustom.optimizers.names]:

            * ``"sgd"``: [`SGD`][tfcustom.optimizers.SGD] without momentum;
            * ``"momentum"``: [`SGD`][tfcustom.optimizers.SGD] with ``momentum``;
            * ``"nesterov"``: [`SGD`][tfcustom.optimizers.SGD] with Nesterov ``momentum``;
            * ``"adam"``, ``"adamw"``, ``"rmsprop"``: the Keras optimizers;
            * ``"keras_sgd"``: ``keras.optimizers.SGD`` without momentum (the
              reference for [`SGD`][tfcustom.optimizers.SGD]).
        learning_rate: a positive float or a
            ``keras.optimizers.schedules.LearningRateSchedule`` (e.g. from
            [`make_schedule`][tfcustom.optimizers.make_schedule]). A schedule is evaluated at the optimizer's
            internal counter, which counts **micro-batches** when gradient
            accumulation is on (size the schedule's steps accordingly).
        weight_decay: decoupled weight decay (``w <- w - lr * weight_decay * w``
            before each update, Keras' ``weight_decay`` argument), or None.
            For ``"adamw"``, None means Keras' AdamW default (0.004).
        momentum: used only by ``"momentum"`` and ``"nesterov"``.
        gradient_accumulation_steps: None (or 1) to update at every
            ``apply_gradients``; an int ``k >= 2`` to update the variables every
            ``k`` calls with the **mean** of the ``k`` gradients (Keras'
            ``gradient_accumulation_steps``).
        **kw: further keyword arguments for the Keras optimizer (``clipnorm``,
            ``beta_1``, ``epsilon``, ``use_ema``, ...).

    Returns:
        A new ``keras.optimizers.Optimizer``.

    Raises:
        ConfigError: unknown name or invalid argument.

    Examples:
        >>> get("adamw", 1e-3, weight_decay=0.01).weight_decay
        0.01
        >>> get("sgd", 0.1, gradient_accumulation_steps=4).gradient_accumulation_steps
        4
    """
    check_one_of("optimizer", name, _NAMES, ignore_case=True)
    name = name.lower()
    _check_learning_rate(learning_rate)
    if _is_number(learning_rate):
        learning_rate = float(learning_rate)
    args = _optimizer_args(name, kw, weight_decay, momentum, gradient_accumulation_steps)
    builders = {
        "sgd": lambda: SGD(learning_rate, momentum=0.0, **args),
        "momentum": lambda: SGD(learning_rate, momentum=float(momentum), **args),
        "nesterov": lambda: SGD(learning_rate, momentum=float(momentum), nesterov=True, **args),
        "adam": lambda: keras.optimizers.Adam(learning_rate, **args),
        "adamw": lambda: keras.optimizers.AdamW(learning_rate, **args),
        "rmsprop": lambda: keras.optimizers.RMSprop(learning_rate, **args),
        "keras_sgd": lambda: keras.optimizers.SGD(learning_rate, **args),
    }
    try:
        return builders[name]()
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise config_error(
            f"invalid arguments for optimizer {name!r}: {e}",
            kw,
            f"check the keyword arguments of the Keras optimizer behind {name!r}",
        ) from e


# --- learning-rate schedules ---
_SCHEDULES = ("constant", "cosine", "exponential", "step")
_STEP_FRACTIONS = (0.5, 0.75)


def schedule_names() -> list:
    """The schedule names [`make_schedule`][tfcustom.optimizers.make_schedule] accepts.

    Returns:
      A new list of the names (changing it changes nothing).

    Examples:
        >>> schedule_names()
        ['constant', 'cosine', 'exponential', 'step']
    """
    return list(_SCHEDULES)


def _check_schedule_args(name: str, learning_rate, total_steps, warmup_steps, decay_rate) -> None:
    """The numbers of `make_schedule`, each checked."""
    check(
        _is_number(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0,
        "learning_rate must be a positive float",
        learning_rate,
        "pass e.g. learning_rate=0.1",
    )
    check(
        _is_nonneg_int(total_steps) and total_steps >= 1,
        "total_steps must be a positive integer",
        total_steps,
        "pass the number of optimizer updates of the whole run",
    )
    check(
        _is_nonneg_int(warmup_steps) and warmup_steps < total_steps,
        "warmup_steps must be an integer in [0, total_steps)",
        warmup_steps,
        f"pass 0 <= warmup_steps < total_steps={total_steps}",
    )
    check(
        warmup_steps == 0 or name in ("constant", "cosine"),
        f"schedule {name!r} has no warmup",
        warmup_steps,
        "pass warmup_steps=0, or use the schedule 'cosine' or 'constant'",
    )
    check(
        _is_number(decay_rate) and 0 < decay_rate <= 1,
        "decay_rate must be a number in (0, 1]",
        decay_rate,
        "pass e.g. decay_rate=0.1",
    )


def make_schedule(name: str, learning_rate: float, *, total_steps: int, warmup_steps: int = 0, decay_rate: float = 0.1):
    """A learning rate or schedule from its name; ``step`` is the optimizer's
    update counter (starting at 0).

    * ``"constant"``: ``learning_rate`` (a float); with ``warmup_steps > 0``, a
      linear warmup from 0 to ``learning_rate`` over ``warmup_steps`` steps, then
      constant (``CosineDecay`` with ``alpha=1``).
    * ``"cosine"``: ``keras.optimizers.schedules.CosineDecay``: linear warmup
      from 0 to ``learning_rate`` over ``warmup_steps`` steps, then
      ``learning_rate * 0.5 * (1 + cos(pi * min(step - warmup_steps, d) / d))``
      with ``d = total_steps - warmup_steps`` (reaches 0 at ``total_steps``).
    * ``"exponential"``: ``learning_rate * decay_rate ** (step / total_steps)``
      (``ExponentialDecay``, smooth).
    * ``"step"``: ``learning_rate``, times ``decay_rate`` from step
      ``ceil(0.5 * total_steps)``, times ``decay_rate**2`` from step
      ``ceil(0.75 * total_steps)`` (``PiecewiseConstantDecay``).

    ``warmup_steps`` is supported by ``"constant"`` and ``"cosine"`` only.

    Args:
        name: ``"constant"``, ``"cosine"``, ``"exponential"`` or ``"step"``.
        learning_rate: the peak learning rate.
        total_steps: the training's number of updates.
        warmup_steps: linear warmup steps.
        decay_rate: of ``"exponential"`` and ``"step"``.

    Returns:
        A float (constant, no warmup) or a ``LearningRateSchedule``.

    Examples:
        >>> s = make_schedule("step", 0.1, total_steps=100)
        >>> [round(float(s(k)), 6) for k in (0, 49, 50, 75)]
        [0.1, 0.1, 0.01, 0.001]
        >>> make_schedule("constant", 0.1, total_steps=100)
        0.1
    """
    check_one_of("learning-rate schedule", name, _SCHEDULES, ignore_case=True)
    name = name.lower()
    _check_schedule_args(name, learning_rate, total_steps, warmup_steps, decay_rate)
    learning_rate = float(learning_rate)
    schedules = keras.optimizers.schedules
    if name == "constant":
        if warmup_steps == 0:
            return learning_rate
        return schedules.CosineDecay(
            0.0,
            decay_steps=total_steps - warmup_steps,
            alpha=1.0,
            warmup_target=learning_rate,
            warmup_steps=warmup_steps,
        )
    if name == "cosine":
        if warmup_steps == 0:
            return schedules.CosineDecay(learning_rate, decay_steps=total_steps)
        return schedules.CosineDecay(
            0.0,
            decay_steps=total_steps - warmup_steps,
            warmup_target=learning_rate,
            warmup_steps=warmup_steps,
        )
    if name == "exponential":
        return schedules.ExponentialDecay(learning_rate, decay_steps=total_steps, decay_rate=float(decay_rate))
    # "step": PiecewiseConstantDecay keeps values[i+1] for step > boundaries[i],
    # so a drop *at* step b needs the boundary b - 1.
    drops = [math.ceil(f * total_steps) for f in _STEP_FRACTIONS]
    values = [learning_rate * float(decay_rate) ** i for i in range(len(drops) + 1)]
    return schedules.PiecewiseConstantDecay(boundaries=[b - 1 for b in drops], values=values)
