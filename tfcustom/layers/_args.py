"""Argument validation shared by the layers (errors in the tfcustom template)."""

from __future__ import annotations

from tfcustom.errors import config_error


def _get(module, what, value):
    """``keras.<module>.get(value)`` with errors in the tfcustom template."""
    try:
        return module.get(value)
    except (ValueError, TypeError) as e:
        raise config_error(
            f"invalid {what}", value, f"pass a name or object that {module.__name__}.get accepts ({e})"
        ) from None
