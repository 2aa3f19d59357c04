"""Argument validation shared by the losses (errors in the tfcustom template)."""

from __future__ import annotations

import math

from tfcustom.errors import check, check_one_of

_REDUCTIONS = (
    "sum_over_batch_size",
    "sum",
    "mean",
    "mean_with_sample_weight",
    "none",
    None,
)


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
