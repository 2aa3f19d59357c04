"""Classification losses for sparse integer labels and logits.

Every loss here is a `keras.losses.Loss`, so it plugs into
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
  [`tfcustom.Trainer`][tfcustom.Trainer] refuses to train with the mismatch
  (see `tfcustom.losses.loss_inputs`).
* Computation happens in the loss' ``dtype`` (``float32`` by default), also
  when the model runs in ``mixed_float16``.
* Log-probabilities come from ``tf.nn.log_softmax``, never ``log(softmax)``,
  so logits of +-1e4 give finite losses and finite gradients.
* Labels outside ``[0, num_classes)`` raise ``InvalidArgumentError`` (a
  ``tf.debugging`` assertion, active eagerly and inside ``tf.function``; XLA
  drops assertions, so under ``jit_compile=True`` the data pipeline must
  guarantee valid labels).

Use [`get`][tfcustom.losses.get] to build a loss from its name, e.g. from a config file:

>>> import tfcustom.losses
>>> tfcustom.losses.get("focal", gamma=1.0).gamma
1.0
"""

from __future__ import annotations

import keras

from tfcustom.errors import check
from tfcustom.losses.crossentropy import SparseCategoricalCrossentropy
from tfcustom.losses.focal import SparseFocalLoss
from tfcustom.losses.poly import PolyLoss

__all__ = [
    "SparseCategoricalCrossentropy",
    "SparseFocalLoss",
    "PolyLoss",
    "get",
    "names",
]

_REGISTRY = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "crossentropy": SparseCategoricalCrossentropy,
    "focal": SparseFocalLoss,
    "poly1": PolyLoss,
}


def names() -> list[str]:
    """Return the names [`get`][tfcustom.losses.get] accepts (aliases included), sorted.

    Returns:
      The names, sorted.

    Examples:
        >>> names()
        ['crossentropy', 'focal', 'poly1', 'sparse_categorical_crossentropy']
    """
    return sorted(_REGISTRY)


def get(name: str, **kwargs) -> keras.losses.Loss:
    """Build a loss from its registry name and constructor kwargs.

    Names: ``"sparse_categorical_crossentropy"`` (alias ``"crossentropy"``),
    ``"focal"``, ``"poly1"``.

    Args:
      name: one of [`names`][tfcustom.losses.names]; an unknown name raises
        [`ConfigError`][tfcustom.errors.ConfigError] listing the valid names.
      **kwargs: the loss's constructor arguments (``from_logits=True`` for tfcustom's models).

    Returns:
      A new ``keras.losses.Loss``.

    Examples:
        >>> get("crossentropy", label_smoothing=0.1).label_smoothing
        0.1
        >>> type(get("focal", gamma=2.0, from_logits=True)).__name__
        'SparseFocalLoss'
    """
    check(
        isinstance(name, str) and name in _REGISTRY,
        "unknown loss name",
        name,
        f"choose one of: {', '.join(names())}",
    )
    return _REGISTRY[name](**kwargs)


# ``doctest.testmod(tfcustom.losses)`` only collects objects defined in this
# module; list the re-exported ones so their docstring examples still run.
__test__ = {name: globals()[name] for name in ("SparseCategoricalCrossentropy", "SparseFocalLoss", "PolyLoss")}
