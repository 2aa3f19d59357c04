"""Classification losses for sparse integer labels and logits.

Every loss here is a :class:`keras.losses.Loss`, so it plugs into
``model.compile(loss=...)`` and Keras' reduction machinery
(``reduction="none"``, ``"sum"``, ``"sum_over_batch_size"``, ...,
``sample_weight``) works as for any Keras loss.

The tfcustom train step instead calls ``loss.call(y_true, y_pred)`` directly:
``call`` always returns the **per-example** loss (shape ``[batch]``, no
reduction, no sample weights). The step applies sample weights and divides by
the global batch size itself.

Conventions shared by all losses:

* ``y_true`` holds integer class ids of shape ``[batch]`` or ``[batch, 1]``
  (floats holding integers are accepted, as ``__call__`` casts them).
* ``y_pred`` holds probabilities ``[batch, num_classes]`` by default
  (``from_logits=False``, Keras' default) or logits with ``from_logits=True``
  -- what tfcustom's own models output, so pair them with
  ``from_logits=True``. A loss called eagerly on the wrong kind warns once
  (logits with ``from_logits=False``: values outside ``[0, 1]``;
  probabilities with ``from_logits=True``: rows summing to 1), and the
  :class:`tfcustom.Trainer` refuses to train with the mismatch
  (see :mod:`tfcustom.loss_inputs`).
* Computation happens in the loss' ``dtype`` (``float32`` by default), also
  when the model runs in ``mixed_float16``.
* Log-probabilities come from ``tf.nn.log_softmax``, never ``log(softmax)``,
  so logits of +-1e4 give finite losses and finite gradients.
* Labels outside ``[0, num_classes)`` raise ``InvalidArgumentError`` (a
  ``tf.debugging`` assertion, active eagerly and inside ``tf.function``; XLA
  drops assertions, so under ``jit_compile=True`` the data pipeline must
  guarantee valid labels).

Use :func:`get` to build a loss from its name, e.g. from a config file:

>>> import tfcustom.losses
>>> tfcustom.losses.get("focal", gamma=1.0).gamma
1.0
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfcustom.errors import check, check_one_of, config_error
from tfcustom.loss_inputs import mismatch

__all__ = [
    "SparseCategoricalCrossentropy",
    "SparseFocalLoss",
    "PolyLoss",
    "get",
    "names",
]

_REDUCTIONS = (
    "sum_over_batch_size",
    "sum",
    "mean",
    "mean_with_sample_weight",
    "none",
    None,
)


# --------------------------------------------------------------------------
# argument validation helpers
# --------------------------------------------------------------------------


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _as_float(name: str, value, *, low=None, high=None, fix: str) -> float:
    """Validate a finite real number in ``[low, high]`` and return a float."""
    try:
        ok = _is_number(value) or (
            hasattr(value, "ndim") and value.ndim == 0 and not isinstance(value, bool)
        )
        value_f = float(value) if ok else None
    except (TypeError, ValueError):
        ok, value_f = False, None
    check(
        ok and value_f is not None and math.isfinite(value_f),
        f"{name} must be a finite number",
        value,
        fix,
    )
    if low is not None:
        check(value_f >= low, f"{name} is too small", value, fix)
    if high is not None:
        check(value_f <= high, f"{name} is too large", value, fix)
    return value_f


def _as_float_list(name: str, value, fix: str) -> list[float]:
    """Validate a non-empty list of finite non-negative numbers."""
    try:
        items = [float(v) for v in list(value)]
        ok = len(items) > 0 and all(not isinstance(v, bool) for v in list(value))
    except (TypeError, ValueError):
        items, ok = [], False
    check(ok, f"{name} must be a non-empty list of numbers", value, fix)
    check(
        all(math.isfinite(v) and v >= 0.0 for v in items),
        f"{name} must contain only finite non-negative numbers",
        value,
        fix,
    )
    return items


def _check_common(from_logits, reduction) -> None:
    check(
        isinstance(from_logits, bool),
        "from_logits must be True or False",
        from_logits,
        "pass from_logits=True when y_pred holds logits (tfcustom's models output logits), False for probabilities",
    )
    check_one_of("reduction", reduction, _REDUCTIONS)


# --------------------------------------------------------------------------
# shared base class
# --------------------------------------------------------------------------


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
    example of a :class:`_SparseClassificationLoss`, with the pieces it used."""
    labels, y_pred, num_classes = loss._standardize(y_true, y_pred)
    log_p = loss._log_probs(y_pred)
    target = _smoothed_one_hot(labels, num_classes, label_smoothing, log_p.dtype)
    return labels, log_p, target, -tf.reduce_sum(target * log_p, axis=-1)


