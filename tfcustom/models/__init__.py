"""Classification models built from [`tfcustom.layers`][tfcustom.layers]; all return logits.

Every model is a subclassed ``keras.Model`` whose constructor arguments are
its whole config, so ``.keras`` files reload with ``safe_mode=True``. As with
Keras' own models:

* ``model.build(input_shape)`` creates every variable that calling the model
  on a batch creates (``summary()`` counts them, ``load_weights`` fills them);
* every sublayer is an attribute, so a plain
  ``tf.train.Checkpoint(model=model)`` holds all weights and BatchNorm
  statistics (layers kept only in Python lists are invisible to it);
* sublayers get the model's dtype policy: ``dtype="mixed_float16"`` computes
  the hidden layers in float16, with float32 logits.

Inputs are float32 images in [0, 1] of shape (H, W, C) or flat vectors (MLP
and LogisticRegression flatten whatever they get). None of them ends with a
softmax: pair them with ``from_logits=True`` losses.

Build one by name with [`get`][tfcustom.models.get]:

>>> import numpy as np
>>> from tfcustom import models
>>> models.names()
['cnn', 'logistic_regression', 'mlp', 'resnet']
>>> model = models.get("cnn", num_classes=10)
>>> tuple(model(np.zeros((2, 28, 28, 1), "float32")).shape)
(2, 10)
"""

from __future__ import annotations

import inspect

from tfcustom.errors import check, config_error
from tfcustom.models.cnn import CNN
from tfcustom.models.logistic_regression import LogisticRegression
from tfcustom.models.mlp import MLP
from tfcustom.models.resnet import ResNet

__all__ = ["MLP", "CNN", "ResNet", "LogisticRegression", "get", "names"]

_REGISTRY = {
    "cnn": CNN,
    "logistic_regression": LogisticRegression,
    "mlp": MLP,
    "resnet": ResNet,
}

# Keras base-layer arguments every model also accepts.
_BASE_KWARGS = ("name", "dtype")


def names():
    """Return the sorted names [`get`][tfcustom.models.get] accepts.

    Returns:
      The registered model names.

    Examples:
        >>> names()
        ['cnn', 'logistic_regression', 'mlp', 'resnet']
    """
    return sorted(_REGISTRY)


def get(name, /, num_classes, **kwargs):
    """Build the model registered as ``name`` with ``num_classes`` logits.

    ``kwargs`` go to the model's constructor (including Keras' own ``name``
    and ``dtype``; ``name`` here is positional-only so the two don't clash);
    a model name or argument the model does not know raises
    [`ConfigError`][tfcustom.errors.ConfigError]. Model names are case-insensitive.

    Args:
      name: one of [`names`][tfcustom.models.names] (positional-only).
      num_classes: the number of logits.
      **kwargs: the model's constructor arguments.

    Returns:
      A new, unbuilt ``keras.Model`` that outputs logits.

    Examples:
        >>> get("mlp", 10, hidden_units=(64,)).hidden_units
        (64,)
    """
    check(
        isinstance(name, str) and name.lower() in _REGISTRY,
        "unknown model name",
        name,
        "choose one of: " + ", ".join(names()),
    )
    cls = _REGISTRY[name.lower()]
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters
        if p not in ("self", "num_classes", "kwargs")
    ]
    unknown = sorted(set(kwargs) - set(params) - set(_BASE_KWARGS))
    if unknown:
        raise config_error(
            f"unknown argument(s) for model {name.lower()!r}",
            unknown,
            "accepted arguments: " + ", ".join(params + list(_BASE_KWARGS)),
        )
    return cls(num_classes, **kwargs)


# ``doctest.testmod(tfcustom.models)`` only collects objects defined in this
# module; list the re-exported ones so their docstring examples still run.
__test__ = {name: globals()[name] for name in ("MLP", "CNN", "ResNet", "LogisticRegression")}
