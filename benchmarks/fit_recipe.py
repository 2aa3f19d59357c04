"""A training config's recipe under plain ``keras.Model.fit``: the ``fit`` rows of benchmarks/time_to_accuracy.py.

Reads the same flags as ``tfcustom-train`` (a ``--flagfile`` and overrides,
parsed by tfcustom's own `tfcustom.cli.config_flags`) and trains the same
recipe with ``model.compile`` + ``model.fit``:

* the same model (tfcustom's registry, the config's ``--model_kwargs``,
  test-time flip included) and seed (``keras.utils.set_random_seed``);
* the same examples: the training split after the same validation hold-out
  (all of them with ``--validation_size=0``), uint8 scaled to [0, 1] by
  tfcustom's ``normalize_images``, in a plain ``tf.data`` pipeline (indices
  shuffled each epoch, batched, gathered), augmented by tfcustom's
  ``augment_batch`` with a fresh draw every epoch; validation and test through
  tfcustom's ``InputPipeline``;
* the same optimizer on the same learning-rate schedule over the same number
  of steps (`tfcustom.experiment.builders.build_optimizer`), batch size and
  ``steps_per_execution``;
* Keras' own loss: ``CategoricalCrossentropy(label_smoothing=...)`` on one-hot
  labels (``SparseCategoricalCrossentropy`` takes no smoothing), else
  ``SparseCategoricalCrossentropy``;
* ``fit``'s defaults where the config says ``auto``: float32 and
  ``jit_compile="auto"`` (no XLA on a CPU-only machine); a precision or
  ``--jit_compile`` the config names is used as named.

The test split is evaluated after every epoch (a callback); as with
``tfcustom-train --target_accuracy_test``, that evaluation is not counted in the
epoch's ``time_s`` (``on_epoch_begin`` to the start of ``on_epoch_end``:
training and validation). Writes ``OUTPUT_DIR/results.json`` (``history`` with
``time_s`` and ``test_accuracy`` per epoch, ``test``, what was trained).

    python benchmarks/fit_recipe.py --flagfile=configs/fashion_mnist_fast.flags --seed=0 \\
        --output_dir=/tmp/fit_fast --overwrite
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from tfcustom import data as data_lib  # noqa: E402
from tfcustom.callbacks.loop_callback import learning_rate  # noqa: E402
from tfcustom.cli import report_error  # noqa: E402
from tfcustom.cli.config_flags import config_from_flags, define_flags  # noqa: E402
from tfcustom.errors import TfcustomError  # noqa: E402
from tfcustom.experiment import builders  # noqa: E402
from tfcustom.run_json import write_json  # noqa: E402

FLAGS = flags.FLAGS

# Settings that change what tfcustom trains and that this plain-fit recipe does not reproduce: (setting, reproduced when).
NOT_REPRODUCED = (
    ("dataset", lambda v: not v.startswith("tfrecord:")), ("loss", lambda v: v == "sparse_categorical_crossentropy"),
    ("optimizer", lambda v: not v.startswith("sam_")), ("sam_rho", lambda v: v is None),
    ("clip_global_norm", lambda v: v is None), ("ema_decay", lambda v: v is None), ("swa_start_epoch", lambda v: v is None),
    ("early_stopping_patience", lambda v: v is None), ("export_best", lambda v: not v),
    ("learning_rate", lambda v: v != "find"), ("batch_size", lambda v: v != "find"),
    ("strategy", lambda v: v in ("auto", "cpu", "gpu")), ("on_nonfinite", lambda v: v != "rollback"),
)


def check_reproducible(config) -> None:
    """Exit 2 with one line naming the settings this recipe cannot train as tfcustom does."""
    bad = [f"--{name}={getattr(config, name)}" for name, ok in NOT_REPRODUCED if not ok(getattr(config, name))]
    if bad:
        sys.exit(f"error: fit_recipe.py does not reproduce {', '.join(bad)} under plain keras.Model.fit; drop them")


def targets(config, num_classes: int):
    """Labels as the Keras loss takes them: one-hot for label smoothing, else class ids."""
    def one_hot(y):
        return tf.one_hot(y, num_classes)

    def class_ids(y):
        return y

    return one_hot if config.label_smoothing else class_ids


def train_dataset(pipeline: data_lib.InputPipeline, to_targets) -> tf.data.Dataset:
    """``pipeline``'s examples as a plain ``tf.data`` input that ``fit`` iterates anew each epoch:
    indices reshuffled every iteration, one random draw per batch keying ``augment_batch`` (a new flip each epoch)."""
    with tf.device("/cpu:0"):
        x, y = tf.constant(pipeline.split.x), tf.constant(pipeline.split.y)
    n, seed, augment = len(pipeline), pipeline.seed, pipeline.augment
    ids = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True).batch(pipeline.batch_size)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def examples(i, draw):
        images = tf.gather(x, i)
        if augment:
            images = data_lib.augment_batch(images, i, draw, seed, augment)
        return data_lib.normalize_images(images), to_targets(tf.gather(y, i))

    return tf.data.Dataset.zip(ids, draws).map(examples, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def eval_dataset(pipeline: data_lib.InputPipeline, to_targets) -> tf.data.Dataset:
    return pipeline.dataset().map(lambda x, y: (x, to_targets(y)))


class TestEveryEpoch(keras.callbacks.Callback):
    """One record per epoch: fit's logs, the learning rate, ``time_s`` (training + validation) and,
    evaluated after the time is taken, the test split's ``test_*`` metrics."""

    def __init__(self, test: tf.data.Dataset):
        super().__init__()
        self.test, self.records, self.start = test, [], None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.time() - self.start
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                  "learning_rate": learning_rate(self.model.optimizer), "time_s": elapsed}
        test = self.model.evaluate(self.test, verbose=0, return_dict=True)
        record.update({f"test_{k}": float(v) for k, v in test.items()})
        self.records.append(record)


