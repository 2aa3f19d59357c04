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
    """Base class of tfcustom's user-facing errors.

    Catch it to handle every error a user can act on (a bad argument, bad data,
    a non-finite loss, an interrupted run) in one place; ``tfcustom-train``
    prints such an error as one line, without a traceback.

    Examples:
        >>> [issubclass(e, TfcustomError) for e in (ConfigError, DataError, NonFiniteLossError)]
        [True, True, True]
        >>> try:
        ...     check_positive_int("epochs", -1)
        ... except TfcustomError as e:
        ...     print(type(e).__name__)
        ConfigError
    """


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
    """Return the one-line message ``"<what> (received: <received>). <fix>."``.

    Args:
      what: what is wrong, e.g. ``"batch size is larger than the dataset"``.
      received: the value received (shown with ``repr``).
      fix: what to do, as a sentence.

    Returns:
      The message (the fix capitalised, a final period added).

    Examples:
        >>> format_error("epochs must be a positive integer", 0, "pass epochs >= 1")
        'epochs must be a positive integer (received: 0). Pass epochs >= 1.'
    """
    msg = f"{what} (received: {received!r})"
    fix = fix.strip()
    if fix:
        msg += ". " + fix[0].upper() + fix[1:]
        if not msg.endswith("."):
            msg += "."
    return msg


def config_error(what: str, received, fix: str) -> ConfigError:
    """Build (not raise) a [`ConfigError`][tfcustom.ConfigError] with the standard template.

    Args:
      what: what is wrong, e.g. ``"batch size is larger than the dataset"``.
      received: the value received (shown with ``repr``).
      fix: what to do, as a sentence.

    Returns:
      The [`ConfigError`][tfcustom.ConfigError] of [`format_error`][tfcustom.errors.format_error]'s message.

    Examples:
        >>> raise config_error("unknown optimizer", "adan", "choose one of: adam, sgd")
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: unknown optimizer (received: 'adan'). Choose one of: adam, sgd.
    """
    return ConfigError(format_error(what, received, fix))


def data_error(what: str, received, fix: str) -> DataError:
    """Build (not raise) a [`DataError`][tfcustom.DataError] with the standard template.

    Args:
      what: what is wrong, e.g. ``"batch size is larger than the dataset"``.
      received: the value received (shown with ``repr``).
      fix: what to do, as a sentence.

    Returns:
      The [`DataError`][tfcustom.DataError].

    Examples:
        >>> str(data_error("labels out of range", 12, "labels must be in [0, 10)"))
        'labels out of range (received: 12). Labels must be in [0, 10).'
    """
    return DataError(format_error(what, received, fix))


def check(condition: bool, what: str, received, fix: str) -> None:
    """Raise [`ConfigError`][tfcustom.ConfigError] with the standard template unless ``condition``.

    How tfcustom's constructors validate their arguments up front.

    Args:
      condition: nothing happens when it is true.
      what: what is wrong.
      received: the value received.
      fix: what to do.

    Examples:
        >>> check(3 <= 10, "batch size is larger than the dataset", (3, 10), "use a smaller batch")
        >>> check(30 <= 10, "batch size is larger than the dataset", (30, 10), "use a batch size of at most 10")
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: batch size is larger than the dataset (received: (30, 10)). Use a batch size of at most 10.
    """
    if not condition:
        raise config_error(what, received, fix)


def check_positive_int(name: str, value) -> int:
    """Validate that ``value`` is an int >= 1 and return it.

    Args:
      name: the argument's name, for the message.
      value: the value to check (a ``bool`` is refused).

    Returns:
      ``value``.

    Examples:
        >>> check_positive_int("epochs", 3)
        3
        >>> check_positive_int("epochs", 0)
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: epochs must be a positive integer (received: 0). Pass epochs >= 1.
    """
    check(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        f"{name} must be a positive integer",
        value,
        f"pass {name} >= 1",
    )
    return value


def check_one_of(name: str, value, choices, *, ignore_case: bool = False) -> None:
    """Validate that ``value`` is one of ``choices`` (a string compared lower-cased with ``ignore_case``).

    Args:
      name: what ``value`` is, for the message.
      value: the value to check.
      choices: the accepted values (lower-case ones, with ``ignore_case``).
      ignore_case: compare a string ``value`` lower-cased.

    Examples:
        >>> check_one_of("mode", "max", ("min", "max"))
        >>> check_one_of("optimizer", "Adam", ("adam", "sgd"), ignore_case=True)
        >>> check_one_of("mode", "up", ("min", "max"))
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: unknown mode (received: 'up'). Choose one of: min, max.
    """
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

    Args:
      path: the directory to test; a missing directory is not writable.

    Returns:
      Whether a subdirectory could be created there.

    Examples:
        >>> import os, tempfile
        >>> is_writable_dir(tempfile.gettempdir())
        True
        >>> is_writable_dir(os.path.join(tempfile.gettempdir(), "no-such-dir-tfcustom"))
        False
        >>> os.listdir(tempfile.mkdtemp())  # the probe leaves nothing behind
        []
    """
    import tempfile

    try:
        probe = tempfile.mkdtemp(prefix=".tfcustom-write-probe-", dir=path)
    except OSError:
        return False
    os.rmdir(probe)
    return True
