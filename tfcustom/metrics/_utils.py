"""Input standardisation and count helpers shared by all metrics."""

from __future__ import annotations

import tensorflow as tf

from tfcustom.errors import check


_AVERAGES = (None, "macro", "micro", "weighted")
_COUNT_DTYPE = tf.float64


def _standardize(y_true, y_pred, sample_weight, num_classes=None):
    """Return flat ``(labels int32 [n], logits [n, C], weights f64 [n], C)``.

    Adds assertions that labels lie in ``[0, C)`` and that the number of
    logits matches ``num_classes`` (when given).
    """
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:
        y_pred = tf.cast(y_pred, tf.float32)
    c = tf.shape(y_pred)[-1]
    if num_classes is not None and y_pred.shape[-1] is not None:
        check(
            y_pred.shape[-1] == num_classes,
            "y_pred must hold one logit per class",
            f"y_pred.shape={y_pred.shape}, num_classes={num_classes}",
            "make the model output num_classes logits or fix the metric's num_classes",
        )
    y_pred = tf.reshape(y_pred, [-1, c])
    y_true = tf.convert_to_tensor(y_true)
    if y_true.dtype.is_floating:
        y_true = tf.round(y_true)
    labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    if sample_weight is None:
        weights = tf.ones(tf.shape(labels), _COUNT_DTYPE)
    else:
        weights = tf.cast(tf.convert_to_tensor(sample_weight), _COUNT_DTYPE)
        weights = tf.broadcast_to(
            tf.reshape(weights, [-1]) if weights.shape.rank else weights, tf.shape(labels)
        )
    limit = c if num_classes is None else num_classes
    asserts = [
        tf.debugging.assert_equal(
            tf.shape(labels)[0],
            tf.shape(y_pred)[0],
            message="tfcustom metric: y_true must hold one class id per row of y_pred",
        ),
        tf.debugging.assert_non_negative(labels, message="tfcustom metric: labels must be >= 0"),
        tf.debugging.assert_less(
            labels, limit, message="tfcustom metric: labels must be < num_classes"
        ),
    ]
    with tf.control_dependencies(asserts):
        labels = tf.identity(labels)
    # Belt and braces for XLA (where assertions are compiled away): examples
    # with an invalid label get weight 0 and are clamped into range so they
    # cannot be counted as any class.
    valid = tf.logical_and(labels >= 0, labels < limit)
    weights = tf.where(valid, weights, tf.zeros_like(weights))
    labels = tf.where(valid, labels, tf.zeros_like(labels))
    return labels, y_pred, weights, c


def _total(variable):
    """``variable``'s value summed over the replicas, wherever it is read.

    In a cross-replica context an on-read ``sum`` variable already reads as
    the sum; in a replica context (inside ``strategy.run``) it reads as this
    replica's own copy, so the copies are summed by an all-reduce (every
    replica reads the metric there, as ``keras.Model.fit`` does).
    """
    value = tf.convert_to_tensor(variable)
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and tf.distribute.has_strategy() and ctx.num_replicas_in_sync > 1:
        value = ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value


def _classes_of(y_pred, who: str) -> int:
    """The static number of classes of a batch of predictions."""
    shape = tf.convert_to_tensor(y_pred).shape
    c = shape[-1] if shape.rank else None
    check(c is not None and c >= 1, f"{who} cannot infer num_classes from y_pred of unknown last dimension", str(shape),
          f"pass {who}(num_classes=...)")
    return int(c)


def _safe_div(a, b):
    """``a / b`` with 0 where ``b == 0`` (sklearn's ``zero_division=0``)."""
    return tf.math.divide_no_nan(a, b)
