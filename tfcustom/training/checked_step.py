"""``CheckedStep``: the train step's call, with its arguments checked before
TensorFlow sees them; `check_step_args`: the arguments that build it."""

from __future__ import annotations

import inspect

import numpy as np
import tensorflow as tf

from tfcustom.errors import check, check_one_of
from tfcustom.training.loss_scaling import LossScaling

NONFINITE_POLICIES = ("stop", "skip", "rollback")

_CALL_HELP = ("call it as train_step(iterator, num_steps): e.g. it = iter(dataset) once (strategy.experimental_distribute_dataset"
              "(dataset) under a strategy), then out = train_step(it, 1) for each step, or train_step(it, N) for N steps in one call; "
              "the batches (x, y[, sample_weight]) come from the iterator, not from arguments")


class CheckedStep:
    """``train_step(iterator, num_steps)`` with its arguments checked before
    TensorFlow sees them (the tutorial habit ``train_step(x, y)`` gets a
    one-line error saying how to call it). A Python int ``num_steps`` becomes
    an int32 tensor, so changing it never retraces. Every other attribute
    (``get_concrete_function``, ``experimental_get_tracing_count``, ...) is
    the compiled ``tf.function``'s, which is also ``.function``.
    """

    def __init__(self, function):
        self.function = function

    def __call__(self, iterator=None, num_steps=None, *args, **kwargs):
        check(not args and not kwargs, "train_step takes exactly two arguments", f"{2 + len(args) + len(kwargs)} arguments", _CALL_HELP)
        check(iterator is not None and num_steps is not None, "train_step takes two arguments", "fewer than 2", _CALL_HELP)
        check(
            not isinstance(iterator, (tf.Tensor, tf.Variable, np.ndarray, list, tuple, dict, tf.data.Dataset))
            and (hasattr(iterator, "get_next") or hasattr(iterator, "__next__")),
            "the first argument of train_step must be an iterator over batches",
            type(iterator).__name__,
            _CALL_HELP + (" (iter(dataset), not the dataset itself)" if isinstance(iterator, tf.data.Dataset) else ""),
        )
        if isinstance(num_steps, (int, np.integer)) and not isinstance(num_steps, bool):
            check(num_steps >= 1, "num_steps must be >= 1", int(num_steps), _CALL_HELP)
            num_steps = tf.constant(int(num_steps), tf.int32)
        check(
            isinstance(num_steps, (tf.Tensor, tf.Variable)) and num_steps.shape.rank == 0 and num_steps.dtype.is_integer,
            "the second argument of train_step must be the number of steps (a scalar integer)",
            getattr(num_steps, "shape", type(num_steps).__name__),
            _CALL_HELP,
        )
        return self.function(iterator, tf.cast(num_steps, tf.int32))

    def __getattr__(self, name):
        return getattr(self.function, name)


def check_step_args(on_nonfinite, clip_global_norm, optimizer, gradient_fn) -> None:
    """Refuse, in one line each, what `tfcustom.training.steps.make_train_step` cannot build a step from."""
    check_one_of("on_nonfinite policy", on_nonfinite, NONFINITE_POLICIES)
    check(clip_global_norm is None or clip_global_norm > 0, "clip_global_norm must be positive", clip_global_norm,
          "pass a positive norm or None to disable clipping")
    check(not LossScaling(optimizer).active or "loss_scale" in inspect.signature(gradient_fn).parameters,
          "mixed_float16 loss scaling needs a gradient_fn that takes a loss_scale argument",
          getattr(gradient_fn, "__name__", type(gradient_fn).__name__),
          "add loss_scale=None to the gradient function (see tfcustom.training.steps.compute_loss_and_gradients), "
          "or train in float32 / mixed_bfloat16")
