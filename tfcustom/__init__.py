"""tfcustom: a TensorFlow 2 custom-training toolkit.

Packages, by layer: components (``layers``, ``models``, ``losses``, ``metrics``,
``optimizers``); the training engine (``training``: the GradientTape steps, the
``Trainer`` loop; ``callbacks``); ``distribute`` (strategies, TPU, cluster,
preemption); ``data``; the ``experiment`` around them (config,
``train_and_evaluate(config, workdir)``, run directory, export, sweeps); ``cli``;
``doctor``.

Importing tfcustom registers every custom Keras object, so models saved with
tfcustom components reload with ``keras.models.load_model`` after
``import tfcustom``.
"""

__version__ = "0.1.0"

from tfcustom.training.logs import import_tensorflow_quietly as _import_tensorflow_quietly

_import_tensorflow_quietly()  # before anything imports TF: hides its C++ start-up lines (see tfcustom.training.logs)

from tfcustom import callbacks, data, distribute, errors, experiment, layers, losses, metrics, models, optimizers, training
from tfcustom.callbacks.early_stopping import EarlyStopping
from tfcustom.errors import ConfigError, DataError, NonFiniteLossError, TfcustomError
from tfcustom.experiment.config import TrainConfig
from tfcustom.experiment.plots import plot_confusion_matrix, plot_misclassified, plot_reliability
from tfcustom.experiment.train import train_and_evaluate
from tfcustom.training.history import History
from tfcustom.training.rollback import Rollback
from tfcustom.training.steps import make_predict_step, make_test_step, make_train_step
from tfcustom.training.trainer import Trainer

# Short names of modules, kept from the flat layout (tfcustom.strategy.select(...) still works):
from tfcustom.callbacks import summaries  # TensorBoard summaries
from tfcustom.distribute import colab, preemption, strategy  # TPU-or-fallback; SIGTERM; select(name), set_precision
from tfcustom.experiment import export, plots, sweep, transfer  # export_model/evaluate_run; pictures; run_sweep; backbones
from tfcustom.layers import dropout
from tfcustom.training import steps, timing  # the compiled steps; step timing
from tfcustom.experiment.sidecar import evaluate_continuously  # the sidecar evaluator (tfcustom-evaluate --watch)

__all__ = [
    "ConfigError", "DataError", "EarlyStopping", "History", "NonFiniteLossError", "Rollback",
    "TfcustomError", "TrainConfig", "Trainer", "callbacks", "data", "distribute", "dropout", "errors", "experiment", "layers", "losses",
    "make_predict_step", "make_test_step", "make_train_step", "metrics", "models",
    "optimizers", "steps", "train_and_evaluate", "training", "plot_confusion_matrix", "plot_misclassified",
    "plot_reliability", "plots", "summaries", "sweep", "timing", "export", "preemption", "transfer", "strategy", "colab",
    "evaluate_continuously",
]
