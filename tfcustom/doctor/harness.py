"""What the doctor checks (model builder, loss, optimizer, data) and how it trains it on N replicas."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional, Sequence, Type

import keras
import numpy as np
import tensorflow as tf

from tfcustom.errors import check
from tfcustom.training.trainer import Trainer


@dataclasses.dataclass
class Setup:
    """The user's model and objective, and the doctor's budget (``steps`` train steps of ``batch_size``).

    Built by [`check`][tfcustom.doctor.check], which documents the fields;
    validated up front.

    Attributes:
      model_fn: builds a fresh ``keras.Model``.
      loss: the loss, as ``tfcustom.Trainer`` takes it.
      optimizer_fn: builds a fresh optimizer.
      x: the inputs (NumPy).
      y: the targets (NumPy).
      metrics: metrics as the Trainer takes them, or a function returning them.
      batch_size: the global batch, divisible by 4 (1, 2 and 4 replicas).
      steps: train steps per check.
      seed: seeds the models' initial weights.
      trainer_cls: the Trainer (subclass) to check.
      tolerance: largest difference accepted where the result is not bitwise.
      trained: the Trainers after training, by replica count (shared by the checks).
      variables_before: by replica count, the ids of the model's and optimizer's variables
        before that shared Trainer's first step.

    Examples:
        >>> setup = Setup(lambda: None, "mse", lambda: None, np.zeros((10, 2)), np.zeros(10), batch_size=4, steps=2)
        >>> [a.shape for a in setup.train_data()]  # the first batch_size * steps examples
        [(8, 2), (8,)]
        >>> Setup(lambda: None, "mse", lambda: None, np.zeros((10, 2)), np.zeros(10), batch_size=6)
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: batch_size must be divisible by 4 (the doctor splits it over 1, 2 and 4 replicas) (received: 6). Pass e.g. batch_size=8.
    """

    model_fn: Callable[[], keras.Model]
    loss: Any
    optimizer_fn: Callable[[], keras.optimizers.Optimizer]
    x: np.ndarray
    y: np.ndarray
    metrics: Sequence = ("accuracy",)
    batch_size: int = 8
    steps: int = 3
    seed: int = 0
    trainer_cls: Type[Trainer] = Trainer
    tolerance: float = 1e-5
    trained: dict = dataclasses.field(default_factory=dict, repr=False)  # replicas -> Trainer after train(); shared by checks
    variables_before: dict = dataclasses.field(default_factory=dict, repr=False)  # replicas -> variable ids before fit

    def __post_init__(self):
        check(callable(self.model_fn), "model_fn must be callable", type(self.model_fn).__name__, "pass a function returning a keras.Model")
        check(callable(self.optimizer_fn), "optimizer_fn must be callable", type(self.optimizer_fn).__name__,
              "pass a function returning a fresh optimizer, e.g. lambda: keras.optimizers.Adam(1e-3)")
        check(self.batch_size % 4 == 0, "batch_size must be divisible by 4 (the doctor splits it over 1, 2 and 4 replicas)",
              self.batch_size, "pass e.g. batch_size=8")
        check(len(self.x) >= self.batch_size * self.steps, "too few examples for the doctor's steps", len(self.x),
              f"pass at least batch_size * steps = {self.batch_size * self.steps} examples")

    def train_data(self):
        n = self.batch_size * self.steps
        return self.x[:n], self.y[:n]


_STRATEGIES = {}


def strategy(replicas: int) -> tf.distribute.Strategy:
    """A MirroredStrategy over ``replicas`` logical CPUs (configured before TensorFlow initialised);
    ``OneDeviceStrategy`` for 1. One per replica count and process, reused."""
    if replicas not in _STRATEGIES:
        devices = tf.config.list_logical_devices("CPU")
        check(len(devices) >= replicas, f"the doctor needs {replicas} logical CPU devices", len(devices),
              "call tfcustom.distribute.strategy.configure_cpu_replicas(4) before TensorFlow initialises, or run tfcustom-doctor")
        if replicas == 1:
            _STRATEGIES[1] = tf.distribute.OneDeviceStrategy(devices[0].name)
        else:
            # Two MirroredStrategy objects over overlapping devices would both use collective group
            # key 1 ("joining a group with size 4, but that group has size 2"): give each its own key base.
            tf.distribute.MirroredStrategy._collective_key_base = 10000 * replicas
            try:
                _STRATEGIES[replicas] = tf.distribute.MirroredStrategy([d.name for d in devices[:replicas]])
            finally:
                tf.distribute.MirroredStrategy._collective_key_base = 0
    return _STRATEGIES[replicas]


def build(setup: Setup, strat: tf.distribute.Strategy, **trainer_kwargs) -> Trainer:
    """A fresh model and optimizer from the user's functions (same seed), built under ``strat``, in a Trainer."""
    keras.utils.set_random_seed(setup.seed)
    with strat.scope():
        model = setup.model_fn()
        model(tf.constant(setup.x[:1]), training=False)
        optimizer = setup.optimizer_fn()
        metrics = setup.metrics() if callable(setup.metrics) else list(setup.metrics)
    return setup.trainer_cls(model, setup.loss, optimizer, metrics, strategy=strat, verbose=0, **trainer_kwargs)


def train(setup: Setup, replicas: int, **trainer_kwargs) -> Trainer:
    """The Trainer after ``setup.steps`` steps over the first ``steps * batch_size`` examples
    (without ``trainer_kwargs``: one per replica count, shared by the checks, which only read it)."""
    if not trainer_kwargs and replicas in setup.trained:
        return setup.trained[replicas]
    trainer = build(setup, strategy(replicas), **trainer_kwargs)
    if not trainer_kwargs:
        setup.variables_before[replicas] = {id(v) for v in all_variables(trainer)}
    trainer.fit(setup.train_data(), epochs=1, batch_size=setup.batch_size)
    if not trainer_kwargs:
        setup.trained[replicas] = trainer
    return trainer


def all_variables(trainer: Trainer) -> list:
    """The model's and the optimizer's variables."""
    return trainer.model.variables + list(trainer.optimizer.variables)


def max_difference(a, b) -> float:
    """The largest absolute difference between two lists of arrays (inf when their shapes differ)."""
    if len(a) != len(b) or any(np.shape(u) != np.shape(v) for u, v in zip(a, b)):
        return float("inf")
    return max([float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64)))) for u, v in zip(a, b) if np.size(u)] + [0.0])


def describe_error(e: BaseException) -> str:
    """One line: the exception's type and its most telling line (TF's 'in user code:' errors end with the cause)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # Keras colours its messages
    text = [line.strip() for line in plain.strip().splitlines() if line.strip()]
    telling = [line for line in text if "variable" in line.lower()]
    line = (telling or text or [""])[0]
    return f"{type(e).__name__}: {line[:200]}"
