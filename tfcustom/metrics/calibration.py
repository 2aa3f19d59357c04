"""``ExpectedCalibrationError``: top-label calibration error over confidence bins."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.errors import check_positive_int
from tfcustom.metrics._utils import _COUNT_DTYPE, _safe_div, _standardize, _total


@keras.saving.register_keras_serializable(package="tfcustom")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error (Guo et al. 2017) with equal-width bins.

    Confidence is the maximum softmax probability; the prediction is correct
    when its ``argmax`` equals the label. Bin ``b`` (``b = 1..num_bins``)
    holds confidences in ``((b-1)/num_bins, b/num_bins]``. With sample
    weights ``w``:

        n_b    = sum of w in bin b,           N = sum_b n_b
        acc_b  = sum of w * correct / n_b,    conf_b = sum of w * conf / n_b
        ECE    = sum_b (n_b / N) * |acc_b - conf_b|

    The state is the three per-bin sums (``aggregation="sum"``), so the
    result is exact across batches and replicas. With no data the result is 0.

    Args:
        num_bins: Number of equal-width confidence bins (default 15).
        name: Optional name.
        dtype: Result dtype (the sums are float64 internally).

    Examples:
        >>> m = ExpectedCalibrationError(num_bins=10)
        >>> m.update_state([0, 1], [[2.0, 0.0], [3.0, 0.0]])
        >>> round(float(m.result()), 4)  # confidences 0.881 (right), 0.953 (wrong)
        0.5359
    """

    def __init__(self, num_bins=15, name="expected_calibration_error", dtype=None):
        check_positive_int("num_bins", num_bins)
        super().__init__(name=name, dtype=dtype)
        self.num_bins = num_bins
        self._direction = "down"
        kw = dict(shape=(num_bins,), initializer="zeros", dtype=_COUNT_DTYPE.name, aggregation="sum")
        self.bin_weight = self.add_variable(name="bin_weight", **kw)
        self.bin_correct = self.add_variable(name="bin_correct", **kw)
        self.bin_confidence = self.add_variable(name="bin_confidence", **kw)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch: integer labels, logits ``[batch, C]``, optional weights."""
        labels, logits, weights, _ = _standardize(y_true, y_pred, sample_weight)
        probs = tf.nn.softmax(tf.cast(logits, _COUNT_DTYPE), axis=-1)
        confidence = tf.reduce_max(probs, axis=-1)
        preds = tf.cast(tf.argmax(logits, axis=-1), tf.int32)
        correct = tf.cast(tf.equal(preds, labels), _COUNT_DTYPE)
        bins = tf.cast(tf.math.ceil(confidence * self.num_bins), tf.int32) - 1
        bins = tf.clip_by_value(bins, 0, self.num_bins - 1)
        seg = lambda v: tf.math.unsorted_segment_sum(v, bins, self.num_bins)  # noqa: E731
        self.bin_weight.assign_add(seg(weights))
        self.bin_correct.assign_add(seg(weights * correct))
        self.bin_confidence.assign_add(seg(weights * confidence))

    def result(self):
        weight, correct, confidence = tf.unstack(_total(tf.stack([tf.convert_to_tensor(v) for v in (
            self.bin_weight, self.bin_correct, self.bin_confidence)])))
        total = tf.reduce_sum(weight)
        gap = tf.abs(correct - confidence)
        return tf.cast(_safe_div(tf.reduce_sum(gap), total), self.dtype)

    def reset_state(self):
        for v in (self.bin_weight, self.bin_correct, self.bin_confidence):
            v.assign(tf.zeros_like(v))

    def get_config(self):
        config = super().get_config()
        config.update({"num_bins": self.num_bins})
        return config
