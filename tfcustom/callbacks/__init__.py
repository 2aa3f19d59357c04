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
from tfcustom.callbacks.learning_rate import check_learning_rate_settable
from tfcustom.callbacks.state import CallbackState
from tfcustom.callbacks.weight_averaging import ExponentialMovingAverage, StochasticWeightAveraging, SWALearningRate

__all__ = ["CallbackList", "CallbackState", "ExponentialMovingAverage", "StochasticWeightAveraging", "SWALearningRate",
           "check_callbacks", "check_learning_rate_settable", "epoch_logs_for_callbacks"]
