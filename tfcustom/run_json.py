"""The JSON files of a run directory, read so that a damaged one is one line.

``config.json``, ``history.json``, ``autotune.json`` and ``results.json`` are
written atomically (a temporary sibling, then ``os.replace``), so a crash
never leaves half a file; a file that is truncated or not JSON anyway was
damaged afterwards (a copy cut short, an editor, a full disk on another
tool's copy). `read_json` turns that into a [`ConfigError`][tfcustom.ConfigError] that
names the file and the way forward, before the run writes anything.

Examples:
    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.json")
    >>> _ = open(path, "w").write('[{"epoch": 1')
    >>> read_json(path, list, "restore it")
    Traceback (most recent call last):
    ...
    tfcustom.errors.ConfigError: history.json is damaged (not valid JSON: ...
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from tfcustom.errors import config_error
from tfcustom.disk_errors import atomic

START_OVER = "restore the file from a copy, or pass --overwrite to start the run over"


def read_json(path: str, kind: Optional[type] = None, fix: str = START_OVER) -> Any:
    """The JSON value in ``path`` (a ``kind`` — ``dict`` or ``list`` — when given).

    Raises [`tfcustom.errors.ConfigError`][tfcustom.errors.ConfigError] (one line: the file, what is
    wrong with it, ``fix``) when the file cannot be read, is not valid JSON
    (truncated, edited) or holds another kind of value.
    """
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise config_error(f"{name} cannot be read ({e.strerror or type(e).__name__})", path, fix) from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        where = f"{e.msg} (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
        raise config_error(f"{name} is damaged (not valid JSON: {where}; truncated or edited?)", path, fix) from None
    if kind is not None and not isinstance(value, kind):
        raise config_error(f"{name} is damaged (a JSON {type(value).__name__} where a {kind.__name__} belongs)", path, fix)
    return value


def damaged(path: str, what: str, fix: str = START_OVER):
    """Build (not raise) the [`ConfigError`][tfcustom.ConfigError] of a run file that is valid JSON but wrong inside."""
    return config_error(f"{os.path.basename(path)} is damaged ({what})", path, fix)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`tfcustom.disk_errors.atomic`)."""
    with atomic(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json(path: str, value: Any) -> None:
    """:func:`write_text` of ``value`` as indented JSON with sorted keys."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
