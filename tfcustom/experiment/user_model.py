"""A user's own model for the trainer: ``--model=package.module:function``.

The function is called as ``function(num_classes=..., input_shape=..., **model_kwargs)``
(``input_shape`` only when its signature takes it) and must return a
``keras.Model`` that outputs ``num_classes`` logits. The module is imported from
``sys.path`` plus the current directory (as ``python -m`` does), so a run
directory's ``config.json`` rebuilds the same model later (``tfcustom.experiment.run_dir``).

>>> is_reference("mlp"), is_reference("my_models:small_cnn")
(False, True)
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Callable, Dict, Sequence

import keras

from tfcustom import models as models_lib
from tfcustom.errors import check, config_error

_EXAMPLE = "--model=my_package.my_models:make_model (a function returning a keras.Model)"


def is_reference(name) -> bool:
    """True when ``name`` names a user function (``module:function``), not a registered model."""
    return isinstance(name, str) and ":" in name


def resolve(reference: str) -> Callable[..., Any]:
    """The function ``reference`` (``package.module:function``) names; a
    [`ConfigError`][tfcustom.errors.ConfigError] (one line) if it cannot be imported or is not callable."""
    module_name, _, attr = reference.partition(":")
    check(bool(module_name) and bool(attr) and ":" not in attr, "a user model must be written module:function",
          reference, f"pass e.g. {_EXAMPLE}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ModuleNotFoundError, or an error inside the user's module
        detail = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        raise config_error(f"cannot import the model's module {module_name!r} ({detail})", reference,
                           "check the module path and that its directory is on PYTHONPATH or the current directory") from None
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise config_error(f"module {module_name!r} has no attribute {attr!r}", reference,
                               f"define {attr}(num_classes, input_shape, **kwargs) there, or fix the name after ':'")
        fn = getattr(fn, part)
    check(callable(fn), "the user model is not callable", f"{reference} is a {type(fn).__name__}",
          "name a function returning a keras.Model (module:function)")
    return fn


def _call_kwargs(fn, reference: str, num_classes: int, input_shape, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: pass everything
        return dict(kwargs, num_classes=num_classes, input_shape=tuple(input_shape))
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    check(open_kwargs or "num_classes" in names, "the user model function takes no num_classes argument",
          f"{reference}{inspect.signature(fn)}", "add a num_classes parameter (the number of logits to output)")
    reserved = sorted({"num_classes", "input_shape"} & set(kwargs))
    check(not reserved, "model_kwargs may not set arguments the trainer passes", reserved,
          "drop them from --model_kwargs: num_classes and input_shape come from the dataset")
    unknown = [] if open_kwargs else sorted(set(kwargs) - set(names))
    check(not unknown, f"unknown argument(s) for model {reference!r}", unknown,
          "accepted arguments: " + ", ".join(n for n in names if n not in ("num_classes", "input_shape")))
    call = dict(kwargs, num_classes=num_classes)
    if open_kwargs or "input_shape" in names:
        call["input_shape"] = tuple(input_shape)
    return call


def build(reference: str, num_classes: int, input_shape: Sequence[int], **kwargs) -> keras.Model:
    """Call the user's function and check that it returned a ``keras.Model``."""
    fn = resolve(reference)
    model = fn(**_call_kwargs(fn, reference, num_classes, input_shape, kwargs))
    check(isinstance(model, keras.Model), "the user model function did not return a keras.Model",
          f"{reference} returned {type(model).__name__}", "return a keras.Model (e.g. keras.Sequential([...]) or keras.Model(inputs, outputs))")
    return model


def model_from_name(model: str, num_classes: int, input_shape: Sequence[int], /, **kwargs) -> keras.Model:
    """The model ``--model`` names: the user's function (``module:function``) or a registered tfcustom model.

    ``kwargs`` go to the model (they may hold its ``name``).
    """
    if is_reference(model):
        return build(model, num_classes, input_shape, **kwargs)
    return models_lib.get(model, num_classes=num_classes, **kwargs)


def check_reference(reference: str, kwargs: Dict[str, Any]) -> None:
    """Validate ``reference`` and ``kwargs`` without building the model (for ``TrainConfig.validate``)."""
    fn = resolve(reference)
    _call_kwargs(fn, reference, 1, (1,), kwargs)
