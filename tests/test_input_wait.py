"""The reported input-wait share on a cached batch: a batch already in memory
costs next() next to nothing, so the steps are reported as (almost) never
waiting. A bound on the reported share, not a wall-clock assertion.
(The slow-input side is tests/test_summaries.py::test_input_wait_share_sees_a_slow_pipeline.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as framework_config

import tfcustom
from tfcustom.training.timing import StepTimer


@pytest.fixture
def no_op_determinism():
    was = framework_config.is_op_determinism_enabled()
    framework_config.disable_op_determinism()
    yield
    if was:
        tf.config.experimental.enable_op_determinism()


def test_a_cached_batch_is_reported_as_almost_never_waiting(no_op_determinism):
    with tf.distribute.get_strategy().scope():
        model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10)])
        optimizer = keras.optimizers.SGD(0.01)
    trainer = tfcustom.Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer, verbose=0)
    x = np.random.default_rng(0).normal(size=(256, 256)).astype("float32")
    cached = tf.data.Dataset.from_tensors((x, np.zeros(256, "int32"))).cache().repeat()
    iterator = iter(trainer._distribute(cached))
    trainer.train_step(iterator, tf.constant(1))  # traces the step
    timer = StepTimer(256)
    timer.start(0)
    for _ in range(20):
        timer.record(1, trainer.train_step(iterator, tf.constant(1))["input_wait_s"])
    assert timer.epoch_summary()["input_wait_share"] < 0.25
