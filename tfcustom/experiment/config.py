"""The training configuration: one dataclass, validated up front.

The example trainer parses absl flags into a [`TrainConfig`][tfcustom.TrainConfig]; notebooks
and tests build one directly. [`TrainConfig.validate`][tfcustom.experiment.config.TrainConfig.validate] checks every field
and raises [`tfcustom.errors.ConfigError`][tfcustom.errors.ConfigError] with a message that says what
is wrong, what was received and what to do.

Examples:
    >>> config = TrainConfig(model="mlp", epochs=2, batch_size=128)
    >>> config.validate()
    >>> config.replace(epochs=3).epochs
    3
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from tfcustom import losses, models, optimizers
from tfcustom import metrics as metrics_lib
from tfcustom.data import DATASET_NAMES
from tfcustom.data.augment import parse_augment
from tfcustom.data.tfrecord import VERIFY_MODES
from tfcustom.distribute.strategy import PRECISIONS, STRATEGY_NAMES
from tfcustom.errors import ConfigError, check, check_one_of, check_positive_int, config_error
from tfcustom.experiment import user_model
from tfcustom.experiment.export_formats import FORMATS, require_runtime
from tfcustom.run_json import damaged, read_json
from tfcustom.training.checked_step import NONFINITE_POLICIES
from tfcustom.training.rollback import Rollback
from tfcustom.training.sam import split_sam_name

LR_SCHEDULES = tuple(optimizers.schedule_names())  # declared once, by tfcustom.optimizers.make_schedule
# The --help groups, in order; every setting names one.
DATA, MODEL, OPTIMIZATION, EXECUTION, DISTRIBUTION, OUTPUT = (
    "data", "model", "optimization", "execution", "distribution", "checkpoints and output")
HELP_ORDER = (DATA, MODEL, OPTIMIZATION, DISTRIBUTION, OUTPUT, EXECUTION)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A check of one setting's value, applied by `TrainConfig.validate` and, for
    the CLI, when the flag is parsed: ``--NAME {text}`` (e.g. ``--NAME={example}``). ``config_text``
    replaces ``text`` in `TrainConfig.validate` where Python can pass what a flag cannot (a float)."""

    predicate: Callable[[Any], bool]
    text: str
    example: str
    config_text: Optional[str] = None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def positive_int(example) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= 1, "must be a positive integer", str(example))


def non_negative_int(example) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= 0, "must be >= 0", str(example), "must be an integer >= 0")


