"""Callbacks: Keras' ``keras.callbacks.Callback`` protocol on the Trainer's loop.

``Trainer.fit``, ``evaluate`` and ``predict`` take ``callbacks=[...]`` as
``keras.Model.fit`` does, and call them at the same points with the same log
keys; Keras' own callbacks (``EarlyStopping``, ``ReduceLROnPlateau``,
``LearningRateScheduler``, ``ModelCheckpoint``, ``CSVLogger``,
``TerminateOnNaN``, ``LambdaCallback``, ``TensorBoard``) work unchanged. Beyond
Keras, their state is saved in the training checkpoint, so a killed run resumes
with the same learning rates and stops at the same epoch. The guide is
``docs/guides/callbacks.md``.

* [`CallbackList`][tfcustom.callbacks.CallbackList] (``callback_list``): calls every callback at the
  points ``keras.Model.fit`` does, with the same log keys.
* [`CallbackState`][tfcustom.callbacks.CallbackState] (``state``): the callbacks' state in the training
  checkpoint.
* [`ExponentialMovingAverage`][tfcustom.callbacks.ExponentialMovingAverage], [`StochasticWeightAveraging`][tfcustom.callbacks.StochasticWeightAveraging]
  and [`SWALearningRate`][tfcustom.callbacks.SWALearningRate] (``weight_averaging``): EMA and SWA of the
  weights, given to ``Trainer(weight_averaging=[...])``.
* [`check_learning_rate_settable`][tfcustom.callbacks.check_learning_rate_settable] (``learning_rate``): refuses, in one
  line, a callback that sets the learning rate of an optimizer built on a
  schedule.
* [`EarlyStopping`][tfcustom.callbacks.early_stopping.EarlyStopping] (``early_stopping``): the config's
  early stopping, with patience and restore-best, resumable.
* ``summaries``: the run's TensorBoard summaries, laid out as Keras' ``TensorBoard`` callback does.

The Trainer's own loop features are built-in callbacks (``loop_callback``:
[`LoopCallback`][tfcustom.callbacks.LoopCallback], their hooks and order), one per module, built by
[`Trainer.loop_callbacks`][tfcustom.training.loop.FitLoop.loop_callbacks] in this order:
[`NonFiniteSteps`][tfcustom.callbacks.NonFiniteSteps] (``nonfinite``), with ``on_nonfinite="rollback"``
[`RollbackOnDivergence`][tfcustom.callbacks.RollbackOnDivergence] (``divergence``), [`Profiler`][tfcustom.callbacks.Profiler] (``profiling``),
[`EpochLog`][tfcustom.callbacks.EpochLog] (``epoch_log``), [`StepTiming`][tfcustom.callbacks.StepTiming] and
[`RetracingCheck`][tfcustom.callbacks.RetracingCheck] (``timing``), [`Summaries`][tfcustom.callbacks.Summaries] (``summaries``),
[`ReplicaLossLog`][tfcustom.callbacks.ReplicaLossLog] (``replica_losses``), [`ProgressBar`][tfcustom.callbacks.ProgressBar] (``progress``),
[`EarlyStoppingCallback`][tfcustom.callbacks.EarlyStoppingCallback] (``early_stopping``), [`HistoryFiles`][tfcustom.callbacks.HistoryFiles] (``epoch_log``),
[`Checkpointing`][tfcustom.callbacks.Checkpointing] (``checkpointing``), [`StopOnSignals`][tfcustom.callbacks.StopOnSignals] (``stop_signals``).
An instance of one of these classes (or a subclass) passed in ``fit(callbacks=[...])`` replaces the built-in one.

Examples:
    >>> import numpy as np, keras, tfcustom
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int64")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> trainer = tfcustom.Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...                            keras.optimizers.SGD(0.1), verbose=0)
    >>> stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    >>> len(trainer.fit((x, y), epochs=5, batch_size=16, callbacks=[stop]))   # stops after 2 epochs
    2
"""

from tfcustom.callbacks.callback_list import CallbackList, check_callbacks, epoch_logs_for_callbacks
from tfcustom.callbacks.checkpointing import Checkpointing
from tfcustom.callbacks.divergence import RollbackOnDivergence
from tfcustom.callbacks.early_stopping import EarlyStoppingCallback
from tfcustom.callbacks.epoch_log import EpochLog, HistoryFiles
from tfcustom.callbacks.learning_rate import check_learning_rate_settable
from tfcustom.callbacks.loop_callback import FitRun, LoopCallback, LoopCallbacks, Step, replace_builtins
from tfcustom.callbacks.nonfinite import NonFiniteSteps
from tfcustom.callbacks.profiling import Profiler
from tfcustom.callbacks.progress import ProgressBar
from tfcustom.callbacks.replica_losses import ReplicaLossLog
from tfcustom.callbacks.state import CallbackState
from tfcustom.callbacks.stop_signals import StopOnSignals
from tfcustom.callbacks.summaries import Summaries
from tfcustom.callbacks.timing import RetracingCheck, StepTiming
from tfcustom.callbacks.weight_averaging import ExponentialMovingAverage, StochasticWeightAveraging, SWALearningRate

__all__ = ["CallbackList", "CallbackState", "Checkpointing", "EarlyStoppingCallback", "EpochLog", "ExponentialMovingAverage",
           "FitRun", "HistoryFiles", "LoopCallback", "LoopCallbacks", "NonFiniteSteps", "Profiler", "ProgressBar",
           "ReplicaLossLog", "RetracingCheck", "RollbackOnDivergence", "Step", "StepTiming", "StochasticWeightAveraging", "StopOnSignals",
           "SWALearningRate", "Summaries", "check_callbacks", "check_learning_rate_settable", "epoch_logs_for_callbacks",
           "replace_builtins"]