def compiled_model(config, dataset, steps_per_epoch: int) -> keras.Model:
    """The config's model under ``fit``'s defaults for the ``auto`` settings, compiled with Keras' loss."""
    keras.mixed_precision.set_global_policy("float32" if config.precision == "auto" else config.precision)
    model = builders.model_from_config(config, dataset.num_classes, dataset.input_shape)
    if config.label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss, accuracy = keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=builders.build_optimizer(config, steps_per_epoch), loss=loss, metrics=[accuracy],
                  steps_per_execution=config.steps_per_execution,
                  jit_compile=config.jit_compile if isinstance(config.jit_compile, bool) else "auto")
    return model


def results(config, model: keras.Model, records, steps_per_epoch: int, lr_step0: float) -> dict:
    """What ``results.json`` says: the per-epoch records, the final test metrics and what was trained."""
    optimizer = model.optimizer
    return {
        "variant": "fit",
        "test": {k[len("test_"):]: v for k, v in records[-1].items() if k.startswith("test_")},
        "history": records,
        "train_time_s": sum(r["time_s"] for r in records),
        "epochs_run": len(records),
        "steps_per_epoch": steps_per_epoch,
        "steps_per_execution": int(model.steps_per_execution),
        "jit_compile": bool(model.jit_compile),
        "precision": keras.mixed_precision.global_policy().name,
        "parameters": int(model.count_params()),
        "model_config": model.get_config(),
        "loss": {"class": type(model.loss).__name__, "label_smoothing": float(getattr(model.loss, "label_smoothing", 0.0))},
        "optimizer": {"class": type(optimizer).__name__, "iterations": int(optimizer.iterations.numpy()),
                      "learning_rate_step0": lr_step0,
                      "variable_shapes": [list(v.shape) for v in optimizer.variables]},
        "config": config.to_dict(),
    }


def main(argv):
    del argv
    try:
        config = config_from_flags().validate()
    except TfcustomError as e:
        return report_error(e)
    check_reproducible(config)
    out = os.path.join(FLAGS.output_dir, "results.json")
    if os.path.exists(out) and not FLAGS.overwrite:
        sys.exit(f"error: {out} exists; pass --overwrite to replace it")
    builders.seed_everything(config.seed, config.deterministic)
    dataset = data_lib.subset(data_lib.load(config.dataset, config.data_dir), config.train_subset, config.test_subset)
    train, val, test = builders.pipelines(config, dataset, replicas=1)
    to_targets = targets(config, dataset.num_classes)
    model = compiled_model(config, dataset, train.steps_per_epoch)
    lr_step0 = learning_rate(model.optimizer)
    recorder = TestEveryEpoch(eval_dataset(test, to_targets))
    model.fit(train_dataset(train, to_targets), epochs=config.epochs, callbacks=[recorder], verbose=config.verbose, shuffle=False,
              validation_data=eval_dataset(val, to_targets) if val is not None else None)  # shuffled by train_dataset
    summary = results(config, model, recorder.records, train.steps_per_epoch, lr_step0)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    write_json(out, summary)
    print(f"fit: test accuracy {summary['test']['accuracy']:.4f} after {config.epochs} epochs, "
          f"{summary['train_time_s']:.0f} s of training ({out})")
    return 0


def define_script_flags() -> None:
    """tfcustom-train's flags (from TrainConfig), ``--output_dir`` and ``--overwrite``: defined when run as a
    script only, so that importing this module (the tests do) leaves absl's flags alone."""
    define_flags()
    flags.DEFINE_string("output_dir", "runs/fit_recipe", "Where results.json is written.")
    flags.DEFINE_boolean("overwrite", False, "Replace an existing results.json in --output_dir.")


if __name__ == "__main__":
    define_script_flags()
    app.run(main)
