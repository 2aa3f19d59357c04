"""Check: the loss and every metric under 4 replicas equal one device's computation over the same global batches."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfcustom.doctor.harness import Setup, describe_error, train
from tfcustom.doctor.result import CheckResult

NAME = "exact metrics"
FIX = ("update the metric state on every replica and let it be summed over replicas (Keras metric variables: "
       "aggregation='sum'); never branch on the replica id or read one replica's value")


def _oracle(trainer, x, y, batch_size):
    """Loss and metrics of the trained model over the batches, on one device, with fresh metric copies."""
    metrics = [type(m).from_config(m.get_config()) for m in trainer.eval_metrics]
    losses = []
    for start in range(0, len(x), batch_size):
        xb, yb = tf.constant(x[start:start + batch_size]), tf.constant(y[start:start + batch_size])
        pred = trainer.model(xb, training=False)
        losses.append(float(trainer.loss(yb, pred)) * len(xb))
        for m in metrics:
            m.update_state(yb, pred)
    values = {"loss": sum(losses) / len(x)}
    for m in metrics:
        values[m.name] = float(np.asarray(m.result()))
    return values


def run(setup: Setup) -> CheckResult:
    x, y = setup.train_data()
    try:
        trainer = train(setup, 4)
        got = trainer.evaluate((x, y), batch_size=setup.batch_size)
    except Exception as e:
        return CheckResult(NAME, False, f"training/evaluating on 4 replicas raised {describe_error(e)}", FIX)
    want = _oracle(trainer, x, y, setup.batch_size)
    diffs = {k: abs(float(got[k]) - v) / max(1.0, abs(v)) for k, v in want.items() if k in got}
    bad = {k: (float(got[k]), want[k]) for k, d in diffs.items() if not d <= setup.tolerance}
    if bad:
        name, (a, b) = next(iter(bad.items()))
        return CheckResult(NAME, False, f"{name}: {a:.6g} on 4 replicas vs {b:.6g} on one device ({len(bad)} of {len(diffs)} differ)", FIX)
    return CheckResult(NAME, True, f"{len(diffs)} values ({', '.join(diffs)}) within {max(diffs.values()):.2g} of one device")
