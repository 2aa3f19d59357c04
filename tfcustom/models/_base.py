"""What the tfcustom models share: argument checks, float32 logits under mixed
precision, checkpoint-visible sublayers, and ``_StackModel`` (``build`` runs
the sublayers in call order)."""

from __future__ import annotations

import keras

from tfcustom.errors import check, check_positive_int


def _positive_ints(name, values, allow_empty=False):
    if isinstance(values, int) and not isinstance(values, bool):
        values = (values,)
    check(
        isinstance(values, (list, tuple)) and (allow_empty or len(values) > 0),
        f"{name} must be a {'' if allow_empty else 'non-empty '}list of positive ints",
        values,
        f"pass e.g. {name}=(32, 64)",
    )
    for v in values:
        check_positive_int(f"each entry of {name}", v)
    return tuple(values)


def _logits_dtype(policy):
    """float32 logits under a mixed policy (Keras' mixed-precision advice for
    the last layer); the model's own policy otherwise."""
    return "float32" if policy.compute_dtype != policy.variable_dtype else policy


def _attach(model, layers):
    """Also assign each layer of a Python list as an attribute named after the
    layer: TensorFlow's tracking (``tf.train.Checkpoint``) does not look inside
    Keras 3's tracked lists. The list stays (same order, same ``.keras``
    weight paths)."""
    for layer in layers:
        setattr(model, layer.name, layer)


class _StackModel(keras.Model):
    """A model whose sublayers run one after the other: ``_stack()`` lists
    them in call order, and ``build`` builds each on the previous one's output
    shape, creating the same variables as a call on a batch."""

    def _stack(self):
        raise NotImplementedError

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._stack():
            if not layer.built:  # stateless layers (Flatten, pooling) are built at creation
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._stack():
            shape = tuple(layer.compute_output_shape(shape))
        return shape
