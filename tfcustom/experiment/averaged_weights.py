"""The run's weight averaging (``--ema_decay``, ``--swa_start_epoch``): built from the config, tested and put in the model.

[`averages_from_config`][tfcustom.experiment.averaged_weights.averages_from_config] builds the
`tfcustom.callbacks.weight_averaging` objects the Trainer updates;
[`evaluate_raw_and_averaged`][tfcustom.experiment.averaged_weights.evaluate_raw_and_averaged] runs after training: it tests the raw
weights, then copies the average into the model, recomputes the BatchNorm statistics for it
with one pass over the training data
(`tfcustom.training.batch_norm_stats.reestimate_batch_norm`) and tests again.
The model is then the averaged one: ``model.keras`` and the other exports hold
it, and ``results.json`` has ``"test"`` (the exported model's) and
``"weight_averaging"`` (``kind``, its settings, ``num_averaged``, ``raw`` and
``averaged`` test metrics).

Examples:
    >>> from tfcustom.experiment.config import TrainConfig
    >>> [a.kind for a in averages_from_config(TrainConfig(ema_decay=0.999))]
    ['ema']
    >>> averages_from_config(TrainConfig())
    []
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from absl import logging

from tfcustom.callbacks.weight_averaging import ExponentialMovingAverage, StochasticWeightAveraging, WeightAverage
from tfcustom.training.batch_norm_stats import reestimate_batch_norm


def averages_from_config(config) -> List[WeightAverage]:
    """The weight averages a [`tfcustom.TrainConfig`][tfcustom.TrainConfig] asks for (at most one).

    Args:
      config: the run's config (validated).

    Returns:
      ``[ExponentialMovingAverage(ema_decay)]``, ``[StochasticWeightAveraging(swa_start_epoch, swa_lr)]``
      (the optimizer's schedule has ``swa_lr`` in a `tfcustom.callbacks.SWALearningRate`) or ``[]``.
    """
    if config.ema_decay is not None:
        return [ExponentialMovingAverage(decay=config.ema_decay)]
    if config.swa_start_epoch is not None:
        return [StochasticWeightAveraging(start_epoch=config.swa_start_epoch, swa_lr=config.swa_lr)]
    return []


def evaluate_raw_and_averaged(trainer, train, test) -> Tuple[Dict[str, float], Optional[dict]]:
    """Test the raw weights; with a weight average, put it into the model, recompute BatchNorm statistics, test it.

    Args:
      trainer: the run's [`tfcustom.Trainer`][tfcustom.Trainer], trained.
      train: the training pipeline (the BatchNorm pass reads it once).
      test: the test pipeline.

    Returns:
      ``(test metrics of the model now in the Trainer, the results.json record)``; the
      record is None without averaging. When nothing was averaged (training ended before
      ``swa_start_epoch``) the model keeps the raw weights (record's ``averaged``: None).
    """
    raw = trainer.evaluate(test)
    logging.info("Test: %s", ", ".join(f"{k}={v:.4f}" for k, v in raw.items()))
    if not trainer.weight_averaging:
        return raw, None
    average = trainer.weight_averaging[0]
    record = {**average.describe(), "raw": raw, "averaged": None}
    if not average.assign_to_model():
        logging.warning("Weight averaging (%s): nothing was averaged (training ended before it started); "
                        "testing and exporting the raw weights", average.kind)
        return raw, record
    record["batch_norm_batches"] = reestimate_batch_norm(trainer.model, train, strategy=trainer.strategy)
    averaged = trainer.evaluate(test)
    record["averaged"] = averaged
    logging.info("Test with the %s weights (%d averaged%s): %s", average.kind.upper(), record["num_averaged"],
                 f", BatchNorm statistics from {record['batch_norm_batches']} batches" if record["batch_norm_batches"] else "",
                 ", ".join(f"{k}={v:.4f}" for k, v in averaged.items()))
    return averaged, record
