"""tfcustom: a TensorFlow 2 custom-training toolkit.

Components (``layers``, ``models``, ``losses``, ``metrics``, ``optimizers``),
the readable GradientTape steps (``steps``), a thin ``Trainer`` loop, and
``train_and_evaluate(config, workdir)`` behind the example trainer.

Importing tfcustom registers every custom Keras object, so models saved with
tfcustom components reload with ``keras.models.load_model`` after
``import tfcustom``.
"""

__version__ = "0.1.0"

from tfcustom.logs import import_tensorflow_quietly as _import_tensorflow_quietly

_import_tensorflow_quietly()  # before anything imports TF: hides its C++ start-up lines (see tfcustom.logs)

from tfcustom import callbacks, dropout, data, errors, layers, losses, metrics, models, optimizers, steps
from tfcustom.config import TrainConfig
from tfcustom.early_stopping import EarlyStopping
from tfcustom.errors import ConfigError, DataError, NonFiniteLossError, TfcustomError
from tfcustom.history import History
from tfcustom.plots import plot_confusion_matrix, plot_misclassified, plot_reliability
from tfcustom.steps import make_predict_step, make_test_step, make_train_step
from tfcustom.train import train_and_evaluate
from tfcustom.trainer import Trainer
from tfcustom import strategy  # select(name) -> tf.distribute.Strategy; set_precision
from tfcustom import plots, summaries, sweep, timing  # pictures; TensorBoard; run_sweep; step timing
from tfcustom import colab  # select_strategy: the TPU, else explain why and fall back (notebooks)
from tfcustom import export, preemption, transfer  # export_model / evaluate_run; restore_backbone / freeze / BackboneHeadOptimizer
from tfcustom.experiment.sidecar import evaluate_continuously  # the sidecar evaluator (tfcustom-evaluate --watch)

__all__ = [
    "ConfigError", "DataError", "EarlyStopping", "History", "NonFiniteLossError",
    "TfcustomError", "TrainConfig", "Trainer", "callbacks", "data", "dropout", "errors", "layers", "losses",
    "make_predict_step", "make_test_step", "make_train_step", "metrics", "models",
    "optimizers", "steps", "train_and_evaluate", "plot_confusion_matrix", "plot_misclassified",
    "plot_reliability", "plots", "summaries", "sweep", "timing", "export", "preemption", "transfer", "strategy", "colab",
    "evaluate_continuously",
]
