"""Several training steps in one ``tf.function`` call (``steps_per_execution``), as Orbit's ``loop_fns``.

`multi_step_loop` wraps a one-step function of a batch in a ``tf.range`` loop whose
length is a tensor (changing it does not retrace), counts the steps applied
and the steps skipped for NaN/Inf, and stops at a non-finite step when asked.
A step on the skip list (``--on_nonfinite=rollback``, `tfcustom.training.skip_list`)
is consumed without being applied and counted apart, in ``skip_listed``.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tfcustom.training import input_wait


def multi_step_loop(train_step: Callable, num_replicas: int, *, stop_on_nonfinite: bool) -> Callable:
    """``loop(iterator, num_steps) -> dict`` of tensors (see `tfcustom.training.steps.make_train_step`).

    ``train_step(batch, offset)`` (``offset``: the step's index in this call)
    returns ``(loss, replica_losses, finite, overflow, grad_norm, listed)`` for one
    step; the loop takes each batch from the iterator and times the wait for it
    (`tfcustom.training.input_wait`).
    """
    report_wait = input_wait.measured()

    @tf.function
    def compiled_train_step(iterator, num_steps):
        loss_value = tf.constant(0.0)
        replica_losses = tf.zeros([num_replicas])
        steps_run = tf.constant(0)
        skipped = tf.constant(0)
        skip_listed = tf.constant(0)
        nonfinite = tf.constant(False)
        loss_scale_skipped = tf.constant(0)
        grad_norm = tf.constant(0.0)
        input_wait_s = tf.constant(0.0, tf.float64)
        for offset in tf.range(num_steps):
            batch, wait = input_wait.timed_next(iterator, report_wait)
            loss_value, replica_losses, finite, overflow, grad_norm, listed = train_step(batch, offset)
            input_wait_s += wait
            if listed:
                skip_listed += 1
            elif finite:
                steps_run += 1
                loss_scale_skipped += tf.cast(overflow, tf.int32)
            else:
                nonfinite = tf.constant(True)
                skipped += 1
                if stop_on_nonfinite:
                    break
        return {
            "loss": loss_value,
            "replica_losses": replica_losses,
            "steps_run": steps_run,
            "skipped": skipped,
            "skip_listed": skip_listed,
            "nonfinite": nonfinite,
            "loss_scale_skipped": loss_scale_skipped,
            "grad_norm": grad_norm,
            **({"input_wait_s": input_wait_s} if report_wait else {}),
        }

    return compiled_train_step
