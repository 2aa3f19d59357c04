"""Select a model's top-level layers by **name pattern** (``fnmatch``: ``*``,
``?``, ``[...]``), as [`tfcustom.experiment.transfer`][tfcustom.experiment.transfer] does to restore, freeze and
route layers."""

from __future__ import annotations

import fnmatch
from typing import List

import keras

from tfcustom.errors import check


def check_patterns(patterns, what: str) -> tuple:
    """``patterns`` (one string or several) as a tuple of non-empty strings, or one error naming ``what``."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    patterns = tuple(patterns)
    check(all(isinstance(p, str) and p for p in patterns), f"{what} must be layer-name patterns (strings)", patterns,
          "pass e.g. ('stage*', 'hidden')")
    return patterns


def layer_names(model: keras.Model) -> List[str]:
    """The names of the model's top-level layers, in order.

    Args:
      model: a Keras model.

    Returns:
      ``[layer.name for layer in model.layers]``.

    Examples:
        >>> layer_names(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden"), keras.layers.Dense(2, name="logits")]))
        ['hidden', 'logits']
    """
    return [layer.name for layer in model.layers]


def match_layers(model: keras.Model, include=("*",), exclude=(), *, what: str = "layer patterns") -> List[keras.layers.Layer]:
    """Top-level layers whose name matches a pattern of ``include`` and none of ``exclude``.

    Every ``include`` pattern other than ``"*"`` must match at least one layer
    (a typo is an error, not a silent no-op); so must the result.

    Args:
      model: a Keras model.
      include: ``fnmatch`` patterns (one string or several) of the layers wanted.
      exclude: patterns of layers left out.
      what: the errors' subject.

    Returns:
      The layers selected, in the model's order.

    Examples:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="stage0"),
        ...                           keras.layers.Dense(3, name="stage1"), keras.layers.Dense(2, name="logits")])
        >>> [layer.name for layer in match_layers(model, ["stage*"], exclude=["stage1"])]
        ['stage0']
        >>> match_layers(model, ["stag*", "head"])
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: layer patterns: pattern 'head' matches no layer of model ... Use patterns over its layer names: stage0, stage1, logits.
    """
    include, exclude = check_patterns(include, what), check_patterns(exclude, "exclude patterns")
    names = layer_names(model)
    for p in include:
        check(p == "*" or any(fnmatch.fnmatchcase(n, p) for n in names),
              f"{what}: pattern {p!r} matches no layer of model {model.name!r}", p,
              f"use patterns over its layer names: {', '.join(names) or '(none: build the model first)'}")
    selected = [l for l in model.layers
                if any(fnmatch.fnmatchcase(l.name, p) for p in include) and not any(fnmatch.fnmatchcase(l.name, p) for p in exclude)]
    check(selected, f"{what} match nothing (every matching layer is excluded)", {"include": include, "exclude": exclude},
          f"layer names are: {', '.join(names)}")
    return selected
