"""``tfcustom-train`` / ``python examples/train.py``: absl flags -> TrainConfig -> train_and_evaluate.

This module is the only one that reads ``FLAGS``. Flags can come from a file:
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

from tfcustom.cli import parse_flags, report_error
from tfcustom import disk_errors

FLAGS = flags.FLAGS

flags.DEFINE_string("config", None, "A flagfile (same as --flagfile), e.g. configs/fashion_mnist_cnn.flags.")
flags.DEFINE_string("dataset", "fashion_mnist", "fashion_mnist, mnist, tfds:<name>, or tfrecord:DIR (shards from `python -m tfcustom.data.convert`).")
flags.DEFINE_string("data_dir", None, "Directory with the IDX files (default: $TFCUSTOM_DATA_DIR, then /usr/share/datasets/fashion-mnist).")
flags.DEFINE_integer("validation_size", 5000, "Training examples held out for validation.")
flags.DEFINE_list("augment", [], "Augmentations of the training examples: crop, flip (e.g. --augment=crop,flip; flip is wrong for digits).")
flags.DEFINE_integer("shuffle_buffer", 10000, "With --dataset=tfrecord:DIR: examples per shuffle block (bounds memory).")
flags.DEFINE_enum("verify_shards", "full", ["full", "size"], "With --dataset=tfrecord:DIR: check each shard's SHA-256 at start (full) or only its size.")
flags.DEFINE_integer("train_subset", None, "Use only the first N training examples (validation is held out of them), e.g. to try a config quickly.")
flags.DEFINE_integer("test_subset", None, "Test on the first N test examples only.")
flags.DEFINE_string("model", "cnn", "Model name (see tfcustom.models.names()), or your own as package.module:function "
                    "(called with num_classes, input_shape and --model_kwargs; returns a keras.Model outputting logits).")
flags.DEFINE_string("model_kwargs", "{}", 'Model constructor arguments as a JSON object, e.g. \'{"filters": [32, 64]}\'.')
flags.DEFINE_string("loss", "sparse_categorical_crossentropy", "Loss name (see tfcustom.losses.names()).")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing for the cross-entropy loss.")
flags.DEFINE_list("metrics", ["accuracy"], "Metric names (see tfcustom.metrics.names()).")
flags.DEFINE_string("optimizer", "adam", "Optimizer name; prefix sam_ for Sharpness-Aware Minimization (e.g. sam_sgd).")
flags.DEFINE_string("lr_schedule", "constant", "constant, cosine, exponential or step.")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up length in epochs (cosine schedule).")
flags.DEFINE_float("weight_decay", None, "Decoupled weight decay of the optimizer.")
flags.DEFINE_float("momentum", 0.9, "Momentum for sgd/momentum/nesterov/rmsprop.")
flags.DEFINE_float("clip_global_norm", None, "Clip the gradient to this global norm.")
flags.DEFINE_float("sam_rho", None, "SAM neighbourhood size (implies SAM).")
flags.DEFINE_float("ema_decay", None, "Keep an exponential moving average of the weights with this decay (e.g. 0.999), updated "
                   "after every step; the average is tested and exported (BatchNorm statistics recomputed for it).")
flags.DEFINE_integer("swa_start_epoch", None, "Stochastic weight averaging: average the weights at the end of every epoch from "
                     "this one (counted from 1); the average is tested and exported (BatchNorm statistics recomputed for it).")
flags.DEFINE_float("swa_lr", None, "With --swa_start_epoch: train at this constant learning rate from that epoch on "
                   "(unset: the schedule continues).")
flags.DEFINE_integer("epochs", 10, "Number of epochs.")
flags.DEFINE_integer("eval_batch_size", 500, "Batch size for validation and test.")
flags.DEFINE_integer("early_stopping_patience", None, "Stop after this many epochs without improvement of --monitor.")
flags.DEFINE_string("monitor", "val_accuracy", "Value watched by early stopping.")
flags.DEFINE_integer("seed", 0, "Random seed (data order, initial weights, dropout).")
flags.DEFINE_boolean("deterministic", False, "Deterministic TF kernels: two runs give identical histories.")
class _AutoBoolParser(flags.ArgumentParser):
    """auto, true or false; a boolean flag otherwise (--jit_compile, --nojit_compile)."""

    def parse(self, argument):
        if isinstance(argument, bool) or argument == "auto":
            return argument
        value = str(argument).lower()
        if value in ("auto", "true", "false", "1", "0"):
            return {"auto": "auto", "true": True, "1": True, "false": False, "0": False}[value]
        raise ValueError("should be auto, true or false")

    def flag_type(self):
        return "auto|bool"


class _NumberOrFindParser(flags.ArgumentParser):
    """A positive number, or ``find`` (tfcustom.experiment.finders)."""

    def __init__(self, kind, name):
        self.kind, self.name = kind, name

    def parse(self, argument):
        if str(argument).lower() == "find":
            return "find"
        noun = "integer" if self.kind is int else "number"
        try:
            value = self.kind(argument)
            ok = value > 0 and (self.kind is not int or value == float(argument))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"--{self.name} must be a positive {noun} or find (e.g. --{self.name}={128 if self.kind is int else 1e-3})")
        return value

    def flag_type(self):
        return f"{self.kind.__name__}|find"


flags.DEFINE_flag(flags.Flag(_NumberOrFindParser(float, "learning_rate"), flags.ArgumentSerializer(), "learning_rate", 1e-3,
                             "Peak learning rate, or find: a learning-rate range test on a throw-away copy of the model "
                             "(tfcustom.experiment.lr_finder; lr_finder.png in the run directory)."))
flags.DEFINE_flag(flags.Flag(_NumberOrFindParser(int, "batch_size"), flags.ArgumentSerializer(), "batch_size", 128,
                             "Global batch size, or find: the largest that fits (up to 1024 and 1/16 of the training "
                             "examples) and the fastest --steps_per_execution (tfcustom.experiment.batch_finder)."))
flags.DEFINE_flag(flags.Flag(_AutoBoolParser(), flags.ArgumentSerializer(), "jit_compile", "auto",
                             "XLA-compile the per-replica forward/backward pass: auto (time both ways at start, keep the faster; "
                             "see tfcustom.experiment.autotune), or force it with --jit_compile / --nojit_compile.", boolean=True))
flags.DEFINE_string("autotune_from", None, "Replay another run's autotune choices exactly: its run directory or autotune.json.")
flags.DEFINE_integer("steps_per_execution", 1, "Train steps per tf.function call.")
flags.DEFINE_string("on_nonfinite", "stop", "What to do on a NaN/Inf loss: stop or skip.")
flags.DEFINE_string("output_dir", "runs/default", "Run directory (history, plot, model, results).")
flags.DEFINE_boolean("overwrite", False, "Replace an existing run in --output_dir.")
flags.DEFINE_integer("verbose", 1, "1: progress bar per epoch; 0: log lines only.")
flags.DEFINE_integer("checkpoint_every_steps", None, "Also save a checkpoint every N train steps (always at each epoch end).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept (plus the best one by --monitor).")
flags.DEFINE_list("export_formats", ["saved_model"], "Formats written beside model.keras: saved_model, litert, onnx "
                  "(litert/onnx are run and checked against Keras; pip install 'tfcustom[export]').")
flags.DEFINE_boolean("export_best", False, "Test and export the model of the best --monitor epoch instead of the last epoch's.")
flags.DEFINE_enum("strategy", "auto", ["auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy (see tfcustom.distribute.strategy.select): auto = TPU if reachable, else the GPU(s), else the CPU.")
flags.DEFINE_integer("num_cpu_replicas", None, "With --strategy=mirrored: split the CPU into N logical devices (one replica each).")
flags.DEFINE_string("tpu", None, "With --strategy=tpu/auto: 'local' (TPU VM), grpc://HOST:PORT or a Cloud TPU name "
                    "(default: $COLAB_TPU_ADDR, $TPU_NAME, then local).")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy; auto = mixed_bfloat16 on TPU, mixed_float16 (with loss scaling) on GPU; on a CPU with "
                  "bfloat16 instructions mixed_bfloat16 if measured faster with matching first losses, else float32.")
flags.DEFINE_float("target_accuracy", None, "Record when validation accuracy first reaches this fraction (results.json: time_to_accuracy).")
flags.DEFINE_boolean("target_accuracy_test", False, "With --target_accuracy: also evaluate the test split each epoch and record when it reaches it.")
flags.DEFINE_boolean("tensorboard", True, "Write TensorBoard summaries to <output_dir>/tensorboard (--notensorboard: none).")
flags.DEFINE_integer("log_every_steps", 100, "Write the step summaries (loss, metrics, learning rate, gradient norm, examples/s) every N steps.")
flags.DEFINE_integer("histograms_every_epochs", 0, "Write weight histograms to TensorBoard every N epochs (0: never).")
flags.DEFINE_list("profile_steps", None, "START,END: trace these global steps with the TensorFlow profiler (TensorBoard's Profile tab).")
flags.DEFINE_float("cluster_timeout", 300.0, "With --strategy=multi_worker: seconds to wait for every worker of TF_CONFIG to start before stopping with an error naming the missing ones.")
flags.DEFINE_integer("log_replica_losses", 0, "Log each replica's share of the loss every N steps and at each epoch end (0: never).")

flags.register_validator("cluster_timeout", lambda v: v is not None and v > 0, message="--cluster_timeout must be positive (seconds, e.g. --cluster_timeout=300)")

USAGE = """Usage: tfcustom-train [--flagfile=FILE] [--name=value ...]   (or python examples/train.py ...)

