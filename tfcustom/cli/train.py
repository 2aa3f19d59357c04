"""``tfcustom-train`` / ``python examples/train.py``: absl flags -> TrainConfig -> train_and_evaluate.

This module is the only one that reads ``FLAGS``; the flags of the settings
are made from `tfcustom.TrainConfig` (`tfcustom.cli.config_flags`). Flags can come from a file:
``--flagfile=configs/fashion_mnist_cnn.flags`` (``--config`` is an alias).

Exit codes: 0 done, 2 bad flags / config / data / checkpoint, 3 non-finite loss,
4 stopped by SIGTERM or Ctrl-C after saving a checkpoint (run the same command
again to resume), 75 a full disk or an I/O error while writing the run (free
space and run the same command again to resume; see tfcustom.disk_errors).
"""

from __future__ import annotations

import functools
import json
import os
import sys

from absl import app, flags

from tfcustom import disk_errors
from tfcustom.cli import parse_flags, report_error
from tfcustom.cli.config_flags import config_from_flags, define_flags, help_groups
from tfcustom.distribute.cluster import ClusterInterrupted, ClusterTimeout
from tfcustom.distribute.strategy import select
from tfcustom.errors import TfcustomError
from tfcustom.experiment.config import DATA, OUTPUT
from tfcustom.experiment.train import train_and_evaluate

FLAGS = flags.FLAGS

flags.DEFINE_string("config", None, "A flagfile (same as --flagfile), e.g. configs/fashion_mnist_cnn.flags.")
flags.DEFINE_string("output_dir", "runs/default", "Run directory (history, plot, model, results).")
flags.DEFINE_boolean("overwrite", False, "Replace an existing run in --output_dir.")
define_flags()  # one flag per TrainConfig setting (tfcustom.experiment.config): default, help, check declared there

USAGE = """Usage: tfcustom-train [--flagfile=FILE] [--name=value ...]   (or python examples/train.py ...)

Trains a model on Fashion-MNIST (or MNIST, a TFDS dataset) and writes the run to --output_dir.
Flags after a --flagfile (or --config) override it. Exit codes: 0 done, 2 bad flags/config/data,
3 non-finite loss, 4 stopped by SIGTERM/Ctrl-C (run the same command again to resume),
75 disk full or I/O error (free space, then run the same command again to resume)."""

# --help lists the flags by the settings' groups (the two flags that are not settings first in theirs).
HELP_GROUPS = help_groups({DATA: ["config"], OUTPUT: ["output_dir", "overwrite"]})


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]!r}. Flags take the form --name=value.", file=sys.stderr)
        return 2
    try:
        config = config_from_flags().validate()
        # The strategy comes first: splitting the CPU (--num_cpu_replicas) and
        # starting the multi-worker runtime only work before TF initialises its devices.
        strategy = select(config.strategy, num_cpu_replicas=config.num_cpu_replicas, tpu=config.tpu_address,
                          cluster_timeout=config.cluster_timeout)
        results = train_and_evaluate(config, FLAGS.output_dir, strategy=strategy, overwrite=FLAGS.overwrite)
    except (ClusterTimeout, ClusterInterrupted) as e:
        # TF's runtime may hold a half-started cluster: end the process now.
        interrupted = isinstance(e, ClusterInterrupted)  # start on a clean line after the terminal's ^C
        print(f"\nstopped: {e}" if interrupted else f"error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(e.exit_code)
    except TfcustomError as e:
        return report_error(e)
    except Exception as e:  # noqa: BLE001 -- only a corrupt TFRecord and an environmental write failure become one line
        if disk_errors.reason(e) is not None:  # a write no guard of tfcustom.disk_errors names
            return report_error(disk_errors.DiskError(f"{disk_errors.reason(e)} ({str(e).splitlines()[0][:300]}); "
                                                      + disk_errors.what_survives(os.path.join(FLAGS.output_dir, "checkpoints"))))
        if type(e).__name__ != "DataLossError":
            raise
        print(f"error: a TFRecord shard is corrupt ({str(e).splitlines()[0][:300]}). The last checkpoint holds no step on it; "
              "re-convert the dataset (--verify_shards=full, the default, finds such shards before training).", file=sys.stderr)
        return 2
    test = results["test"]
    averaged = results.get("weight_averaging") or {}
    weights = (f"{averaged['kind'].upper()} weights; raw weights {averaged['raw'].get('accuracy', float('nan')):.4f}  "
               if averaged.get("averaged") else "")
    print(
        f"Test accuracy: {test.get('accuracy', float('nan')):.4f}  test loss: {test['loss']:.4f}  {weights}"
        f"({results['epochs_run']} epochs, {results['train_time_s']:.0f} s of training; run in {FLAGS.output_dir})"
    )
    return 0


def _expand_config_alias(argv):
    """``--config=FILE`` -> ``--flagfile=FILE`` (absl reads flagfiles natively)."""
    out = []
    for arg in argv:
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
            if not os.path.isfile(path):
                print(f"error: config file not found (received: {path!r}). Pass a file from configs/, e.g. --config=configs/fashion_mnist_cnn.flags.", file=sys.stderr)
                sys.exit(2)
            out.append("--flagfile=" + path)
        else:
            out.append(arg)
    return out


def run():
    """Console-script entry point."""
    sys.argv = _expand_config_alias(sys.argv)
    app.run(main, flags_parser=functools.partial(parse_flags, groups=HELP_GROUPS, doc=USAGE))


if __name__ == "__main__":
    run()
