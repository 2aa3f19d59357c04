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
from typing import Any, Dict, Optional, Tuple, Union

from tfcustom.errors import ConfigError, check, check_one_of, check_positive_int, config_error
from tfcustom.run_json import damaged, read_json

LR_SCHEDULES = ("constant", "cosine", "exponential", "step")
NONFINITE_POLICIES = ("stop", "skip")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run: the fields are ``tfcustom-train``'s flags.

    Validated by [`train_and_evaluate`][tfcustom.train_and_evaluate] before anything runs
    (``validate()``: one [`ConfigError`][tfcustom.ConfigError] saying what to change).

    Attributes:
      dataset: ``fashion_mnist``, ``mnist``, ``tfds:<name>`` or ``tfrecord:DIR``.
      data_dir: where the IDX files are (default ``$TFCUSTOM_DATA_DIR``, then Debian's path).
      validation_size: training examples held out for validation (0: none).
      augment: ``("crop", "flip")`` or a subset, seeded per example and epoch.
      shuffle_buffer: ``tfrecord:DIR`` only: examples per shuffle block.
      verify_shards: ``tfrecord:DIR`` only: ``"full"`` (SHA-256 at start) or ``"size"``.
      train_subset: use only the first N training examples.
      test_subset: test on the first N test examples only.
      model: a registered model name or ``package.module:function``.
      model_kwargs: keyword arguments of the model.
      loss: a loss name (``tfcustom.losses`` or Keras); the models output logits.
      label_smoothing: for the cross-entropy losses.
      metrics: metric names, as ``compile`` takes them.
      optimizer: an optimizer name (``tfcustom.optimizers``; ``sam_*`` for SAM).
      learning_rate: a float, or ``"find"`` (the learning-rate finder).
      lr_schedule: ``constant``, ``cosine``, ``exponential`` or ``step``.
      warmup_epochs: linear warm-up before the schedule.
      weight_decay: decoupled weight decay, or None.
      momentum: for SGD-like optimizers.
      clip_global_norm: clip the summed gradient to this global norm.
      sam_rho: SAM's neighbourhood size (``sam_*`` optimizers).
      ema_decay: keep an exponential moving average of the weights with this
        decay (e.g. 0.999); tested and exported instead of the raw weights.
      swa_start_epoch: stochastic weight averaging of the weights at the end of
        each epoch from this one (counted from 1); tested and exported.
      swa_lr: with ``swa_start_epoch``: a constant learning rate from that epoch
        on (None: the schedule continues).
      epochs: epochs in total (a resumed run trains up to this epoch).
      batch_size: the global batch size, or ``"find"``.
      early_stopping_patience: epochs without improvement of ``monitor``; None: never stop.
      monitor: the value early stopping and the best checkpoint follow.
      seed: seeds the weights, the data order and the augmentation.
      deterministic: TF op determinism; nothing chosen by timing.
      jit_compile: ``"auto"`` (measured), True or False.
      autotune_from: replay another run's autotune decision (its directory or file).
      steps_per_execution: train steps per ``tf.function`` call.
      on_nonfinite: ``"stop"`` or ``"skip"`` a NaN/Inf step.
      eval_batch_size: the batch size of evaluation.
      verbose: 1: a progress bar per epoch; 0: logs only.
      strategy: ``auto``, ``cpu``, ``gpu``, ``mirrored``, ``multi_worker`` or ``tpu``.
      num_cpu_replicas: ``mirrored`` on a CPU: this many logical devices.
      tpu_address: ``local``, ``grpc://HOST:PORT`` or a Cloud TPU name.
      precision: ``auto``, ``float32``, ``mixed_float16`` or ``mixed_bfloat16``.
      log_replica_losses: log each replica's share of the loss every N steps.
      tensorboard: write TensorBoard summaries to ``<output_dir>/tensorboard``.
      log_every_steps: step summaries every N steps.
      histograms_every_epochs: weight histograms every N epochs (0: never).
      profile_steps: ``(start, end)`` global steps to profile.
      cluster_timeout: ``multi_worker``: seconds to wait for the other workers.
      checkpoint_every_steps: a checkpoint every N steps (and at each epoch end).
      keep_checkpoints: checkpoints kept.
      export_best: test and export the best ``monitor`` epoch's model.
      export_formats: ``saved_model``, ``litert``, ``onnx``.
      target_accuracy: record when validation accuracy first reached it.
      target_accuracy_test: also evaluate the test split at each epoch end for it.

    Examples:
        >>> config = TrainConfig(model="mlp", epochs=2).validate()  # returns the config
        >>> config.replace(epochs=3).differences(config)  # epochs may change on resume
        {}
        >>> config.replace(learning_rate=0.01).differences(config)
        {'learning_rate': (0.01, 0.001)}
    """

    # data
    dataset: str = "fashion_mnist"
    data_dir: Optional[str] = None
    validation_size: int = 5000
    augment: Tuple[str, ...] = ()  # "crop", "flip": see tfcustom.data.augment
    shuffle_buffer: int = 10000  # tfrecord:DIR only: examples per shuffle block (see tfcustom.data.streaming)
    verify_shards: str = "full"  # tfrecord:DIR only: "full" (SHA-256 of every shard at start) or "size"
    train_subset: Optional[int] = None  # use only the first N training examples (validation is held out of them)
    test_subset: Optional[int] = None  # test on the first N test examples only
    # model and objective
    model: str = "cnn"
    model_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    loss: str = "sparse_categorical_crossentropy"
    label_smoothing: float = 0.0
    metrics: Tuple[str, ...] = ("accuracy",)
    # optimization
    optimizer: str = "adam"
    learning_rate: Union[float, str] = 1e-3  # or "find" (tfcustom.experiment.finders)
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    weight_decay: Optional[float] = None
    momentum: float = 0.9
    clip_global_norm: Optional[float] = None
    sam_rho: Optional[float] = None
    # weight averaging (see tfcustom.callbacks.weight_averaging)
    ema_decay: Optional[float] = None
    swa_start_epoch: Optional[int] = None
    swa_lr: Optional[float] = None
    epochs: int = 10
    batch_size: Union[int, str] = 128  # or "find" (tfcustom.experiment.finders)
    early_stopping_patience: Optional[int] = None
    monitor: str = "val_accuracy"
    # execution
    seed: int = 0
    deterministic: bool = False
    jit_compile: Any = "auto"  # "auto" (measured, see tfcustom.experiment.autotune), True or False
    autotune_from: Optional[str] = None  # replay another run's autotune decision (its dir or autotune.json)
    steps_per_execution: int = 1
    on_nonfinite: str = "stop"
    eval_batch_size: int = 500
    verbose: int = 1
    # distribution and precision (see tfcustom.distribute.strategy)
    strategy: str = "auto"
    num_cpu_replicas: Optional[int] = None
    tpu_address: Optional[str] = None
    precision: str = "auto"
    log_replica_losses: int = 0
    # TensorBoard (see tfcustom.callbacks.summaries): <output_dir>/tensorboard
    tensorboard: bool = True
    log_every_steps: int = 100
    histograms_every_epochs: int = 0
    profile_steps: Optional[Tuple[int, int]] = None
    cluster_timeout: float = 300.0  # multi_worker: seconds to wait for the other workers
    # checkpoints
    checkpoint_every_steps: Optional[int] = None
    keep_checkpoints: int = 3
    export_best: bool = False
    export_formats: Tuple[str, ...] = ("saved_model",)  # plus "litert", "onnx": see tfcustom.experiment.export_formats
    # time to accuracy (see tfcustom.experiment.time_to_accuracy)
    target_accuracy: Optional[float] = None
    target_accuracy_test: bool = False

    # Fields that may change when a run resumes: they do not change what is trained.
    RESUMABLE_CHANGES = frozenset({
        "epochs", "verbose", "data_dir", "eval_batch_size", "checkpoint_every_steps", "keep_checkpoints",
        "early_stopping_patience", "jit_compile", "export_best", "export_formats", "steps_per_execution", "strategy", "num_cpu_replicas", "tpu_address",
        "log_replica_losses", "verify_shards", "tensorboard", "log_every_steps", "histograms_every_epochs", "profile_steps", "target_accuracy", "target_accuracy_test",
        "cluster_timeout",
    })

    def differences(self, other: "TrainConfig") -> Dict[str, Tuple[Any, Any]]:
        """Fields (outside `RESUMABLE_CHANGES`) whose values differ: ``{name: (self, other)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in self.RESUMABLE_CHANGES and a.get(k) != b.get(k)}

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

    def _validate_export_formats(self) -> None:
        """Known formats, and their runtimes installed (checked before training, not after)."""
        from tfcustom.experiment.export_formats import FORMATS, require_runtime

        self.export_formats = tuple(self.export_formats or ())
        known = ["saved_model"] + sorted(FORMATS)
        check(all(f in known for f in self.export_formats), "unknown export format", list(self.export_formats),
              f"choose from {','.join(known)} (e.g. --export_formats=saved_model,litert,onnx)")
        for fmt in self.export_formats:
            if fmt != "saved_model":
                require_runtime(fmt)

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

    def validate(self) -> "TrainConfig":
        """Check every field; return self. Names (model, loss, ...) are checked
        against the registries."""
        from tfcustom import losses, models, optimizers
        from tfcustom.data import DATASET_NAMES

        check(
            self.dataset in DATASET_NAMES[:-1] or self.dataset.startswith("tfds:") or self.dataset.startswith("tfrecord:"),
            "unknown dataset", self.dataset,
            f"use one of: {', '.join(DATASET_NAMES)}, tfrecord:DIR",
        )
        from tfcustom.data.augment import parse_augment
        from tfcustom.data.tfrecord import VERIFY_MODES

        self.augment = parse_augment(self.augment)
        self._validate_export_formats()
        check_positive_int("shuffle_buffer", self.shuffle_buffer)
        check_one_of("verify_shards mode", self.verify_shards, VERIFY_MODES)
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            check(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1),
                  f"{name} must be a positive integer or None", value, f"pass e.g. {name}=1000, or None for every example")
        check((self.train_subset is None and self.test_subset is None) or not self.dataset.startswith("tfrecord:"),
              "train_subset/test_subset apply to in-memory datasets, not to tfrecord: shards", self.dataset,
              "drop --train_subset/--test_subset, or convert a smaller dataset")
        check(isinstance(self.validation_size, int) and self.validation_size >= 0, "validation_size must be an integer >= 0", self.validation_size, "pass 0 to train without validation, or a positive count")
        check(isinstance(self.model_kwargs, dict), "model_kwargs must be a dict (JSON object)", self.model_kwargs, 'pass e.g. --model_kwargs=\'{"filters": [32, 64]}\'')
        from tfcustom.experiment import user_model

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
        from tfcustom import metrics as metrics_lib

        for m in self.metrics:
            check_one_of("metric", m, metrics_lib.names())
        base, _ = _split_sam(self.optimizer)
        check_one_of("optimizer", self.optimizer, optimizers.names() + [f"sam_{n}" for n in optimizers.names()])
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
        check_positive_int("epochs", self.epochs)
        if self.batch_size != "find":
            check_positive_int("batch_size", self.batch_size)
        check_positive_int("eval_batch_size", self.eval_batch_size)
        check(self.early_stopping_patience is None or (isinstance(self.early_stopping_patience, int) and self.early_stopping_patience >= 0), "early_stopping_patience must be an integer >= 0", self.early_stopping_patience, "pass e.g. 3, or leave it unset")
        check(isinstance(self.seed, int) and self.seed >= 0, "seed must be an integer >= 0", self.seed, "pass e.g. --seed=0")
        check_positive_int("steps_per_execution", self.steps_per_execution)
        check(isinstance(self.jit_compile, bool) or self.jit_compile == "auto", "jit_compile must be 'auto', True or False",
              self.jit_compile, "pass --jit_compile=auto to choose by measurement, --jit_compile or --nojit_compile to force it")
        check(self.target_accuracy is None or (isinstance(self.target_accuracy, (int, float)) and 0 < self.target_accuracy <= 1),
              "target_accuracy must be a fraction in (0, 1]", self.target_accuracy, "pass e.g. --target_accuracy=0.9")
        check(not self.target_accuracy_test or self.target_accuracy is not None, "target_accuracy_test needs target_accuracy",
              self.target_accuracy_test, "pass --target_accuracy=X too, or drop --target_accuracy_test")
        check_one_of("on_nonfinite policy", self.on_nonfinite, NONFINITE_POLICIES)
        check(self.checkpoint_every_steps is None or (isinstance(self.checkpoint_every_steps, int) and self.checkpoint_every_steps >= 1),
              "checkpoint_every_steps must be a positive integer", self.checkpoint_every_steps, "pass e.g. --checkpoint_every_steps=500, or leave it unset to save at epoch ends only")
        check_positive_int("keep_checkpoints", self.keep_checkpoints)
        from tfcustom.distribute.strategy import PRECISIONS, STRATEGY_NAMES

        check_one_of("strategy", self.strategy, STRATEGY_NAMES)
        check(self.num_cpu_replicas is None or (isinstance(self.num_cpu_replicas, int) and not isinstance(self.num_cpu_replicas, bool) and self.num_cpu_replicas >= 1),
              "num_cpu_replicas must be a positive integer", self.num_cpu_replicas, "pass e.g. --num_cpu_replicas=2, or leave it unset")
        check(self.num_cpu_replicas is None or self.strategy == "mirrored", "num_cpu_replicas applies only to strategy 'mirrored'",
              self.strategy, "pass --strategy=mirrored with --num_cpu_replicas, or drop --num_cpu_replicas")
        check(self.tpu_address is None or self.strategy in ("tpu", "auto"), "a TPU address applies only to strategy 'tpu' or 'auto'",
              self.strategy, "pass --strategy=tpu with --tpu, or drop --tpu")
        check_one_of("precision", self.precision, PRECISIONS)
        check(isinstance(self.log_replica_losses, int) and self.log_replica_losses >= 0, "log_replica_losses must be an integer >= 0",
              self.log_replica_losses, "pass N to log each replica's loss every N steps, or 0 for never")
        check(isinstance(self.log_every_steps, int) and not isinstance(self.log_every_steps, bool) and self.log_every_steps >= 1,
              "log_every_steps must be a positive integer", self.log_every_steps, "pass e.g. --log_every_steps=100")
        check(isinstance(self.histograms_every_epochs, int) and self.histograms_every_epochs >= 0, "histograms_every_epochs must be an integer >= 0",
              self.histograms_every_epochs, "pass e.g. --histograms_every_epochs=1, or 0 for none")
        check(self.profile_steps is None or (isinstance(self.profile_steps, (list, tuple)) and len(self.profile_steps) == 2
                                             and all(isinstance(s, int) for s in self.profile_steps) and 1 <= self.profile_steps[0] <= self.profile_steps[1]),
              "profile_steps must be START,END with 1 <= START <= END", self.profile_steps, "pass e.g. --profile_steps=10,20")
        check(isinstance(self.cluster_timeout, (int, float)) and not isinstance(self.cluster_timeout, bool) and self.cluster_timeout > 0,
              "cluster_timeout must be a positive number of seconds", self.cluster_timeout, "pass e.g. cluster_timeout=300")
        self._validate_weight_averaging()
        check(self.validation_size > 0 or not self.monitor.startswith("val_") or self.early_stopping_patience is None,
              "early stopping monitors a validation metric but validation_size is 0", self.monitor, "set validation_size > 0 or monitor a training metric")
        return self


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _split_sam(name: str):
    if name.startswith("sam_"):
        return name[len("sam_"):], True
    return name, False
