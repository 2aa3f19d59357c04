"""The names of the files and directories in a training run's output
directory (written by [`tfcustom.experiment.train.train_and_evaluate`][tfcustom.experiment.train.train_and_evaluate], read by
[`tfcustom.experiment.export`][tfcustom.experiment.export], `tfcustom.experiment.run_dir` and [`tfcustom.experiment.sweep`][tfcustom.experiment.sweep])."""

CHECKPOINT_CHOICES = ("final", "latest", "best")
SPLITS = ("test", "validation", "train")
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
CHECKPOINT_DIR = "checkpoints"
BEST_SUBDIR = "best"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"  # written last: a run directory is finished iff it exists