Trains a model on Fashion-MNIST (or MNIST, a TFDS dataset) and writes the run to --output_dir.
Flags after a --flagfile (or --config) override it. Exit codes: 0 done, 2 bad flags/config/data,
3 non-finite loss, 4 stopped by SIGTERM/Ctrl-C (run the same command again to resume),
75 disk full or I/O error (free space, then run the same command again to resume)."""

# --help lists the flags in these groups (flags not named here appear under "other").
HELP_GROUPS = {
    "data": ["config", "dataset", "data_dir", "validation_size", "train_subset", "test_subset", "augment", "shuffle_buffer", "verify_shards"],
    "model": ["model", "model_kwargs", "loss", "label_smoothing", "metrics"],
    "optimization": ["optimizer", "learning_rate", "lr_schedule", "warmup_epochs", "weight_decay", "momentum",
                     "clip_global_norm", "sam_rho", "ema_decay", "swa_start_epoch", "swa_lr", "epochs", "batch_size", "eval_batch_size", "early_stopping_patience",
                     "monitor", "seed", "deterministic", "jit_compile", "autotune_from", "steps_per_execution", "on_nonfinite"],
    "distribution": ["strategy", "num_cpu_replicas", "tpu", "precision", "cluster_timeout", "log_replica_losses"],
    "checkpoints and output": ["output_dir", "overwrite", "checkpoint_every_steps", "keep_checkpoints", "export_best", "export_formats", "verbose",
                               "tensorboard", "log_every_steps", "histograms_every_epochs", "profile_steps",
                               "target_accuracy", "target_accuracy_test"],
}

for _name in ("validation_size",):
    flags.register_validator(_name, lambda v: v is not None and v >= 0, message=f"--{_name} must be >= 0 (e.g. --{_name}=5000)")
for _name in ("train_subset", "test_subset", "epochs", "eval_batch_size", "steps_per_execution", "keep_checkpoints", "checkpoint_every_steps"):
    flags.register_validator(_name, lambda v: v is None or v >= 1, message=f"--{_name} must be a positive integer (e.g. --{_name}=10)")
flags.register_validator("seed", lambda v: v >= 0, message="--seed must be >= 0")
flags.register_validator("num_cpu_replicas", lambda v: v is None or v >= 1, message="--num_cpu_replicas must be a positive integer (e.g. --num_cpu_replicas=2)")
flags.register_validator("log_every_steps", lambda v: v is not None and v >= 1, message="--log_every_steps must be a positive integer (e.g. --log_every_steps=100)")
flags.register_validator("log_replica_losses", lambda v: v is not None and v >= 0, message="--log_replica_losses must be >= 0 (e.g. --log_replica_losses=100)")
flags.register_validator("on_nonfinite", lambda v: v in ("stop", "skip"), message="--on_nonfinite must be stop or skip")


def _model_kwargs(text: str):
    from tfcustom.errors import config_error

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise config_error(f"--model_kwargs is not valid JSON ({e.msg})", text, 'pass a JSON object, e.g. --model_kwargs=\'{"filters": [32, 64]}\'') from None
    if not isinstance(value, dict):
        raise config_error("--model_kwargs must be a JSON object", text, 'pass e.g. --model_kwargs=\'{"dropout": 0.3}\'')
    return value


def _profile_steps(values):
    from tfcustom.errors import config_error

    if not values:
        return None
    try:
        start, end = (int(v) for v in values)
    except ValueError:
        raise config_error("--profile_steps must be two integers START,END", ",".join(values), "pass e.g. --profile_steps=10,20") from None
    return (start, end)


def config_from_flags():
    """Parse the flags into a [`tfcustom.TrainConfig`][tfcustom.TrainConfig]."""
    from tfcustom.experiment.config import TrainConfig

    return TrainConfig(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        validation_size=FLAGS.validation_size,
        augment=tuple(FLAGS.augment),
        shuffle_buffer=FLAGS.shuffle_buffer,
        verify_shards=FLAGS.verify_shards,
        train_subset=FLAGS.train_subset,
        test_subset=FLAGS.test_subset,
        model=FLAGS.model,
        model_kwargs=_model_kwargs(FLAGS.model_kwargs),
        loss=FLAGS.loss,
        label_smoothing=FLAGS.label_smoothing,
        metrics=tuple(FLAGS.metrics),
        optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate,
        lr_schedule=FLAGS.lr_schedule,
        warmup_epochs=FLAGS.warmup_epochs,
        weight_decay=FLAGS.weight_decay,
        momentum=FLAGS.momentum,
        clip_global_norm=FLAGS.clip_global_norm,
        sam_rho=FLAGS.sam_rho,
        ema_decay=FLAGS.ema_decay,
        swa_start_epoch=FLAGS.swa_start_epoch,
        swa_lr=FLAGS.swa_lr,
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        eval_batch_size=FLAGS.eval_batch_size,
        early_stopping_patience=FLAGS.early_stopping_patience,
        monitor=FLAGS.monitor,
        seed=FLAGS.seed,
        deterministic=FLAGS.deterministic,
        jit_compile=FLAGS.jit_compile,
        autotune_from=FLAGS.autotune_from,
        steps_per_execution=FLAGS.steps_per_execution,
        on_nonfinite=FLAGS.on_nonfinite,
        verbose=FLAGS.verbose,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        keep_checkpoints=FLAGS.keep_checkpoints,
        export_best=FLAGS.export_best,
        export_formats=tuple(FLAGS.export_formats),
        strategy=FLAGS.strategy,
        num_cpu_replicas=FLAGS.num_cpu_replicas,
        tpu_address=FLAGS.tpu,
        precision=FLAGS.precision,
        log_replica_losses=FLAGS.log_replica_losses,
        tensorboard=FLAGS.tensorboard,
        log_every_steps=FLAGS.log_every_steps,
        histograms_every_epochs=FLAGS.histograms_every_epochs,
        profile_steps=_profile_steps(FLAGS.profile_steps),
        target_accuracy=FLAGS.target_accuracy,
        target_accuracy_test=FLAGS.target_accuracy_test,
        cluster_timeout=FLAGS.cluster_timeout,
    )


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]!r}. Flags take the form --name=value.", file=sys.stderr)
        return 2
    from tfcustom.distribute.cluster import ClusterInterrupted, ClusterTimeout
    from tfcustom.errors import TfcustomError
    from tfcustom.experiment.train import train_and_evaluate

    try:
        config = config_from_flags().validate()
        # The strategy comes first: splitting the CPU (--num_cpu_replicas) and
        # starting the multi-worker runtime only work before TF initialises its devices.
        from tfcustom.distribute.strategy import select

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
