"""``PolyLoss``: Poly-1 loss (Leng et al. 2022)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom.losses._args import _as_float
from tfcustom.losses._base import _SparseClassificationLoss, _label_smoothing_arg, _smoothed_cross_entropy


@keras.saving.register_keras_serializable(package="tfcustom")
class PolyLoss(_SparseClassificationLoss):
    """Poly-1 loss (Leng et al. 2022, "PolyLoss"): cross-entropy + epsilon*(1 - p_t).

    Per example with (optionally smoothed) target ``t`` and
    ``p = softmax(logits)``:

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

    Examples:
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
