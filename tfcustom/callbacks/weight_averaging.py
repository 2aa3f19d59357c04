"""Averages of the weights: an exponential moving average (EMA) and stochastic weight averaging (SWA).

Both keep one average per trainable variable of the model, created under the
Trainer's strategy (a ``MirroredVariable`` under ``MirroredStrategy``, updated
on every replica from its own, identical copy of the weights, so the copies
stay equal). Give them to the Trainer, ``Trainer(..., weight_averaging=[ema])``:

* [`ExponentialMovingAverage`][tfcustom.callbacks.ExponentialMovingAverage] is updated inside the compiled
  train step after every applied update (a skipped NaN/Inf or loss-scale step
  is not averaged), as ``tensorflow_addons.optimizers.MovingAverage`` and
  Keras' ``use_ema``: ``average = decay * average + (1 - decay) * weights``;
  the first update copies the weights (Keras does the same).
* [`StochasticWeightAveraging`][tfcustom.callbacks.StochasticWeightAveraging] averages the weights at the end of
  every epoch from ``start_epoch`` on (the running mean ``average +=
  (weights - average) / (n + 1)`` of ``torch.optim.swa_utils.AveragedModel``),
  and with ``swa_lr`` trains at that constant learning rate from
  ``start_epoch`` on (``SWALR`` without its annealing).

The averages and their counts are in the training checkpoint
([`tfcustom.training.checkpoint.training_checkpoint`][tfcustom.training.checkpoint.training_checkpoint]), so a killed run resumes
to the same averages, bit for bit. After training,
[`WeightAverage.assign_to_model`][tfcustom.callbacks.weight_averaging.WeightAverage.assign_to_model] copies the average into the
model; BatchNormalization statistics are then recomputed for those weights by
[`tfcustom.training.batch_norm_stats.reestimate_batch_norm`][tfcustom.training.batch_norm_stats.reestimate_batch_norm].
The guide is ``docs/guides/weight_averaging.md``.

Examples:
    >>> import keras, numpy as np, tfcustom
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int64")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> ema = ExponentialMovingAverage(decay=0.9)
    >>> trainer = tfcustom.Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...                            keras.optimizers.SGD(0.1), weight_averaging=[ema], verbose=0)
    >>> _ = trainer.fit((x, y), epochs=2, batch_size=16)
    >>> int(ema.num_averaged.numpy())   # 4 steps per epoch
    8
    >>> ema.assign_to_model()           # the model now holds the average
    True
"""

from __future__ import annotations

import math
from typing import List, Optional

import keras
import tensorflow as tf
from absl import logging

from tfcustom.callbacks.learning_rate import schedule_of
from tfcustom.errors import check


def _tf_variable(v):
    """The ``tf.Variable`` (``MirroredVariable`` under a strategy) behind a Keras variable."""
    return v.value if hasattr(v, "value") and not isinstance(v, tf.Variable) else v


def _blend(average, value, weight):
    """``average += (value - average) * weight`` on one device (weight 1: a copy, exactly, from zeros)."""
    return average.assign_add((tf.cast(value, average.dtype) - average) * tf.cast(weight, average.dtype))


