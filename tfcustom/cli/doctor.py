"""``tfcustom-doctor`` / ``python -m tfcustom.cli.doctor``: check your model before it costs a cluster.

    tfcustom-doctor --model=my_models:make_model --input_shape=28,28,1 --num_classes=10

Splits the CPU into 4 logical devices at start (before TensorFlow initialises),
trains the model a few steps on synthetic data (seeded; inputs N(0, 1), labels
uniform) and prints one line per check of [`tfcustom.doctor`][tfcustom.doctor], then the time
the checks took (total and per check). Exit codes:
0 every check passed, 1 some failed, 2 bad flags or a model that cannot be built.
"""

from __future__ import annotations

import functools
import json
import os
import sys

from absl import app, flags

from tfcustom.cli import parse_flags, report_error
from tfcustom.run_json import write_json

FLAGS = flags.FLAGS

flags.DEFINE_string("model", "mlp", "A registered model name (tfcustom.models.names()) or your own as package.module:function.")
flags.DEFINE_string("model_kwargs", "{}", "Model arguments as a JSON object.")
flags.DEFINE_list("input_shape", ["28", "28", "1"], "Shape of one example, e.g. 28,28,1.")
flags.DEFINE_integer("num_classes", 10, "Number of classes (the model outputs this many logits).")
flags.DEFINE_string("loss", "sparse_categorical_crossentropy", "A Keras loss name, applied to logits (from_logits=True).")
flags.DEFINE_list("metrics", ["accuracy"], "Metric names, as tfcustom.Trainer takes them.")
flags.DEFINE_string("optimizer", "adam", "A Keras optimizer name.")
flags.DEFINE_float("learning_rate", 1e-3, "Learning rate of the optimizer.")
flags.DEFINE_integer("batch_size", 8, "Global batch size (divisible by 4).")
flags.DEFINE_integer("steps", 3, "Train steps per check.")
flags.DEFINE_list("checks", None, "Run only these checks (default: all), e.g. 'replica agreement,retracing'.")
flags.DEFINE_string("json_out", None, "Also write the report (verdicts, measurements, seconds per check) to this JSON file.")

USAGE = """Usage: tfcustom-doctor --model=package.module:function [--input_shape=28,28,1 --num_classes=10 ...]

Checks a model for distributed and checkpoint bugs on 4 logical CPU devices; one line per check.
Exit codes: 0 all checks passed, 1 some failed, 2 bad flags or model."""


def _model_fn(name: str, kwargs: dict, num_classes: int, input_shape):
    from tfcustom import models
    from tfcustom.experiment import user_model

    if user_model.is_reference(name):
        user_model.check_reference(name, kwargs)
        return lambda: user_model.build(name, num_classes, input_shape, **kwargs)
    return lambda: models.get(name, num_classes=num_classes, **kwargs)


def _report(input_shape):
    import keras
    import numpy as np

    import tfcustom.doctor as doctor
    from tfcustom.errors import config_error

    try:
        kwargs = json.loads(FLAGS.model_kwargs)
    except json.JSONDecodeError as e:
        raise config_error(f"--model_kwargs is not valid JSON ({e.msg})", FLAGS.model_kwargs, "pass a JSON object") from None
    model_fn = _model_fn(FLAGS.model, kwargs, FLAGS.num_classes, input_shape)
    from tfcustom import losses

    loss = losses.get(FLAGS.loss, from_logits=True)
    optimizer_fn = lambda: keras.optimizers.get({"class_name": FLAGS.optimizer, "config": {"learning_rate": FLAGS.learning_rate}})
    rng = np.random.default_rng(0)
    n = FLAGS.batch_size * FLAGS.steps
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    y = rng.integers(0, FLAGS.num_classes, n)
    return doctor.check(model_fn, loss, optimizer_fn, (x, y), metrics=FLAGS.metrics, batch_size=FLAGS.batch_size,
                        steps=FLAGS.steps, checks=FLAGS.checks)


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]!r}. Flags take the form --name=value.", file=sys.stderr)
        return 2
    from tfcustom.errors import TfcustomError
    from tfcustom.distribute.strategy import configure_cpu_replicas

    report_dir = os.path.dirname(os.path.abspath(FLAGS.json_out)) if FLAGS.json_out else None
    if report_dir is not None and not os.path.isdir(report_dir):  # before the checks run, not after
        print(f"error: --json_out's directory does not exist (received: {FLAGS.json_out}). Create {report_dir} "
              "or pass a path in an existing directory.", file=sys.stderr)
        return 2
    try:
        configure_cpu_replicas(4)  # before anything initialises TensorFlow's devices
        input_shape = tuple(int(v) for v in FLAGS.input_shape)
    except ValueError:
        print(f"error: --input_shape must be integers (received: {FLAGS.input_shape}). Pass e.g. --input_shape=28,28,1.", file=sys.stderr)
        return 2
    except TfcustomError as e:
        return report_error(e)
    try:
        report = _report(input_shape)
    except (TfcustomError, ValueError) as e:  # keras.losses/optimizers.get raise ValueError for unknown names
        return report_error(e) if isinstance(e, TfcustomError) else (print(f"error: {str(e).splitlines()[0]}", file=sys.stderr) or 2)
    print(report.table())
    print(report.timing())
    if FLAGS.json_out:
        try:
            write_json(FLAGS.json_out, report.as_dict())  # atomic; a full disk or a refused write is one DiskError line
        except TfcustomError as e:
            return report_error(e)
    return 0 if report.passed else 1


def run():
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main, flags_parser=functools.partial(parse_flags, doc=USAGE))


if __name__ == "__main__":
    run()
