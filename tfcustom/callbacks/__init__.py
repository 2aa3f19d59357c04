"""Callbacks: Keras' ``keras.callbacks.Callback`` protocol on the Trainer's loop.

* [`CallbackList`][tfcustom.callbacks.CallbackList] (``callback_list``): calls every callback at the
  points ``keras.Model.fit`` does, with the same log keys.
* [`CallbackState`][tfcustom.callbacks.CallbackState] (``state``): the callbacks' state in the training
  checkpoint, so a resumed run continues with the same learning rates and
  stops at the same epoch.
* [`check_learning_rate_settable`][tfcustom.callbacks.check_learning_rate_settable] (``learning_rate``): refuses, in one
  line, a callback that sets the learning rate of an optimizer built on a
  schedule.
"""

from tfcustom.callbacks.callback_list import CallbackList, epoch_logs_for_callbacks
from tfcustom.callbacks.learning_rate import check_learning_rate_settable
from tfcustom.callbacks.state import CallbackState

__all__ = ["CallbackList", "CallbackState", "check_learning_rate_settable", "epoch_logs_for_callbacks"]
