"""Argument validation shared by the layers (errors in the tfcustom template)."""

from __future__ import annotations

from tfcustom.errors import check, config_error


def _get(module, what, value):
    """``keras.<module>.get(value)`` with errors in the tfcustom template."""
    try:
        return module.get(value)
    except (ValueError, TypeError) as e:
        raise config_error(
            f"invalid {what}", value, f"pass a name or object that {module.__name__}.get accepts ({e})"
        ) from None


def _check_rate(rate):
    check(
        isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= rate < 1.0,
        "dropout rate must be in [0, 1)",
        rate,
        "pass 0 to disable dropout or a value such as 0.3",
    )
    return float(rate)