# --------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfcustom")
class SparseCategoricalCrossentropy(_SparseClassificationLoss):
    """Cross-entropy for integer labels with class weights and label smoothing.

    Per example ``i`` with true class ``c_i``::

        t   = one_hot(c_i) * (1 - label_smoothing) + label_smoothing / C
        ce  = -sum_k t_k * log_softmax(logits_i)_k
        out = class_weights[c_i] * ce          # class_weights default to 1

    ``class_weights`` weights each example by its true class as
    ``keras.Model.fit(class_weight=...)`` does: a dict ``{class_id: weight}``
    (any order; classes it leaves out weigh 1.0, as in Keras) or a sequence
    of one weight per class.

    Label smoothing has the same definition as
    ``keras.losses.CategoricalCrossentropy(label_smoothing=...)``.

    Args:
        class_weights: Optional dict ``{class_id: weight}`` or sequence of
            ``num_classes`` non-negative floats; each example's loss is
            multiplied by the weight of its true class.
        label_smoothing: Float in ``[0, 1]``.
        from_logits: Whether ``y_pred`` holds logits or probabilities
            (default ``False``, as in Keras; tfcustom's models need ``True``).
        reduction: Any Keras reduction; ``call`` itself never reduces.
        name: Optional name.
        dtype: Computation dtype; defaults to ``keras.backend.floatx()``.

    Example:

    >>> loss = SparseCategoricalCrossentropy(class_weights={1: 2.0, 2: 0.5},
    ...                                      label_smoothing=0.1,
    ...                                      from_logits=True,
    ...                                      reduction="none")
    >>> loss([0, 1], [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]).shape
    TensorShape([2])

    ```python
    model.compile(optimizer="adam", loss=SparseCategoricalCrossentropy(from_logits=True))
    ```
    """

    def __init__(
        self,
        class_weights=None,
        label_smoothing=0.0,
        from_logits=False,
        reduction="sum_over_batch_size",
        name="sparse_categorical_crossentropy",
        dtype=None,
    ):
        class_weights = _class_weights_arg(class_weights)
        label_smoothing = _label_smoothing_arg(label_smoothing)
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels, log_p, _, loss = _smoothed_cross_entropy(self, y_true, y_pred, self.label_smoothing)
        if isinstance(self.class_weights, dict):
            loss = loss * tf.gather(_dict_weights(self.class_weights, log_p, loss.dtype), labels)
        elif self.class_weights is not None:
            self._check_num_classes("class_weights", len(self.class_weights), log_p.shape[-1])
            weights = tf.constant(self.class_weights, dtype=loss.dtype)
            loss = loss * tf.gather(weights, labels)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "class_weights": (dict(self.class_weights) if isinstance(self.class_weights, dict)
                                  else None if self.class_weights is None else list(self.class_weights)),
                "label_smoothing": self.label_smoothing,
            }
        )
        return config


_CLASS_WEIGHTS_FIX = ("pass a dict {class_id: weight} (as keras.Model.fit(class_weight=...) takes; missing classes weigh 1.0), "
                      "a list of one non-negative weight per class, e.g. [1.0, 2.0, 1.0], or None")


def _class_weights_arg(value):
    """``None``, a list of floats, or a dict ``{int class_id: float}`` (JSON string keys accepted)."""
    if value is None:
        return None
    if isinstance(value, dict):
        out = {}
        for key, weight in value.items():
            try:
                class_id = int(key)
                ok = not isinstance(key, (bool, float)) and str(class_id) == str(key).strip() and class_id >= 0
            except (TypeError, ValueError):
                ok = False
            check(ok, "class_weights keys must be class ids (integers >= 0)", key, _CLASS_WEIGHTS_FIX)
            out[class_id] = _as_float(f"class_weights[{class_id}]", weight, low=0.0, fix=_CLASS_WEIGHTS_FIX)
        check(bool(out), "class_weights must not be empty", value, _CLASS_WEIGHTS_FIX)
        return dict(sorted(out.items()))
    check(not isinstance(value, (str, bytes, set, frozenset)) and hasattr(value, "__len__") and hasattr(value, "__getitem__"),
          "class_weights must be a dict {class_id: weight} or a sequence of weights", type(value).__name__, _CLASS_WEIGHTS_FIX)
    return _as_float_list("class_weights", value, _CLASS_WEIGHTS_FIX)