def setting(default, help: str, *, group: str, rule: Optional[Rule] = None, choices: Optional[Sequence[str]] = None,
            flag: Optional[str] = None, kind: Optional[str] = None):
    """One setting, declared once: its default, ``--help`` text and group, its
    `Rule` or ``choices``, and (rarely) a flag name or kind other than the
    field's own (`tfcustom.cli.config_flags` makes the flags from these).
    A default of None means "unset" is allowed."""
    metadata = {"help": help, "group": group, "rule": rule, "choices": tuple(choices) if choices else None,
                "flag": flag, "kind": kind}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run: each setting declared once (default, help, group, check).

    Adding a setting is one `setting(...)` line here; the CLI flag, its
    ``--help`` entry and its parse-time check follow from it, and the code that
    uses it reads ``config.NAME``. Each field's help text is its flag's line in
    ``tfcustom-train --help``; `TrainConfig.help(name)` returns it.

    Validated by [`train_and_evaluate`][tfcustom.train_and_evaluate] before anything runs
    (``validate()``: one [`ConfigError`][tfcustom.ConfigError] saying what to change).

    Examples:
        >>> config = TrainConfig(model="mlp", epochs=2).validate()  # returns the config
        >>> config.replace(epochs=3).differences(config)  # epochs may change on resume
        {}
        >>> config.replace(learning_rate=0.01).differences(config)
        {'learning_rate': (0.01, 0.001)}
        >>> TrainConfig.help("epochs")
        'Number of epochs.'
    """

    dataset: str = setting("fashion_mnist", "fashion_mnist, mnist, tfds:<name>, or tfrecord:DIR (shards from "
                           "`python -m tfcustom.data.convert`).", group=DATA)
    data_dir: Optional[str] = setting(None, "Directory with the IDX files (default: $TFCUSTOM_DATA_DIR, then "
                                      "/usr/share/datasets/fashion-mnist).", group=DATA)
    validation_size: int = setting(5000, "Training examples held out for validation.", group=DATA, rule=non_negative_int(5000))
    augment: Tuple[str, ...] = setting((), "Augmentations of the training examples: crop, flip (e.g. --augment=crop,flip; "
                                       "flip is wrong for digits).", group=DATA)
    shuffle_buffer: int = setting(10000, "With --dataset=tfrecord:DIR: examples per shuffle block (bounds memory).",
                                  group=DATA, rule=positive_int(10000))
    verify_shards: str = setting("full", "With --dataset=tfrecord:DIR: check each shard's SHA-256 at start (full) or only "
                                 "its size.", group=DATA, choices=VERIFY_MODES)
    train_subset: Optional[int] = setting(None, "Use only the first N training examples (validation is held out of them), "
                                          "e.g. to try a config quickly.", group=DATA, rule=positive_int(1000))
    test_subset: Optional[int] = setting(None, "Test on the first N test examples only.", group=DATA, rule=positive_int(1000))
    model: str = setting("cnn", "Model name (see tfcustom.models.names()), or your own as package.module:function "
                         "(called with num_classes, input_shape and --model_kwargs; returns a keras.Model outputting "
                         "logits).", group=MODEL)
    model_kwargs: Dict[str, Any] = setting({}, 'Model constructor arguments as a JSON object, e.g. \'{"filters": [32, 64]}\'.',
                                           group=MODEL)
    loss: str = setting("sparse_categorical_crossentropy", "Loss name (see tfcustom.losses.names()).", group=MODEL)
    label_smoothing: float = setting(0.0, "Label smoothing for the cross-entropy loss.", group=MODEL)
    metrics: Tuple[str, ...] = setting(("accuracy",), "Metric names (see tfcustom.metrics.names()).", group=MODEL)
    optimizer: str = setting("adam", "Optimizer name; prefix sam_ for Sharpness-Aware Minimization (e.g. sam_sgd).",
                             group=OPTIMIZATION)
    learning_rate: Union[float, str] = setting(1e-3, "Peak learning rate, or find: a learning-rate range test on a "
                                               "throw-away copy of the model (tfcustom.experiment.lr_finder; "
                                               "lr_finder.png in the run directory).", group=OPTIMIZATION, kind="float_or_find")
    lr_schedule: str = setting("constant", "constant, cosine, exponential or step.", group=OPTIMIZATION)
    warmup_epochs: float = setting(0.0, "Linear warm-up length in epochs (cosine schedule).", group=OPTIMIZATION)
    weight_decay: Optional[float] = setting(None, "Decoupled weight decay of the optimizer.", group=OPTIMIZATION)
    momentum: float = setting(0.9, "Momentum for sgd/momentum/nesterov/rmsprop.", group=OPTIMIZATION)
    clip_global_norm: Optional[float] = setting(None, "Clip the gradient to this global norm.", group=OPTIMIZATION)
    sam_rho: Optional[float] = setting(None, "SAM neighbourhood size (implies SAM).", group=OPTIMIZATION)
    # weight averaging (see tfcustom.callbacks.weight_averaging)
    ema_decay: Optional[float] = setting(None, "Keep an exponential moving average of the weights with this decay (e.g. 0.999), updated "
                                         "after every step; the average is tested and exported (BatchNorm statistics recomputed for it).",
                                         group=OPTIMIZATION)
    swa_start_epoch: Optional[int] = setting(None, "Stochastic weight averaging: average the weights at the end of every epoch from "
                                             "this one (counted from 1); the average is tested and exported (BatchNorm statistics "
                                             "recomputed for it).", group=OPTIMIZATION)
    swa_lr: Optional[float] = setting(None, "With --swa_start_epoch: train at this constant learning rate from that epoch on "
                                      "(unset: the schedule continues).", group=OPTIMIZATION)
    epochs: int = setting(10, "Number of epochs.", group=OPTIMIZATION, rule=positive_int(10))
    batch_size: Union[int, str] = setting(128, "Global batch size, or find: the largest that fits (up to 1024 and 1/16 of "
                                          "the training examples) and the fastest --steps_per_execution "
                                          "(tfcustom.experiment.batch_finder).", group=OPTIMIZATION, kind="int_or_find")
    early_stopping_patience: Optional[int] = setting(None, "Stop after this many epochs without improvement of --monitor.",
                                                     group=OPTIMIZATION, rule=non_negative_int(3))
    monitor: str = setting("val_accuracy", "Value watched by early stopping.", group=OPTIMIZATION)
    seed: int = setting(0, "Random seed (data order, initial weights, dropout).", group=EXECUTION, rule=non_negative_int(0))
    deterministic: bool = setting(False, "Deterministic TF kernels: two runs give identical histories.", group=EXECUTION)
    jit_compile: Any = setting("auto", "XLA-compile the per-replica forward/backward pass: auto (time both ways at start, "
                               "keep the faster; see tfcustom.autotune), or force it with --jit_compile / --nojit_compile.",
                               group=EXECUTION, kind="auto_bool")
    autotune_from: Optional[str] = setting(None, "Replay another run's autotune choices exactly: its run directory or "
                                           "autotune.json.", group=EXECUTION)
    steps_per_execution: int = setting(1, "Train steps per tf.function call.", group=EXECUTION, rule=positive_int(10))
    on_nonfinite: str = setting("stop", "What to do on a NaN/Inf loss: stop, skip (that update), or rollback (restore the "
                                "last checkpoint and skip that batch from then on; docs/guides/rollback.md).", group=EXECUTION,
                                rule=Rule(lambda v: v in NONFINITE_POLICIES, "must be stop, skip or rollback", "skip"))
    max_rollbacks: int = setting(3, "With --on_nonfinite=rollback: roll back at most N times; the next divergence stops "
                                 "training (exit code 3, the last checkpoint intact).", group=EXECUTION,
                                 rule=Rule(lambda v: _is_int(v) and 1 <= v <= 64, "must be an integer from 1 to 64", "3"))
    rollback_lr_factor: float = setting(1.0, "With --on_nonfinite=rollback: multiply the learning rate (or the schedule's "
                                        "output) by F after each rollback; 1: unchanged.", group=EXECUTION,
                                        rule=Rule(lambda v: _is_number(v) and 0 < v <= 1, "must be in (0, 1]", "0.5"))
    rollback_loss_spike: Optional[float] = setting(None, "With --on_nonfinite=rollback: a step whose loss exceeds K times "
                                                   "the running mean of the last 10 applied steps' losses diverged too "
                                                   "(e.g. 5); unset: only NaN/Inf.", group=EXECUTION,
                                                   rule=Rule(lambda v: _is_number(v) and v > 1, "must be a number > 1", "5"))
    eval_batch_size: int = setting(500, "Batch size for validation and test.", group=EXECUTION, rule=positive_int(500))
    verbose: int = setting(1, "1: progress bar per epoch; 0: log lines only.", group=OUTPUT)
    strategy: str = setting("auto", "tf.distribute strategy (see tfcustom.strategy.select): auto = TPU if reachable, else "
                            "the GPU(s), else the CPU.", group=DISTRIBUTION,
                            choices=STRATEGY_NAMES)
    num_cpu_replicas: Optional[int] = setting(None, "With --strategy=mirrored: split the CPU into N logical devices (one "
                                              "replica each).", group=DISTRIBUTION, rule=positive_int(2))
    tpu_address: Optional[str] = setting(None, "With --strategy=tpu/auto: 'local' (TPU VM), grpc://HOST:PORT or a Cloud TPU "
                                         "name (default: $COLAB_TPU_ADDR, $TPU_NAME, then local).", group=DISTRIBUTION,
                                         flag="tpu")
    precision: str = setting("auto", "Keras dtype policy; auto = mixed_bfloat16 on TPU, mixed_float16 (with loss scaling) "
                             "on GPU; on a CPU with bfloat16 instructions mixed_bfloat16 if measured > 20 % faster with matching "
                             "first losses, else float32.", group=DISTRIBUTION,
                             choices=PRECISIONS)
    log_replica_losses: int = setting(0, "Log each replica's share of the loss every N steps and at each epoch end "
                                      "(0: never).", group=DISTRIBUTION, rule=non_negative_int(100))
    tensorboard: bool = setting(True, "Write TensorBoard summaries to <output_dir>/tensorboard (--notensorboard: none).",
                                group=OUTPUT)
    log_every_steps: int = setting(100, "Write the step summaries (loss, metrics, learning rate, gradient norm, "
                                   "examples/s) every N steps.", group=OUTPUT, rule=positive_int(100))
    histograms_every_epochs: int = setting(0, "Write weight histograms to TensorBoard every N epochs (0: never).",
                                           group=OUTPUT, rule=non_negative_int(1))
    profile_steps: Optional[Tuple[int, int]] = setting(None, "START,END: trace these global steps with the TensorFlow "
                                                       "profiler (TensorBoard's Profile tab).", group=OUTPUT, kind="int_pair")
    cluster_timeout: float = setting(300.0, "With --strategy=multi_worker: seconds to wait for every worker of TF_CONFIG "
                                     "to start before stopping with an error naming the missing ones.", group=DISTRIBUTION,
                                     rule=Rule(lambda v: _is_number(v) and v > 0, "must be positive (seconds)", "300"))
    checkpoint_every_steps: Optional[int] = setting(None, "Also save a checkpoint every N train steps (always at each "
                                                    "epoch end).", group=OUTPUT, rule=positive_int(500))
    keep_checkpoints: int = setting(3, "Checkpoints kept (plus the best one by --monitor).", group=OUTPUT,
                                    rule=positive_int(3))
    export_best: bool = setting(False, "Test and export the model of the best --monitor epoch instead of the last "
                                "epoch's.", group=OUTPUT)
    export_formats: Tuple[str, ...] = setting(("saved_model",), "Formats written beside model.keras: saved_model, litert, "
                                              "onnx (litert/onnx are run and checked against Keras; pip install "
                                              "'tfcustom[export]').", group=OUTPUT)
    target_accuracy: Optional[float] = setting(None, "Record when validation accuracy first reaches this fraction "
                                               "(results.json: time_to_accuracy).", group=OUTPUT)
    target_accuracy_test: bool = setting(False, "With --target_accuracy: also evaluate the test split each epoch and record "
                                         "when it reaches it.", group=OUTPUT)

    # Fields that may change when a run resumes: they do not change what is trained.
    RESUMABLE_CHANGES = frozenset({
        "epochs", "verbose", "data_dir", "eval_batch_size", "checkpoint_every_steps", "keep_checkpoints",
        "early_stopping_patience", "jit_compile", "export_best", "export_formats", "steps_per_execution", "strategy", "num_cpu_replicas", "tpu_address",
        "log_replica_losses", "verify_shards", "tensorboard", "log_every_steps", "histograms_every_epochs", "profile_steps", "target_accuracy", "target_accuracy_test",
        "cluster_timeout", "max_rollbacks",
    })

    def differences(self, other: "TrainConfig") -> Dict[str, Tuple[Any, Any]]:
        """Fields (outside `RESUMABLE_CHANGES`) whose values differ: ``{name: (self, other)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in self.RESUMABLE_CHANGES and a.get(k) != b.get(k)}

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of setting ``name`` (its ``--help`` line)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        check_one_of("setting", name, sorted(fields))
        return fields[name].metadata["help"]

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["metrics"] = list(self.metrics)
        d["augment"] = list(self.augment)
        d["export_formats"] = list(self.export_formats)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        check(not unknown, "unknown config fields", unknown, f"use only: {', '.join(sorted(known))}")
        d = dict(d)
        if "metrics" in d:
            d["metrics"] = tuple(d["metrics"])
        if "augment" in d:
            d["augment"] = tuple(d["augment"])
        if "export_formats" in d:
            d["export_formats"] = tuple(d["export_formats"])
        return cls(**d)

    @classmethod
    def read(cls, path: str) -> "TrainConfig":
        """The config a run wrote to ``path`` (its ``config.json``); one clear error if unreadable."""
        data = read_json(path, dict)  # a truncated or edited file: one line naming it
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError, ConfigError) as e:
            raise damaged(path, f"{type(e).__name__}: {str(e)[:200]}") from None

    def _check_export_formats(self) -> None:
        """Known formats, and their runtimes installed (checked before training, not after)."""
        known = ["saved_model"] + sorted(FORMATS)
        check(all(f in known for f in self.export_formats), "unknown export format", list(self.export_formats),
              f"choose from {','.join(known)} (e.g. --export_formats=saved_model,litert,onnx)")
        for fmt in self.export_formats:
            if fmt != "saved_model":
                require_runtime(fmt)

    def _validate_settings(self) -> None:
        """Each setting's own `Rule` or ``choices``, as declared (None passes where it is the default)."""
        for f in dataclasses.fields(self):
            value, rule, choices = getattr(self, f.name), f.metadata.get("rule"), f.metadata.get("choices")
            if value is None and f.default is None:
                continue
            if rule is not None:
                check(rule.predicate(value), f"{f.name} {rule.config_text or rule.text}", value, f"pass e.g. {f.name}={rule.example}"
                      + (", or leave it unset" if f.default is None else ""))
            if choices is not None:
                check_one_of(f.name, value, choices)

    def validate(self) -> "TrainConfig":
        """Check every field (names such as model, loss, ... against the registries) and return
        the config, with ``augment`` and ``export_formats`` as tuples: ``self`` when they are
        already, else a normalized copy (the config itself is never changed)."""
        self._validate_settings()
        Rollback.from_config(self)  # the rollback settings need --on_nonfinite=rollback
        check(
            self.dataset in DATASET_NAMES[:-1] or self.dataset.startswith("tfds:") or self.dataset.startswith("tfrecord:"),
            "unknown dataset", self.dataset,
            f"use one of: {', '.join(DATASET_NAMES)}, tfrecord:DIR",
        )
        augment, export_formats = parse_augment(self.augment), tuple(self.export_formats or ())
        config = self if (augment, export_formats) == (self.augment, self.export_formats) else dataclasses.replace(
            self, augment=augment, export_formats=export_formats)
        config._check_export_formats()
        check((config.train_subset is None and config.test_subset is None) or not config.dataset.startswith("tfrecord:"),
              "train_subset/test_subset apply to in-memory datasets, not to tfrecord: shards", config.dataset,
              "drop --train_subset/--test_subset, or convert a smaller dataset")
        config._validate_model()
        config._validate_optimization()
        config._validate_execution()
        config._validate_weight_averaging()
        return config

    def _validate_model(self) -> None:
        """The model (registered or ``module:function``) and its kwargs, the loss and the metrics."""
        check(isinstance(self.model_kwargs, dict), "model_kwargs must be a dict (JSON object)", self.model_kwargs, 'pass e.g. --model_kwargs=\'{"filters": [32, 64]}\'')
        if user_model.is_reference(self.model):
            user_model.check_reference(self.model, self.model_kwargs)
        else:
            check(isinstance(self.model, str) and self.model.lower() in models.names(), "unknown model", self.model,
                  f"choose one of: {', '.join(models.names())}, or your own as module:function")
        # Fashion-MNIST's shoes all face one way: a model trained without mirrored
        # images scores ~70 % on mirrored test images, so flip-averaging lowers its
        # accuracy (measured 92.9 % -> 90.5 %).
        check(not self.model_kwargs.get("test_time_flip") or "flip" in (self.augment or ()),
              "test_time_flip needs a model trained on mirrored images", f"augment={list(self.augment or ())}",
              "add --augment=flip (or crop,flip), or drop test_time_flip from --model_kwargs")
        check_one_of("loss", self.loss, losses.names())
        check(0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)", self.label_smoothing, "pass e.g. 0.1")
        for m in self.metrics:
            check_one_of("metric", m, metrics_lib.names())

    def _validate_optimization(self) -> None:
        """The optimizer, its learning rate and schedule, weight decay, momentum, clipping, SAM, the batch size."""
        check_one_of("optimizer", self.optimizer, optimizers.names() + [f"sam_{n}" for n in optimizers.names()])
        base, _ = split_sam_name(self.optimizer)
        check(self.learning_rate == "find" or (_is_number(self.learning_rate) and self.learning_rate > 0),
              "learning_rate must be positive, or find", self.learning_rate, "pass e.g. 1e-3, or find for a range test")
        check_one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check(self.warmup_epochs >= 0, "warmup_epochs must be >= 0", self.warmup_epochs, "pass 0 for no warm-up")
        check(self.warmup_epochs == 0 or self.lr_schedule in ("constant", "cosine"), "warm-up works with the constant and cosine schedules only", self.lr_schedule, "use --lr_schedule=cosine or --warmup_epochs=0")
        check(self.weight_decay is None or self.weight_decay >= 0, "weight_decay must be >= 0", self.weight_decay, "pass e.g. 1e-4, or leave it unset")
        check(0.0 <= self.momentum < 1.0, "momentum must be in [0, 1)", self.momentum, "pass e.g. 0.9")
        check(self.momentum > 0 or base not in ("momentum", "nesterov"), f"optimizer {base} needs momentum > 0", self.momentum, "pass e.g. --momentum=0.9, or use --optimizer=sgd")
        check(self.clip_global_norm is None or self.clip_global_norm > 0, "clip_global_norm must be positive", self.clip_global_norm, "pass e.g. 1.0, or leave it unset")
        check(self.sam_rho is None or self.sam_rho >= 0, "sam_rho must be >= 0", self.sam_rho, "pass e.g. 0.05")
        if self.batch_size != "find":
            check_positive_int("batch_size", self.batch_size)

    def _validate_execution(self) -> None:
        """XLA, the accuracy target, the strategy's options, profiling, early stopping's monitor."""
        check(isinstance(self.jit_compile, bool) or self.jit_compile == "auto", "jit_compile must be 'auto', True or False",
              self.jit_compile, "pass --jit_compile=auto to choose by measurement, --jit_compile or --nojit_compile to force it")
        check(self.target_accuracy is None or (isinstance(self.target_accuracy, (int, float)) and 0 < self.target_accuracy <= 1),
              "target_accuracy must be a fraction in (0, 1]", self.target_accuracy, "pass e.g. --target_accuracy=0.9")
        check(not self.target_accuracy_test or self.target_accuracy is not None, "target_accuracy_test needs target_accuracy",
              self.target_accuracy_test, "pass --target_accuracy=X too, or drop --target_accuracy_test")
        check(self.num_cpu_replicas is None or self.strategy == "mirrored", "num_cpu_replicas applies only to strategy 'mirrored'",
              self.strategy, "pass --strategy=mirrored with --num_cpu_replicas, or drop --num_cpu_replicas")
        check(self.tpu_address is None or self.strategy in ("tpu", "auto"), "a TPU address applies only to strategy 'tpu' or 'auto'",
              self.strategy, "pass --strategy=tpu with --tpu, or drop --tpu")
        check(self.profile_steps is None or (isinstance(self.profile_steps, (list, tuple)) and len(self.profile_steps) == 2
                                             and all(isinstance(s, int) for s in self.profile_steps) and 1 <= self.profile_steps[0] <= self.profile_steps[1]),
              "profile_steps must be START,END with 1 <= START <= END", self.profile_steps, "pass e.g. --profile_steps=10,20")
        check(self.validation_size > 0 or not self.monitor.startswith("val_") or self.early_stopping_patience is None,
              "early stopping monitors a validation metric but validation_size is 0", self.monitor, "set validation_size > 0 or monitor a training metric")

    def _validate_weight_averaging(self) -> None:
        """``ema_decay`` / ``swa_start_epoch`` / ``swa_lr``: their ranges, and one averaging at a time."""
        check(self.ema_decay is None or (_is_number(self.ema_decay) and 0.0 < self.ema_decay < 1.0), "ema_decay must be in (0, 1)",
              self.ema_decay, "pass e.g. --ema_decay=0.999, or leave it unset for no moving average")
        check(self.swa_start_epoch is None or (isinstance(self.swa_start_epoch, int) and not isinstance(self.swa_start_epoch, bool)
                                               and 1 <= self.swa_start_epoch <= self.epochs),
              f"swa_start_epoch must be an epoch of the run, 1 to epochs={self.epochs}", self.swa_start_epoch,
              f"pass e.g. --swa_start_epoch={max(1, self.epochs * 3 // 4)} (SWA over the last quarter)")
        check(self.swa_lr is None or (_is_number(self.swa_lr) and self.swa_lr > 0), "swa_lr must be positive", self.swa_lr,
              "pass e.g. --swa_lr=0.0005, or leave it unset to keep the schedule")
        check(self.swa_lr is None or self.swa_start_epoch is not None, "swa_lr needs swa_start_epoch", self.swa_lr,
              "pass --swa_start_epoch=N too (SWA from epoch N), or drop --swa_lr")
        check(self.ema_decay is None or self.swa_start_epoch is None, "choose one weight averaging: ema_decay or swa_start_epoch",
              f"ema_decay={self.ema_decay}, swa_start_epoch={self.swa_start_epoch}", "drop --ema_decay or --swa_start_epoch")
        check(not self.export_best or (self.ema_decay is None and self.swa_start_epoch is None),
              "export_best exports the raw weights of the best epoch, not the averaged weights", "export_best with weight averaging",
              "drop --export_best (the averaged model is exported), or drop --ema_decay/--swa_start_epoch")


def _attributes_section(cls) -> str:
    """The ``Attributes:`` section of a docstring, made from the settings' help texts (declared once, in the fields)."""
    lines = ["", "", "    Attributes:"]
    for field in dataclasses.fields(cls):
        lines.append(f"      {field.name}: {field.metadata['help']}")
    return "\n".join(lines) + "\n"


TrainConfig.__doc__ = TrainConfig.__doc__.rstrip() + _attributes_section(TrainConfig)

