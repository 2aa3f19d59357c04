"""absl flags made from `tfcustom.TrainConfig`'s settings: each is declared once, in the config.

`define_flags` defines one flag per setting (its default, help text, type,
choices and parse-time check come from the setting's declaration);
`help_groups` lists them in ``--help`` by the settings' groups; and
`config_from_flags` builds the `TrainConfig` from the parsed values.

The flag's kind follows the field's type (``bool``, ``int``, ``float``,
``str``, a tuple of strings is a comma-separated list, a dict is a JSON
object); a setting says ``kind=`` for the others: ``auto_bool``
(``--jit_compile``), ``float_or_find`` / ``int_or_find`` (a number or
``find``), ``int_pair`` (``START,END``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional

from absl import flags

from tfcustom.experiment.config import HELP_ORDER, TrainConfig
from tfcustom.errors import config_error


class AutoBoolParser(flags.ArgumentParser):
    """auto, true or false; a boolean flag otherwise (--jit_compile, --nojit_compile)."""

    def parse(self, argument):
        if isinstance(argument, bool) or argument == "auto":
            return argument
        value = str(argument).lower()
        if value in ("auto", "true", "false", "1", "0"):
            return {"auto": "auto", "true": True, "1": True, "false": False, "0": False}[value]
        raise ValueError("should be auto, true or false")

    def flag_type(self):
        return "auto|bool"


class NumberOrFindParser(flags.ArgumentParser):
    """A positive number, or ``find`` (tfcustom.experiment.finders)."""

    def __init__(self, kind, name: str):
        self.kind, self.name = kind, name

    def parse(self, argument):
        if str(argument).lower() == "find":
            return "find"
        noun = "integer" if self.kind is int else "number"
        try:
            value = self.kind(argument)
            ok = value > 0 and (self.kind is not int or value == float(argument))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"--{self.name} must be a positive {noun} or find (e.g. --{self.name}={128 if self.kind is int else 1e-3})")
        return value

    def flag_type(self):
        return f"{self.kind.__name__}|find"


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or field.name


def _kind(field: dataclasses.Field) -> str:
    if field.metadata.get("kind"):
        return field.metadata["kind"]
    if field.metadata.get("choices"):
        return "enum"
    annotation = str(field.type)
    for marker, kind in (("Tuple", "list"), ("Dict", "json"), ("bool", "boolean"), ("int", "integer"),
                         ("float", "float"), ("str", "string")):
        if marker in annotation:
            return kind
    raise TypeError(f"setting {field.name}: no flag kind for type {annotation}; pass kind= to setting()")


def _define(field: dataclasses.Field, flag_values) -> None:
    name, help_text, default, kind = flag_name(field), field.metadata["help"], _default(field), _kind(field)
    if kind == "enum":
        flags.DEFINE_enum(name, default, list(field.metadata["choices"]), help_text, flag_values=flag_values)
    elif kind == "list":
        flags.DEFINE_list(name, list(default), help_text, flag_values=flag_values)
    elif kind == "json":
        flags.DEFINE_string(name, json.dumps(default), help_text, flag_values=flag_values)
    elif kind == "int_pair":
        flags.DEFINE_list(name, default, help_text, flag_values=flag_values)
    elif kind == "auto_bool":
        flags.DEFINE_flag(flags.Flag(AutoBoolParser(), flags.ArgumentSerializer(), name, default, help_text, boolean=True),
                          flag_values=flag_values)
    elif kind in ("float_or_find", "int_or_find"):
        parser = NumberOrFindParser(float if kind == "float_or_find" else int, name)
        flags.DEFINE_flag(flags.Flag(parser, flags.ArgumentSerializer(), name, default, help_text), flag_values=flag_values)
    else:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=flag_values)
    rule = field.metadata.get("rule")
    if rule is not None:
        flags.register_validator(name, lambda v, rule=rule: v is None or rule.predicate(v),
                                 message=f"--{name} {rule.text} (e.g. --{name}={rule.example})", flag_values=flag_values)


def _default(field: dataclasses.Field):
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def define_flags(flag_values=flags.FLAGS) -> None:
    """One flag per `TrainConfig` setting."""
    for field in dataclasses.fields(TrainConfig):
        _define(field, flag_values)


def help_groups(extra: Optional[Dict[str, List[str]]] = None) -> Dict[str, List[str]]:
    """``--help`` title -> flag names (titles in ``HELP_ORDER``, flags in the settings' order); ``extra`` flags (not settings) first in their group."""
    groups: Dict[str, List[str]] = {name: list((extra or {}).get(name, ())) for name in HELP_ORDER}
    for field in dataclasses.fields(TrainConfig):
        groups[field.metadata["group"]].append(flag_name(field))
    return groups


def _value(field: dataclasses.Field, value):
    kind = _kind(field)
    if kind == "list":
        return tuple(value)
    if kind == "json":
        return _json_object(flag_name(field), value)
    if kind == "int_pair":
        return _int_pair(flag_name(field), value)
    return value


def _json_object(name: str, text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise config_error(f"--{name} is not valid JSON ({e.msg})", text,
                           f'pass a JSON object, e.g. --{name}=\'{{"filters": [32, 64]}}\'') from None
    if not isinstance(value, dict):
        raise config_error(f"--{name} must be a JSON object", text, f'pass e.g. --{name}=\'{{"dropout": 0.3}}\'')
    return value


def _int_pair(name: str, values):
    if not values:
        return None
    try:
        start, end = (int(v) for v in values)
    except ValueError:
        raise config_error(f"--{name} must be two integers START,END", ",".join(values),
                           f"pass e.g. --{name}=10,20") from None
    return (start, end)


def config_from_flags(flag_values=flags.FLAGS) -> TrainConfig:
    """The `TrainConfig` of the parsed flags."""
    return TrainConfig(**{f.name: _value(f, flag_values[flag_name(f)].value) for f in dataclasses.fields(TrainConfig)})
