"""``--batch_size=find`` and ``--learning_rate=find`` for a training run.

The batch size is found first (`tfcustom.experiment.batch_finder`: the
largest global batch that fits, and the fastest ``steps_per_execution``),
then the learning rate at that batch size (`tfcustom.experiment.lr_finder`,
a range test on a throw-away copy of the model with a constant learning
rate: the run's ``--lr_schedule`` and warm-up then start from the rate
found). Both go into the run's ``autotune.json`` under ``"finders"``; a
resumed run, or a run given ``--autotune_from``, reads them back instead of
measuring again, so it trains exactly as the first.

The run's ``config.json`` keeps what was asked (``"find"``); ``results.json``
reports the values found (``autotune.finders``) and the run directory gets
``lr_finder.png``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Tuple

from absl import logging

from tfcustom.experiment import autotune
from tfcustom.errors import check
from tfcustom.experiment import batch_finder, lr_finder

FIND = "find"


def wanted(config) -> bool:
    """True if the config asks for a finder.

    Args:
      config: a `tfcustom.TrainConfig` (its ``batch_size`` and ``learning_rate``).

    Returns:
      Whether either of them is ``"find"``.

    Examples:
        >>> from tfcustom import TrainConfig
        >>> wanted(TrainConfig(batch_size="find")), wanted(TrainConfig(batch_size=64))
        (True, False)
    """
    return FIND in (config.batch_size, config.learning_rate)


def recorded(workdir: str, resume: bool, autotune_from: Optional[str]) -> Optional[Dict[str, Any]]:
    """The finders' values of the run being resumed (or of ``--autotune_from``), if recorded.

    Args:
      workdir: the run directory; its ``autotune.json`` is read when ``resume``.
      resume: the run resumes.
      autotune_from: ``--autotune_from``'s path (a run directory or its json), read when the run has none.

    Returns:
      The recorded ``finders`` dict, or None when nothing (or an empty dict) was recorded.

    Examples:
        >>> import tempfile
        >>> workdir = tempfile.mkdtemp()
        >>> autotune.save(autotune.AutotuneResult(False, "float32", finders={"batch_size": 256}), workdir)
        >>> recorded(workdir, True, None), recorded(workdir, False, None)
        ({'batch_size': 256}, None)
    """
    previous = autotune.load(workdir) if resume else None
    if previous is None and autotune_from:
        previous = autotune.load_from(autotune_from)
    return previous.finders if previous is not None and previous.finders else None


def resolve(config, workdir: str, *, resume: bool, multi_worker: bool, build: Callable, make_batches: Callable,
            train_examples: int, strategy=None, chief: bool = True) -> Tuple[Any, Dict[str, Any]]:
    """``(config with the values found, what was found)``; ``config`` unchanged when nothing is to be found.

    Args:
      config: the run's `tfcustom.TrainConfig`.
      workdir: the run directory (``lr_finder.png``; ``autotune.json`` when resuming).
      resume: the run resumes (its recorded values are used).
      multi_worker: refused there (each worker would measure on its own).
      build: ``build(config) -> (model, loss, optimizer)`` for that config.
      make_batches: ``make_batches(global_batch_size)`` -> an iterable of
        training batches, distributed for the strategy.
      train_examples: the training split's size.
      strategy: the run's strategy.
      chief: only the chief writes ``lr_finder.png``.

    Returns:
      ``(config, found)``: ``config`` with ``batch_size``, ``steps_per_execution`` and
      ``learning_rate`` replaced by the values found, and ``found`` (those values and the
      finders' reports, as ``autotune.json`` records them; ``{}`` when nothing is to be found).

    Examples:
        >>> from tfcustom import TrainConfig
        >>> config = TrainConfig(batch_size=64)   # nothing to find: nothing is built or measured
        >>> resolve(config, "unused", resume=False, multi_worker=False, build=None, make_batches=None,
        ...         train_examples=0) == (config, {})
        True
    """
    if not wanted(config):
        return config, {}
    found = recorded(workdir, resume, config.autotune_from)
    if found is None:
        check(not multi_worker, "--batch_size=find and --learning_rate=find run on one machine only", "multi-worker",
              "find them in a single-machine run, then pass that run's directory as --autotune_from")
        found = _measure(config, workdir, build, make_batches, train_examples, strategy, chief)
    else:
        logging.info("Finders: reusing %s", found)
    values = {key: found[key] for key in ("batch_size", "steps_per_execution", "learning_rate") if key in found}
    return dataclasses.replace(config, **values), found


def _measure(config, workdir, build, make_batches, train_examples, strategy, chief) -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    if config.batch_size == FIND:
        start_config = dataclasses.replace(config, batch_size=32, learning_rate=_a_rate(config))
        result = batch_finder.find_batch_size(
            lambda: build(start_config), make_batches, strategy=strategy, train_examples=train_examples,
            steps_per_execution=(config.steps_per_execution,) if config.deterministic else
            batch_finder.STEPS_PER_EXECUTION_CANDIDATES)
        found.update(batch_size=result.batch_size, steps_per_execution=result.steps_per_execution,
                     batch_finder=result.to_dict())
    if config.learning_rate == FIND:
        batch_size = found.get("batch_size", config.batch_size)
        sweep = dataclasses.replace(config, batch_size=batch_size, learning_rate=lr_finder.DEFAULT_MIN_LR,
                                    lr_schedule="constant", warmup_epochs=0.0)
        result = lr_finder.find_learning_rate(lambda: build(sweep), make_batches(batch_size), strategy=strategy)
        found.update(learning_rate=result.learning_rate, lr_finder=result.to_dict())
        if chief:
            lr_finder.plot(result, os.path.join(workdir, lr_finder.PLOT_FILE))
    return found


def _a_rate(config) -> float:
    """A learning rate for the batch finder's steps (their updates do not matter)."""
    return lr_finder.DEFAULT_MIN_LR if config.learning_rate == FIND else config.learning_rate
