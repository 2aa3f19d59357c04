"""The packed gradient all-reduce of the train step: one replica-context
all-reduce of the whole gradient list (the strategy's cross-device ops pack
the tensors into few collectives), and the switch that keeps Keras' optimizer
from reducing the gradients a second time.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


def all_reduce_sum(grads):
    """Sum ``grads`` (a list, ``None`` entries kept) over the replicas with one
    replica-context all-reduce of the whole list: the strategy's cross-device
    ops pack the tensors into few collectives (NCCL on GPUs), and every
    replica receives the sum. Call it in replica context."""
    ctx = tf.distribute.get_replica_context()
    present = [g for g in grads if g is not None]
    if not present or ctx.num_replicas_in_sync == 1:
        return list(grads)
    reduced = iter(ctx.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(reduced) for g in grads]


def packed_all_reduce_supported(optimizer) -> bool:
    """True when the step can sum the gradients itself (`all_reduce_sum`)
    and let ``optimizer`` apply them on each replica: Keras' TensorFlow
    optimizers, unless they transform the gradients before their own sum
    (their ``clipnorm`` / ``clipvalue`` / ``global_clipnorm`` would then see
    one replica's gradient; gradient accumulation). Otherwise the step reduces
    each gradient to one device and applies the update once, as before."""
    for opt in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        if opt is None:
            continue
        if not hasattr(opt, "_all_reduce_sum_gradients"):
            return False
        if any(getattr(opt, name, None) for name in ("clipnorm", "clipvalue", "global_clipnorm", "gradient_accumulation_steps")):
            return False
    return True


@contextlib.contextmanager
def already_reduced(optimizer):
    """While tracing ``optimizer.apply_gradients`` in replica context: skip
    Keras' own all-reduce of the gradients (the step has summed them already,
    with `all_reduce_sum`). Only the traced graph is affected. This
    overrides a private method of Keras' TensorFlow optimizer (Keras 3.15);
    `packed_all_reduce_supported` checks that it exists."""
    optimizer._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)
    try:
        yield
    finally:
        del optimizer._all_reduce_sum_gradients
