"""Compare architectures and settings: one training run per combination of a grid.

    python examples/sweep.py --output_dir=runs/sweep --epochs=3 --model=mlp \\
        --grid='{"model_kwargs.hidden_units": [[128], [256, 128]], "learning_rate": [1e-3, 3e-3]}'

``--grid`` is a JSON object of lists (every combination) or a list of
objects (one run each); keys are TrainConfig fields, dotted for
``model_kwargs``. Every other flag of ``examples/train.py`` (``--epochs``,
``--data_dir``, ``--model``, ...) applies to every run. Each run trains in
``<output_dir>/<settings>``; ``sweep.csv`` and ``sweep.png`` are written at
the end. Run the same command again after Ctrl-C: finished runs are skipped,
the interrupted one resumes. ``tensorboard --logdir <output_dir>`` shows every
run. The logic is :func:`tfcustom.experiment.sweep.run_sweep`; this file only reads flags.

Exit codes: 0 done, 2 bad flags / grid / data, 3 non-finite loss,
4 interrupted (run again to continue).
"""

import json
import os
import sys

from absl import app, flags, logging

from tfcustom.cli import parse_flags, report_error
from tfcustom.cli import train as train_cli  # defines the trainer flags

flags.DEFINE_string("grid", None, 'The settings to sweep as JSON, e.g. \'{"model": ["mlp", "cnn"], "model_kwargs.dropout": [0, 0.2]}\'.')
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]!r}. Flags take the form --name=value.", file=sys.stderr)
        return 2
    logging.set_verbosity(logging.INFO)
    from tfcustom.errors import TfcustomError, config_error
    from tfcustom.distribute.strategy import select
    from tfcustom.experiment.sweep import CSV_FILE, PLOT_FILE, run_sweep

    try:
        if not FLAGS.grid:
            raise config_error("--grid is required", FLAGS.grid, 'pass e.g. --grid=\'{"learning_rate": [1e-3, 3e-3]}\'')
        try:
            grid = json.loads(FLAGS.grid)
        except json.JSONDecodeError as e:
            raise config_error(f"--grid is not valid JSON ({e.msg})", FLAGS.grid, 'pass e.g. --grid=\'{"learning_rate": [1e-3, 3e-3]}\'') from None
        if FLAGS.overwrite:
            raise config_error("sweep.py does not take --overwrite (it skips finished runs and resumes the others)", True,
                               "delete the sweep's --output_dir, or choose another one, to start over")
        base = train_cli.config_from_flags().validate()
        strategy = select(base.strategy, num_cpu_replicas=base.num_cpu_replicas, tpu=base.tpu_address)
        rows = run_sweep(base, grid, FLAGS.output_dir, strategy=strategy)
    except TfcustomError as e:
        return report_error(e, stopped_hint=" Run the same command again to finish the sweep.")
    for r in rows:
        print(f"{r['run']}: test accuracy {r['test_accuracy']:.4f}, {r['parameters']} parameters, {r['train_time_s']:.0f} s")
    print(f"Wrote {os.path.join(FLAGS.output_dir, CSV_FILE)} and {os.path.join(FLAGS.output_dir, PLOT_FILE)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main, flags_parser=parse_flags)
