"""The shared base of the sparse classification losses: label/prediction
standardisation, stable log-probabilities, label smoothing."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from tfcustom.errors import check, config_error
from tfcustom.losses.loss_inputs import mismatch
from tfcustom.losses._args import _as_float, _check_common


class _SparseClassificationLoss(keras.losses.Loss):
    """Base: label/prediction standardisation and stable log-probabilities."""

    def __init__(self, from_logits=False, reduction="sum_over_batch_size", name=None, dtype=None):
        _check_common(from_logits, reduction)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = from_logits
        self._warned = False

    def _warn_on_mismatch(self, y_pred) -> None:
        """Eager calls only: warn once if ``y_pred`` does not fit ``from_logits``."""
        if self._warned or not tf.executing_eagerly():
            return
        problem = mismatch(self, y_pred)
        if problem:
            self._warned = True
            warnings.warn(problem, UserWarning, stacklevel=4)

    # -- helpers used by subclasses ----------------------------------------

    def _standardize(self, y_true, y_pred):
        """Return ``(labels int32 [...], y_pred float [..., C], num_classes)``."""
        y_pred = tf.convert_to_tensor(y_pred)
        if y_pred.dtype != self.dtype:
            y_pred = tf.cast(y_pred, self.dtype)
        self._warn_on_mismatch(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank is not None and y_pred.shape.rank is not None:
            if y_true.shape.rank == y_pred.shape.rank and y_true.shape[-1] == 1:
                y_true = tf.squeeze(y_true, axis=-1)
            if y_true.shape.rank != y_pred.shape.rank - 1:
                raise config_error(
                    f"{type(self).__name__} expects sparse integer labels of "
                    "shape [batch] (or [batch, 1]) and y_pred of shape "
                    "[batch, num_classes]",
                    f"y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}",
                    "pass class ids, not one-hot labels, or use a "
                    "keras.losses.Categorical* loss for one-hot labels",
                )
        if y_true.dtype.is_floating:
            y_true = tf.round(y_true)
        labels = tf.cast(y_true, tf.int32)
        num_classes = tf.shape(y_pred)[-1]
        static_c = y_pred.shape[-1]
        asserts = [
            tf.debugging.assert_non_negative(
                labels, message="tfcustom loss: labels must be >= 0"
            ),
            tf.debugging.assert_less(
                labels,
                num_classes,
                message="tfcustom loss: labels must be < num_classes "
                "(y_pred.shape[-1])",
            ),
        ]
        with tf.control_dependencies(asserts):
            labels = tf.identity(labels)
        return labels, y_pred, (static_c if static_c is not None else num_classes)

    def _log_probs(self, y_pred):
        """Stable log-probabilities over the last axis."""
        if self.from_logits:
            return tf.nn.log_softmax(y_pred, axis=-1)
        # Same treatment of probabilities as keras' categorical_crossentropy.
        eps = keras.backend.epsilon()
        probs = y_pred / tf.reduce_sum(y_pred, axis=-1, keepdims=True)
        probs = tf.clip_by_value(probs, eps, 1.0 - eps)
        return tf.math.log(probs)

    def _check_num_classes(self, what: str, length: int, num_classes) -> None:
        if isinstance(num_classes, int):
            check(
                length == num_classes,
                f"{what} has one entry per class but y_pred has a different "
                "number of classes",
                f"len({what})={length}, y_pred.shape[-1]={num_classes}",
                f"give {what} exactly num_classes entries",
            )

    def get_config(self):
        config = super().get_config()
        config.update({"from_logits": self.from_logits, "dtype": self.dtype})
        return config


def _smoothed_one_hot(labels, num_classes, label_smoothing, dtype):
    target = tf.one_hot(labels, num_classes, dtype=dtype)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / tf.cast(
            num_classes, dtype
        )
    return target


def _label_smoothing_arg(value) -> float:
    """Validate a ``label_smoothing`` argument (a float in [0, 1])."""
    return _as_float("label_smoothing", value, low=0.0, high=1.0, fix="pass label_smoothing in [0, 1], e.g. 0.1")


def _smoothed_cross_entropy(loss, y_true, y_pred, label_smoothing):
    """``(labels, log_p, target, ce)``: the (label-smoothed) cross-entropy per
    example of a `_SparseClassificationLoss`, with the pieces it used."""
    labels, y_pred, num_classes = loss._standardize(y_true, y_pred)
    log_p = loss._log_probs(y_pred)
    target = _smoothed_one_hot(labels, num_classes, label_smoothing, log_p.dtype)
    return labels, log_p, target, -tf.reduce_sum(target * log_p, axis=-1)


def _tiny(dtype) -> float:
    return float(np.finfo(tf.as_dtype(dtype).as_numpy_dtype).tiny)
