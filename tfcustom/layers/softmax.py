"""A numerically stable ``Softmax`` layer with Keras' mask semantics."""

from __future__ import annotations

import keras
from keras import ops

from tfcustom.errors import check


@keras.saving.register_keras_serializable(package="tfcustom")
class Softmax(keras.layers.Layer):
    """Numerically stable softmax: ``exp(x - max(x)) / sum(exp(x - max(x)))``.

    Subtracting the maximum along ``axis`` keeps ``exp`` from overflowing, so
    logits such as +-1e4 give finite probabilities.

    As ``keras.layers.Softmax``: ``call(inputs, mask=None)`` takes a mask
    broadcastable to ``inputs`` (aligned on the last axes; True/1 keeps an
    entry): masked entries get probability 0 and the others are normalised
    among themselves. A Keras mask is passed through (``supports_masking``).

    Args:
        axis: int, the axis to normalise over (default: last).

    Examples:
        >>> import numpy as np
        >>> p = Softmax()(np.array([[1e4, 0.0, -1e4]], "float32"))
        >>> p.numpy().round(3).tolist()
        [[1.0, 0.0, 0.0]]
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        check(
            isinstance(axis, int) and not isinstance(axis, bool),
            "Softmax axis must be an int",
            axis,
            "pass e.g. axis=-1",
        )
        self.axis = axis
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            mask = self._check_mask(mask, inputs)
            # Keras' constant: far below any logit, yet finite in float16.
            low = -3e4 if keras.backend.standardize_dtype(inputs.dtype) == "float16" else -1e9
            inputs = ops.where(mask, inputs, ops.cast(low, inputs.dtype))
        shifted = inputs - ops.stop_gradient(ops.max(inputs, axis=self.axis, keepdims=True))
        e = ops.exp(shifted)
        outputs = e / ops.sum(e, axis=self.axis, keepdims=True)
        if mask is not None:
            outputs = ops.where(mask, outputs, ops.zeros_like(outputs))
        return outputs

    @staticmethod
    def _check_mask(mask, inputs):
        m_shape, i_shape = tuple(mask.shape), tuple(inputs.shape)
        check(
            len(m_shape) <= len(i_shape)
            and all(m in (1, None) or i is None or m == i for m, i in zip(m_shape[::-1], i_shape[::-1])),
            "Softmax mask must be broadcastable to the inputs (aligned on the last axes)",
            {"mask": m_shape, "inputs": i_shape},
            "give the mask the inputs' shape, or size 1 on the axes to broadcast",
        )
        if keras.backend.standardize_dtype(mask.dtype) != "bool":
            mask = ops.greater(mask, ops.cast(0.5, mask.dtype))
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis})
        return config
