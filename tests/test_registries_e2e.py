"""Every registered model, loss, metric and optimizer name trains through train_and_evaluate."""

import json

import numpy as np
import pytest

import tfcustom
from tfcustom import TrainConfig, train_and_evaluate
from tfcustom.data import from_numpy

OPTIMIZERS = tfcustom.optimizers.names() + ["sam_sgd", "sam_adam"]
MODELS = tfcustom.models.names()
LOSSES = tfcustom.losses.names()


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 160).astype("int32")
    x = (rng.random((160, 28, 28, 1)) * 60).astype("uint8")
    x[np.arange(160), y * 7, :, 0] = 255  # a learnable stripe per class
    return from_numpy(x[:128], y[:128], x[128:], y[128:], num_classes=4)


@pytest.mark.parametrize("i, optimizer", list(enumerate(OPTIMIZERS)))
def test_every_name_trains(tmp_path, tiny, i, optimizer):
    model = MODELS[i % len(MODELS)]
    loss = LOSSES[i % len(LOSSES)]
    kwargs = {"filters": [4, 8], "dense_units": 16} if model == "cnn" else {"stage_filters": [4, 8], "blocks_per_stage": 1} if model == "resnet" else {}
    config = TrainConfig(model=model, model_kwargs=kwargs, loss=loss, optimizer=optimizer, metrics=tuple(tfcustom.metrics.names()),
                         epochs=1, batch_size=32, validation_size=32, eval_batch_size=32, verbose=0, learning_rate=1e-2)
    results = train_and_evaluate(config, str(tmp_path / "run"), dataset=tiny)
    test = results["test"]
    for name in ("loss", "accuracy", "balanced_accuracy", "f1_score", "precision", "recall", "expected_calibration_error"):
        assert name in test and np.isfinite(test[name]), name
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test"] == test
