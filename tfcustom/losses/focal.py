"""``SparseFocalLoss`` (Lin et al. 2017)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.losses._args import _as_float, _as_float_list, _is_number
from tfcustom.losses._base import _SparseClassificationLoss, _tiny


@keras.saving.register_keras_serializable(package="tfcustom")
class SparseFocalLoss(_SparseClassificationLoss):
    """Focal loss (Lin et al. 2017) for integer labels and logits.

    Per example with true class ``c`` and ``p_t = softmax(logits)[c]``:

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

    Examples:
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