def _dict_weights(class_weights: dict, log_p, dtype):
    """The per-class weight vector of a ``{class_id: weight}`` dict: 1.0 for
    the classes it leaves out (as ``keras.Model.fit(class_weight=...)``)."""
    length = max(class_weights) + 1
    num_classes = log_p.shape[-1]
    if num_classes is not None:
        check(length <= num_classes, "class_weights names a class id the predictions do not have",
              f"class id {length - 1}, y_pred.shape[-1]={num_classes}", f"use class ids in 0..{num_classes - 1}")
    known = tf.constant([class_weights.get(c, 1.0) for c in range(length)], dtype=dtype)
    rest = tf.ones([tf.maximum(tf.shape(log_p)[-1] - length, 0)], dtype=dtype)
    return tf.concat([known, rest], axis=0)


@keras.saving.register_keras_serializable(package="tfcustom")
class SparseFocalLoss(_SparseClassificationLoss):
    """Focal loss (Lin et al. 2017) for integer labels and logits.

    Per example with true class ``c`` and ``p_t = softmax(logits)[c]``::

        out = -alpha_c * (1 - p_t) ** gamma * log(p_t)

    This is exactly ``keras.losses.CategoricalFocalCrossentropy(
    from_logits=True, gamma=gamma, alpha=alpha)`` on one-hot labels, where
    Keras multiplies the per-class terms by ``alpha`` (a scalar scales every
    class, a list gives ``alpha[k]`` for class ``k``; with one-hot labels only
    the true class' term survives). ``alpha=None`` means no weighting
    (``alpha = 1``); note Keras' own default is ``0.25``.

    ``log(p_t)`` comes from ``log_softmax`` and ``1 - p_t`` from
    ``-expm1(log p_t)``, so confident predictions (``p_t -> 1``) and extreme
    logits give finite values and gradients, also for ``0 < gamma < 1``.

    Args:
        gamma: Focusing parameter ``>= 0``; ``0`` gives cross-entropy.
        alpha: ``None``, a non-negative float, or a list of ``num_classes``
            non-negative floats (e.g. inverse class frequencies).
        from_logits: Whether ``y_pred`` holds logits or probabilities
            (default ``False``, as in Keras; tfcustom's models need ``True``).
        reduction: Any Keras reduction; ``call`` itself never reduces.
        name: Optional name.
        dtype: Computation dtype; defaults to ``keras.backend.floatx()``.

    Example:

    >>> loss = SparseFocalLoss(gamma=2.0, alpha=[0.25, 0.75], from_logits=True, reduction="none")
    >>> loss([0, 1], [[3.0, -1.0], [0.0, 0.2]]).shape
    TensorShape([2])

    ```python
    model.compile(optimizer="adam", loss=SparseFocalLoss(gamma=1.0, from_logits=True))
    ```
    """

    def __init__(
        self,
        gamma=2.0,
        alpha=None,
        from_logits=False,
        reduction="sum_over_batch_size",
        name="sparse_focal_loss",
        dtype=None,
    ):
        gamma = _as_float(
            "gamma", gamma, low=0.0, fix="pass gamma >= 0 (2.0 is the usual choice)"
        )
        if alpha is not None:
            if _is_number(alpha) or (hasattr(alpha, "ndim") and alpha.ndim == 0):
                alpha = _as_float(
                    "alpha",
                    alpha,
                    low=0.0,
                    fix="pass alpha as None, a non-negative float or one "
                    "non-negative float per class",
                )
            else:
                alpha = _as_float_list(
                    "alpha",
                    alpha,
                    "pass alpha as None, a non-negative float or one "
                    "non-negative float per class",
                )
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        self.gamma = gamma
        self.alpha = alpha

    def call(self, y_true, y_pred):
        labels, y_pred, num_classes = self._standardize(y_true, y_pred)
        log_p = self._log_probs(y_pred)
        log_pt = tf.reduce_sum(tf.one_hot(labels, num_classes, dtype=log_p.dtype) * log_p, axis=-1)
        loss = -log_pt
        if self.gamma != 0.0:
            one_minus_pt = -tf.math.expm1(log_pt)
            # Floor at the smallest normal number: pow(x, gamma - 1) in the
            # gradient stays finite for any gamma > 0, and the floor changes
            # the value by less than tiny**gamma * |log p_t| (negligible).
            tiny = tf.constant(_tiny(loss.dtype), loss.dtype)
            modulating = tf.pow(tf.maximum(one_minus_pt, tiny), self.gamma)
            loss = modulating * loss
        if self.alpha is not None:
            if isinstance(self.alpha, list):
                self._check_num_classes("alpha", len(self.alpha), num_classes)
                alpha = tf.constant(self.alpha, dtype=loss.dtype)
                loss = loss * tf.gather(alpha, labels)
            else:
                loss = loss * tf.constant(self.alpha, dtype=loss.dtype)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "gamma": self.gamma,
                "alpha": list(self.alpha) if isinstance(self.alpha, list) else self.alpha,
            }
        )
        return config


