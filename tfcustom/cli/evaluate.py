"""``tfcustom-evaluate`` / ``python examples/evaluate.py``: evaluate a run's model on a split, without training.

    tfcustom-evaluate --run_dir=runs/cnn                      # model.keras, test split
    tfcustom-evaluate --run_dir=runs/cnn --checkpoint=best   # <run_dir>/checkpoints/best
    tfcustom-evaluate --run_dir=runs/cnn --checkpoint=latest --split=validation
    tfcustom-evaluate --run_dir=runs/cnn --checkpoint=ckpt-40 # that checkpoint of <run_dir>/checkpoints
    tfcustom-evaluate --run_dir=runs/cnn --pictures          # redraw the run's pictures
    tfcustom-evaluate --watch=runs/cnn --split=validation --watch_metric=val_accuracy   # the sidecar

``--checkpoint``: ``final`` (the run's ``model.keras``), ``latest`` (the newest
checkpoint in ``<run_dir>/checkpoints``), ``best`` (``<run_dir>/checkpoints/best``)
or ``ckpt-N``; for checkpoints the model is rebuilt from ``<run_dir>/config.json``.
The logic is [`tfcustom.experiment.export.evaluate_run`][tfcustom.experiment.export.evaluate_run].

``--watch=RUN_DIR`` is the sidecar evaluator
([`tfcustom.experiment.sidecar.evaluate_continuously`][tfcustom.experiment.sidecar.evaluate_continuously]):
it evaluates every new checkpoint of a running (or finished) run once, writes
``sidecar.json`` and TensorBoard scalars, keeps the best one by
``--watch_metric`` in ``<run_dir>/sidecar_best/``, and stops when the run's
``results.json`` appears or after ``--timeout`` seconds without a checkpoint.

Prints the loss and metrics. Exit codes: 0 done, 2 bad flags / run directory /
checkpoint / data (one ``error:`` line on stderr).
"""

import functools
import os
import sys

from absl import app, flags

from tfcustom.cli import parse_flags, report_error
from tfcustom.errors import TfcustomError
from tfcustom.experiment.sidecar import evaluate_continuously
from tfcustom.experiment.export import evaluate_run
from tfcustom.experiment.plots import redraw_run_pictures

flags.DEFINE_string("run_dir", None, "A training run's --output_dir (holds config.json).")
flags.DEFINE_string("checkpoint", "final", "final (model.keras), latest, best or ckpt-N (checkpoints).")
flags.DEFINE_string("data_dir", None, "Data directory (default: the run's).")
flags.DEFINE_string("split", "test", "test, validation or train.")
flags.DEFINE_boolean("pictures", False, "Also draw the run's confusion_matrix.png and misclassified.png (and reliability.png "
                     "when the run has the ece metric) again, from the test split and --checkpoint's model.")
flags.DEFINE_string("watch", None, "A run directory to watch: evaluate each new checkpoint once, as the sidecar evaluator.")
flags.DEFINE_string("watch_metric", None, "With --watch: the metric that picks the best checkpoint, named with the split's prefix "
                    "(val_accuracy with --split=validation, test_loss with --split=test); default: the split's loss.")
flags.DEFINE_enum("watch_mode", "auto", ["auto", "min", "max"], "With --watch: whether a smaller or larger --watch_metric is better "
                  "(auto: min for losses, max for accuracy-like names, as Keras).")
flags.DEFINE_float("timeout", None, "With --watch: stop after this many seconds without a new checkpoint (default: wait for results.json).")
flags.DEFINE_float("poll_seconds", 1.0, "With --watch: how often to look for a new checkpoint.")
flags.DEFINE_boolean("export_best", True, "With --watch: keep the best checkpoint's model in <run_dir>/sidecar_best/.")
FLAGS = flags.FLAGS

USAGE = """Usage: tfcustom-evaluate --run_dir=RUN_DIR [--checkpoint=final|latest|best|ckpt-N --split=test]
       tfcustom-evaluate --watch=RUN_DIR [--split=validation --watch_metric=val_accuracy --timeout=600]

Evaluate a run's model on a split without training; with --watch, evaluate each new checkpoint of a running run once (the sidecar)."""

HELP_GROUPS = {
    "evaluate": ["run_dir", "checkpoint", "split", "data_dir", "pictures"],
    "sidecar (--watch)": ["watch", "watch_metric", "watch_mode", "timeout", "poll_seconds", "export_best"],
}


def _watch() -> int:
    state = evaluate_continuously(FLAGS.watch, split=FLAGS.split, metric=FLAGS.watch_metric, mode=FLAGS.watch_mode,
                                  data_dir=FLAGS.data_dir, timeout=FLAGS.timeout, poll_seconds=FLAGS.poll_seconds,
                                  export_best=FLAGS.export_best)
    why = "the run finished (results.json)" if state["stopped"] == "results.json" else f"no new checkpoint for {FLAGS.timeout:g} s (--timeout)"
    best = state["best"]
    best_text = f"; best {state['metric']}={best['value']:.4f} at step {best['step']} ({best['checkpoint']})" if best else ""
    print(f"sidecar stopped: {why}; {len(state['evaluations'])} checkpoint(s) evaluated{best_text}")
    return 0


def _evaluate() -> int:
    if not FLAGS.run_dir:
        print("error: --run_dir is required (received: None). Pass the --output_dir of a training run, "
              "or --watch=RUN_DIR to evaluate its checkpoints as they are written.", file=sys.stderr)
        return 2
    logs = evaluate_run(FLAGS.run_dir, FLAGS.checkpoint, FLAGS.data_dir, FLAGS.split)
    pictures = redraw_run_pictures(FLAGS.run_dir, FLAGS.checkpoint, FLAGS.data_dir) if FLAGS.pictures else {}
    n = logs.pop("examples")
    values = "  ".join(f"{k}={v:.4f}" for k, v in logs.items())
    print(f"{FLAGS.split} ({FLAGS.checkpoint}, {n} examples): {values}")
    for key in ("confusion_matrix", "misclassified", "reliability"):
        if key in pictures:
            print(f"wrote {pictures[key]}")
    return 0


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]!r}. Flags take the form --name=value.", file=sys.stderr)
        return 2
    if FLAGS.watch and (FLAGS.run_dir or FLAGS.pictures or FLAGS["checkpoint"].present):
        print(f"error: --watch evaluates every checkpoint of its run (received: --watch={FLAGS.watch!r} with "
              "--run_dir / --checkpoint / --pictures). Pass either --watch=RUN_DIR or --run_dir=RUN_DIR.", file=sys.stderr)
        return 2
    try:
        return _watch() if FLAGS.watch else _evaluate()
    except TfcustomError as e:
        return report_error(e)


def run():
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main, flags_parser=functools.partial(parse_flags, groups=HELP_GROUPS, doc=USAGE))


if __name__ == "__main__":
    run()
