"""One error template for every argument a user can get wrong.

Every message says three things: what is wrong, what was received, and what
to do. Constructors and loaders call [`check`][tfcustom.errors.check] (or raise
[`ConfigError`][tfcustom.ConfigError] through [`config_error`][tfcustom.errors.config_error]) so the wording is the same
everywhere.

Examples:
    >>> from tfcustom.errors import check
    >>> check(3 > 0, "epochs must be positive", 3, "pass epochs >= 1")
"""

from __future__ import annotations

import os


class TfcustomError(Exception):
    """Base class of tfcustom's user-facing errors."""


class ConfigError(TfcustomError, ValueError):
    """A flag, config field or argument has a value that cannot work.

    ``tfcustom-train`` reports it as one ``error:`` line and exit code 2.

    Examples:
        >>> import tfcustom
        >>> try:
        ...     tfcustom.models.get("nope", 10)
        ... except ConfigError as e:
        ...     print(e)
        unknown model name (received: 'nope'). Choose one of: cnn, logistic_regression, mlp, resnet.
    """


class DataError(TfcustomError, ValueError):
    """Data is missing, corrupt, or does not match what the model expects.

    Examples:
        >>> import numpy as np, tfcustom
        >>> try:
        ...     tfcustom.data.from_numpy(np.full((2, 1), 7.0), [0, 1], np.zeros((1, 1)), [0])
        ... except DataError as e:
        ...     print(type(e).__name__, isinstance(e, ValueError))
        DataError True
    """


class NonFiniteLossError(TfcustomError, FloatingPointError):
    """The loss or a gradient became NaN or Inf during training.

    Raised by [`Trainer.fit`][tfcustom.Trainer.fit] with ``on_nonfinite="stop"``
    (``tfcustom-train``: exit code 3); the bad step is not applied.

    Examples:
        >>> import keras, numpy as np, tfcustom
        >>> x, y = np.full((4, 2), np.nan, "float32"), np.zeros(4, "int64")
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> trainer = tfcustom.Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...                            "sgd", verbose=0)
        >>> try:
        ...     trainer.fit((x, y), epochs=1, batch_size=2)
        ... except NonFiniteLossError:
        ...     print("stopped; weights finite:", all(np.isfinite(w).all() for w in model.get_weights()))
        stopped; weights finite: True
    """


def format_error(what: str, received, fix: str) -> str:
    """Return the one-line message ``"<what> (received: <received>). <fix>."``."""
    msg = f"{what} (received: {received!r})"
    fix = fix.strip()
    if fix:
        msg += ". " + fix[0].upper() + fix[1:]
        if not msg.endswith("."):
            msg += "."
    return msg


def config_error(what: str, received, fix: str) -> ConfigError:
    """Build (not raise) a [`ConfigError`][tfcustom.ConfigError] with the standard template."""
    return ConfigError(format_error(what, received, fix))


def data_error(what: str, received, fix: str) -> DataError:
    """Build (not raise) a [`DataError`][tfcustom.DataError] with the standard template."""
    return DataError(format_error(what, received, fix))


def check(condition: bool, what: str, received, fix: str) -> None:
    """Raise [`ConfigError`][tfcustom.ConfigError] with the standard template unless ``condition``."""
    if not condition:
        raise config_error(what, received, fix)


def check_positive_int(name: str, value) -> int:
    """Validate that ``value`` is an int >= 1 and return it."""
    check(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        f"{name} must be a positive integer",
        value,
        f"pass {name} >= 1",
    )
    return value


def check_one_of(name: str, value, choices, *, ignore_case: bool = False) -> None:
    """Validate that ``value`` is one of ``choices`` (a string compared lower-cased with ``ignore_case``)."""
    choices = list(choices)
    check(
        (value.lower() if ignore_case and isinstance(value, str) else value) in choices,
        f"unknown {name}",
        value,
        f"choose one of: {', '.join(map(str, choices))}",
    )


def is_writable_dir(path: str) -> bool:
    """True when a directory can really be created inside ``path`` (and is removed again).

    ``os.access`` says yes to root everywhere, even on filesystems that refuse
    writes (a read-only mount, ``/sys``); trying is the only reliable test.
    """
    import tempfile

    try:
        probe = tempfile.mkdtemp(prefix=".tfcustom-write-probe-", dir=path)
    except OSError:
        return False
    os.rmdir(probe)
    return True