def _tiny(dtype) -> float:
    return float(np.finfo(tf.as_dtype(dtype).as_numpy_dtype).tiny)


@keras.saving.register_keras_serializable(package="tfcustom")
class PolyLoss(_SparseClassificationLoss):
    """Poly-1 loss (Leng et al. 2022, "PolyLoss"): cross-entropy + epsilon*(1 - p_t).

    Per example with (optionally smoothed) target ``t`` and
    ``p = softmax(logits)``::

        t   = one_hot(c) * (1 - label_smoothing) + label_smoothing / C
        ce  = -sum_k t_k * log p_k
        out = ce + epsilon * sum_k t_k * (1 - p_k)

    Without label smoothing the second term is ``epsilon * (1 - p_t)``; with
    it, ``p_t = sum_k t_k p_k`` as in the paper's label-smoothing variant.

    Args:
        epsilon: Poly-1 coefficient, ``>= -1`` (so the loss stays
            non-negative); ``0`` gives cross-entropy. Default ``1.0``.
        label_smoothing: Float in ``[0, 1]``.
        from_logits: Whether ``y_pred`` holds logits or probabilities
            (default ``False``, as in Keras; tfcustom's models need ``True``).
        reduction: Any Keras reduction; ``call`` itself never reduces.
        name: Optional name.
        dtype: Computation dtype; defaults to ``keras.backend.floatx()``.

    Example:

    >>> loss = PolyLoss(epsilon=1.0, from_logits=True, reduction="none")
    >>> loss([2], [[0.1, 0.2, 3.0]]).shape
    TensorShape([1])

    ```python
    model.compile(optimizer="adam", loss=PolyLoss(epsilon=2.0, from_logits=True))
    ```
    """

    def __init__(
        self,
        epsilon=1.0,
        label_smoothing=0.0,
        from_logits=False,
        reduction="sum_over_batch_size",
        name="poly1_loss",
        dtype=None,
    ):
        epsilon = _as_float(
            "epsilon",
            epsilon,
            low=-1.0,
            fix="pass epsilon >= -1 (1.0 is the paper's default)",
        )
        label_smoothing = _label_smoothing_arg(label_smoothing)
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        self.epsilon = epsilon
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        _, log_p, target, ce = _smoothed_cross_entropy(self, y_true, y_pred, self.label_smoothing)
        # 1 - p_k computed as -expm1(log p_k): exact when p_k is close to 1.
        one_minus_pt = tf.reduce_sum(target * -tf.math.expm1(log_p), axis=-1)
        return ce + self.epsilon * one_minus_pt

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "label_smoothing": self.label_smoothing})
        return config


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

_REGISTRY = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "crossentropy": SparseCategoricalCrossentropy,
    "focal": SparseFocalLoss,
    "poly1": PolyLoss,
}


def names() -> list[str]:
    """Return the names :func:`get` accepts (aliases included), sorted."""
    return sorted(_REGISTRY)


def get(name: str, **kwargs) -> keras.losses.Loss:
    """Build a loss from its registry name and constructor kwargs.

    Names: ``"sparse_categorical_crossentropy"`` (alias ``"crossentropy"``),
    ``"focal"``, ``"poly1"``. An unknown name raises
    :class:`tfcustom.errors.ConfigError` listing the valid names.

    >>> get("crossentropy", label_smoothing=0.1).label_smoothing
    0.1
    """
    check(
        isinstance(name, str) and name in _REGISTRY,
        "unknown loss name",
        name,
        f"choose one of: {', '.join(names())}",
    )
    return _REGISTRY[name](**kwargs)
