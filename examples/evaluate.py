"""Evaluate a training run's model on a split, without training.

    python examples/evaluate.py --run_dir=runs/cnn                      # model.keras, test split
    python examples/evaluate.py --run_dir=runs/cnn --checkpoint=best   # <run_dir>/checkpoints/best
    python examples/evaluate.py --run_dir=runs/cnn --checkpoint=latest --split=validation
    python examples/evaluate.py --run_dir=runs/cnn --pictures          # redraw the run's pictures

``--checkpoint``: ``final`` (the run's ``model.keras``), ``latest`` (the newest
checkpoint in ``<run_dir>/checkpoints``) or ``best`` (``<run_dir>/checkpoints/best``);
for checkpoints the model is rebuilt from ``<run_dir>/config.json``. The logic
is :func:`tfcustom.experiment.export.evaluate_run`; this file only reads flags.

Prints the loss and metrics. Exit codes: 0 done, 2 bad flags / run directory /
checkpoint / data (one ``error:`` line on stderr).
"""

import os
import sys

from absl import app, flags

from tfcustom.cli import parse_flags

flags.DEFINE_string("run_dir", None, "A training run's --output_dir (holds config.json).")
flags.DEFINE_string("checkpoint", "final", "final (model.keras), latest or best (checkpoints).")
flags.DEFINE_string("data_dir", None, "Data directory (default: the run's).")
flags.DEFINE_string("split", "test", "test, validation or train.")
flags.DEFINE_boolean("pictures", False, "Also draw the run's confusion_matrix.png and misclassified.png (and reliability.png "
                     "when the run has the ece metric) again, from the test split and --checkpoint's model.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]!r}. Flags take the form --name=value.", file=sys.stderr)
        return 2
    from tfcustom.errors import TfcustomError
    from tfcustom.experiment.export import evaluate_run
    from tfcustom.experiment.plots import redraw_run_pictures

    if not FLAGS.run_dir:
        print("error: --run_dir is required (received: None). Pass the --output_dir of a training run.", file=sys.stderr)
        return 2
    try:
        logs = evaluate_run(FLAGS.run_dir, FLAGS.checkpoint, FLAGS.data_dir, FLAGS.split)
        pictures = redraw_run_pictures(FLAGS.run_dir, FLAGS.checkpoint, FLAGS.data_dir) if FLAGS.pictures else {}
    except TfcustomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = logs.pop("examples")
    values = "  ".join(f"{k}={v:.4f}" for k, v in logs.items())
    print(f"{FLAGS.split} ({FLAGS.checkpoint}, {n} examples): {values}")
    for key in ("confusion_matrix", "misclassified", "reliability"):
        if key in pictures:
            print(f"wrote {pictures[key]}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main, flags_parser=parse_flags)