class WeightAverage(keras.callbacks.Callback):
    """An average of a model's trainable variables (the base of EMA and SWA).

    [`build`][tfcustom.callbacks.weight_averaging.WeightAverage.build] creates ``averages`` (zeros, one per trainable variable) and
    ``num_averaged`` (the count of updates so far) under the strategy; the
    Trainer calls it. [`update`][tfcustom.callbacks.weight_averaging.WeightAverage.update] blends the current weights in with
    the weight ``new_value_weight(n)`` that the subclass defines.

    Examples:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> swa = StochasticWeightAveraging(start_epoch=1)
        >>> swa.build(model)
        >>> swa.update(); swa.update()
        >>> int(swa.num_averaged.numpy()), len(swa.variables)   # the count, then the kernel and the bias
        (2, 3)
    """

    kind = "average"
    every_step = False  # True: the Trainer's compiled step calls update() after each applied update

    def __init__(self):
        super().__init__()
        self.averages: List[tf.Variable] = []
        self.num_averaged: Optional[tf.Variable] = None
        self._weights: list = []
        self._strategy = None
        self._compiled_update = None

    def new_value_weight(self, n):
        """The weight of the current weights in update number ``n + 1`` (``n`` updates done; a tensor)."""
        raise NotImplementedError

    def build(self, model: keras.Model, strategy: Optional[tf.distribute.Strategy] = None, optimizer=None) -> None:
        """Create the averages of ``model``'s trainable variables under ``strategy``'s scope.

        Args:
          model: a built Keras model (its variables created under ``strategy.scope()``).
          strategy: the model's strategy (default: the current one).
          optimizer: the training optimizer (checked by subclasses that set its learning rate).
        """
        check(not self.averages, f"this {type(self).__name__} already averages a model", type(self).__name__,
              "create one averaging object per Trainer")
        check(model.built and model.trainable_variables, "the model has no trainable variables to average", model.name,
              "build the model (call it on a batch) before creating the Trainer")
        self._strategy = strategy or tf.distribute.get_strategy()
        self._weights = [_tf_variable(v) for v in model.trainable_variables]
        with self._strategy.scope():
            self.averages = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"{self.kind}_{i}",
                                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                             for i, v in enumerate(self._weights)]
            self.num_averaged = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{self.kind}_count",
                                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    @property
    def variables(self) -> list:
        """What the training checkpoint holds: ``[num_averaged, *averages]``."""
        return [self.num_averaged, *self.averages] if self.averages else []

    def update(self) -> None:
        """Blend the current weights into the averages; cross-replica context (in a ``tf.function`` or eagerly).

        Each replica updates its copy of every average from its own copy of the
        weights (``strategy.extended.update``): no cross-device copy per step.
        """
        check(bool(self.averages), f"{type(self).__name__} is not built", "no averages", "pass it to tfcustom.Trainer(weight_averaging=[...])")
        weight = self.new_value_weight(tf.cast(self.num_averaged, tf.float32))
        for average, value in zip(self.averages, self._weights):
            self._strategy.extended.update(average, _blend, args=(value, weight))
        self.num_averaged.assign_add(1)

    def update_now(self) -> None:
        """[`update`][tfcustom.callbacks.weight_averaging.WeightAverage.update] through one compiled function (traced once)."""
        if self._compiled_update is None:
            self._compiled_update = tf.function(self.update)
        self._compiled_update()

    def assign_to_model(self) -> bool:
        """Copy the averages into the model's trainable variables (every replica's copy).

        Returns:
          False (the model unchanged) when nothing has been averaged yet, else True.
        """
        if not self.averages or int(self.num_averaged.numpy()) == 0:
            return False
        for variable, average in zip(self._weights, self.averages):
            self._strategy.extended.update(variable, lambda v, a: v.assign(tf.cast(a, v.dtype)), args=(average,))
        return True

    def get_state(self) -> dict:
        """Nothing for `tfcustom.callbacks.state`: the averages are variables of the training checkpoint."""
        return {}

    def set_state(self, state: dict) -> None:
        """See [`get_state`][tfcustom.callbacks.weight_averaging.WeightAverage.get_state]."""

    def describe(self) -> dict:
        """``{"kind": ..., <config>, "num_averaged": n}`` (for ``results.json``)."""
        return {"kind": self.kind, **self.get_config(), "num_averaged": int(self.num_averaged.numpy()) if self.averages else 0}

    def get_config(self) -> dict:
        """The constructor's arguments."""
        return {}

    @classmethod
    def from_config(cls, config: dict):
        """A new, unbuilt object from [`get_config`][tfcustom.callbacks.weight_averaging.WeightAverage.get_config]'s dict."""
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfcustom")
class ExponentialMovingAverage(WeightAverage):
    """An exponential moving average of the weights, updated after every applied training step.

    ``average = decay * average + (1 - decay) * weights`` (the first update
    copies the weights), in the compiled step, as
    ``tensorflow_addons.optimizers.MovingAverage`` (``average_decay``) and Keras'
    ``use_ema=True, ema_momentum=decay``.

    Args:
      decay: in (0, 1), e.g. 0.999 (``--ema_decay``).
      dynamic_decay: use ``min(decay, (1 + n) / (10 + n))`` at update ``n + 1``
        (``tf.train.ExponentialMovingAverage``'s ``num_updates``; TFA's
        ``dynamic_decay``): early averages follow the weights faster.

    Examples:
        >>> ema = ExponentialMovingAverage(decay=0.999)
        >>> ExponentialMovingAverage.from_config(ema.get_config()).decay
        0.999
    """

    kind = "ema"
    every_step = True

    def __init__(self, decay: float = 0.999, dynamic_decay: bool = False):
        super().__init__()
        check(isinstance(decay, (int, float)) and not isinstance(decay, bool) and 0.0 < decay < 1.0,
              "ema decay must be in (0, 1)", decay, "pass e.g. decay=0.999 (--ema_decay=0.999)")
        check(isinstance(dynamic_decay, bool), "dynamic_decay must be True or False", dynamic_decay, "pass dynamic_decay=True or False")
        self.decay = float(decay)
        self.dynamic_decay = dynamic_decay
        self._warned = False

    def new_value_weight(self, n):
        decay = tf.constant(self.decay, tf.float32)
        if self.dynamic_decay:
            decay = tf.minimum(decay, (1.0 + n) / (10.0 + n))
        return tf.where(n > 0, 1.0 - decay, 1.0)

    def on_epoch_end(self, epoch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if not self._warned and int(self.num_averaged.numpy()) == 0 and optimizer is not None and int(optimizer.iterations.numpy()) > 0:
            self._warned = True
            logging.warning("ExponentialMovingAverage: the optimizer applied updates but the average was never updated: a "
                            "Trainer.make_train_step override must pass after_update=step_updates(self.weight_averaging) "
                            "(tfcustom.callbacks.weight_averaging) to tfcustom.steps.make_train_step")

    def get_config(self) -> dict:
        return {"decay": self.decay, "dynamic_decay": self.dynamic_decay}


@keras.saving.register_keras_serializable(package="tfcustom")
class StochasticWeightAveraging(WeightAverage):
    """Stochastic weight averaging: the mean of the weights at the end of each epoch from ``start_epoch`` on.

    ``average += (weights - average) / (n + 1)`` at the end of epochs
    ``start_epoch, start_epoch + 1, ...`` (counted from 1, as the Trainer logs
    them), as ``torch.optim.swa_utils.AveragedModel`` with ``update_parameters``
    called each epoch end from ``swa_start``.

    Args:
      start_epoch: the first epoch (from 1) trained at ``swa_lr`` and averaged at its end.
      swa_lr: a constant learning rate from ``start_epoch`` on, assigned to a
        float learning rate at the start of each epoch from then on; an optimizer
        on a schedule must have it in a [`SWALearningRate`][tfcustom.callbacks.weight_averaging.SWALearningRate]
        with this ``swa_lr`` (refused otherwise). None keeps the optimizer's.

    Examples:
        >>> swa = StochasticWeightAveraging(start_epoch=8, swa_lr=0.01)
        >>> StochasticWeightAveraging.from_config(swa.get_config()).get_config()
        {'start_epoch': 8, 'swa_lr': 0.01}
    """

    kind = "swa"

    def __init__(self, start_epoch: int, swa_lr: Optional[float] = None):
        super().__init__()
        check(isinstance(start_epoch, int) and not isinstance(start_epoch, bool) and start_epoch >= 1,
              "swa start_epoch must be an integer >= 1 (epochs count from 1)", start_epoch, "pass e.g. start_epoch=8 (--swa_start_epoch=8)")
        check(swa_lr is None or (isinstance(swa_lr, (int, float)) and not isinstance(swa_lr, bool) and math.isfinite(swa_lr) and swa_lr > 0),
              "swa_lr must be a positive number or None", swa_lr, "pass e.g. swa_lr=0.01, or None to keep the optimizer's learning rate")
        self.start_epoch = start_epoch
        self.swa_lr = None if swa_lr is None else float(swa_lr)
        self._sets_learning_rate = False  # build: True when the optimizer's learning rate is a float to assign

    def build(self, model, strategy=None, optimizer=None) -> None:
        schedule = None if optimizer is None else schedule_of(optimizer)
        in_schedule = isinstance(schedule, SWALearningRate) and schedule.swa_lr == self.swa_lr
        check(self.swa_lr is None or schedule is None or in_schedule,
              "swa_lr sets the learning rate but the optimizer's learning rate is a schedule", self.swa_lr,
              "wrap the schedule: SWALearningRate(schedule, start_step=(start_epoch - 1) * steps_per_epoch, swa_lr=...)")
        self._sets_learning_rate = self.swa_lr is not None and schedule is None
        super().build(model, strategy, optimizer)

    def new_value_weight(self, n):
        return 1.0 / (n + 1.0)

    def on_epoch_begin(self, epoch, logs=None):
        if self._sets_learning_rate and epoch + 1 >= self.start_epoch:
            self.model.optimizer.learning_rate = self.swa_lr  # a variable of the optimizer: in the checkpoint

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.start_epoch:
            self.update_now()

    def get_config(self) -> dict:
        return {"start_epoch": self.start_epoch, "swa_lr": self.swa_lr}


@keras.saving.register_keras_serializable(package="tfcustom")
class SWALearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate that is ``schedule`` before ``start_step`` and ``swa_lr`` from then on.

    SWA's constant learning rate for an optimizer built on a schedule
    (``tfcustom-train --swa_lr`` uses it with ``start_step = (swa_start_epoch
    - 1) * steps_per_epoch``).

    Args:
      schedule: a ``LearningRateSchedule`` or a float.
      start_step: the first optimizer step at ``swa_lr`` (the optimizer's update count).
      swa_lr: the learning rate from ``start_step`` on.

    Examples:
        >>> cosine = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=100)
        >>> lr = SWALearningRate(cosine, start_step=50, swa_lr=0.01)
        >>> [round(float(lr(s)), 4) for s in (0, 49, 50, 99)]
        [0.1, 0.0516, 0.01, 0.01]
        >>> SWALearningRate.from_config(lr.get_config()).start_step
        50
    """

    def __init__(self, schedule, start_step: int, swa_lr: float):
        check(isinstance(start_step, int) and not isinstance(start_step, bool) and start_step >= 0,
              "start_step must be an integer >= 0", start_step, "pass (swa_start_epoch - 1) * steps_per_epoch")
        check(isinstance(swa_lr, (int, float)) and not isinstance(swa_lr, bool) and swa_lr > 0,
              "swa_lr must be a positive number", swa_lr, "pass e.g. swa_lr=0.01")
        self.schedule = schedule
        self.start_step = start_step
        self.swa_lr = float(swa_lr)

    def __call__(self, step):
        before = self.schedule(step) if callable(self.schedule) else self.schedule
        before = tf.cast(before, tf.float32)
        return tf.where(tf.cast(step, tf.int64) >= self.start_step, tf.constant(self.swa_lr, tf.float32), before)

    def get_config(self) -> dict:
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {"schedule": schedule, "start_step": self.start_step, "swa_lr": self.swa_lr}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def build_averages(weight_averaging, model: keras.Model, strategy: tf.distribute.Strategy, optimizer) -> List[WeightAverage]:
    """``Trainer(weight_averaging=...)``: one object or a list, checked, each built for ``model``.

    Args:
      weight_averaging: None, a [`WeightAverage`][tfcustom.callbacks.weight_averaging.WeightAverage] or a list of them.
      model: the Trainer's model.
      strategy: the Trainer's strategy.
      optimizer: the Trainer's optimizer.

    Returns:
      The list (empty for None), built.

    Examples:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> [a.kind for a in build_averages(ExponentialMovingAverage(), model, tf.distribute.get_strategy(), None)]
        ['ema']
    """
    averages = [] if weight_averaging is None else (
        list(weight_averaging) if isinstance(weight_averaging, (list, tuple)) else [weight_averaging])
    for a in averages:
        check(isinstance(a, WeightAverage), "weight_averaging takes ExponentialMovingAverage / StochasticWeightAveraging objects",
              type(a).__name__, "pass e.g. weight_averaging=[tfcustom.callbacks.ExponentialMovingAverage(decay=0.999)]")
    check(len({id(a) for a in averages}) == len(averages), "the same weight average is given twice", len(averages),
          "pass each object once")
    for a in averages:
        a.build(model, strategy, optimizer)
    return averages


def step_updates(averages) -> Optional[callable]:
    """The ``after_update`` of `tfcustom.training.steps.make_train_step` for ``averages``: the per-step ones' updates (None: none).

    Args:
      averages: built weight averages.

    Returns:
      A function of no argument, or None when no average updates every step.

    Examples:
        >>> step_updates([StochasticWeightAveraging(start_epoch=2)]) is None
        True
    """
    per_step = [a for a in averages if a.every_step]
    if not per_step:
        return None

    def update_all():
        for a in per_step:
            a.update()

    return update_all

