"""Turn in-memory splits into ``tf.data`` input, per epoch and per replica.

An [`InputPipeline`][tfcustom.data.pipeline.InputPipeline] is a recipe, not a dataset: ``pipeline.dataset(epoch,
skip_batches, input_context)`` builds the input of one epoch. The order of an
epoch is a seeded permutation of ``(seed, epoch)``, so any epoch can be rebuilt
exactly, from any batch (``skip_batches``): that is what exact resume needs.
Under a ``tf.distribute`` strategy the pipeline is sharded per input pipeline
and batched per replica (``distribute_datasets_from_function``), so that the
union of the replicas' batches at a step is the same set of examples as the
single-device batch: each global batch is cut into one contiguous chunk per
replica, and a final partial batch is split as evenly as possible (no replica
gets an empty batch unless fewer examples than replicas are left).

Examples:
    >>> train, val = split_validation(ds.train, num_validation=5000, seed=0)
    >>> pipe = InputPipeline(train, batch_size=128, shuffle=True, seed=0)
    >>> for x, y in pipe.dataset(epoch=0): ...
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from tfcustom.data.augment import augment_batch, parse_augment
from tfcustom.data.sources import Split
from tfcustom.errors import check, check_positive_int


def split_validation(train: Split, num_validation: int = 5000, seed: int = 0):
    """Carve a validation split out of ``train``, deterministic given ``seed``.

    Args:
      train: the training [`Split`][tfcustom.data.Split].
      num_validation: examples held out, in ``[0, len(train))``.
      seed: chooses them.

    Returns:
      ``(train, validation)``, both in their original order; ``validation``
      is None if ``num_validation`` is 0.

    Examples:
        >>> split = Split(np.zeros((10, 2, 2, 1), np.uint8), np.arange(10))
        >>> train, val = split_validation(split, num_validation=3, seed=0)
        >>> len(train), len(val), sorted(train.y.tolist() + val.y.tolist()) == list(range(10))
        (7, 3, True)
    """
    check(
        isinstance(num_validation, int) and 0 <= num_validation < len(train),
        "validation size must be in [0, number of training examples)",
        num_validation,
        f"pass a validation size below {len(train)}",
    )
    if num_validation == 0:
        return train, None
    order = np.random.default_rng(seed).permutation(len(train))
    val_idx, train_idx = np.sort(order[:num_validation]), np.sort(order[num_validation:])
    return Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx])


def normalize_images(x):
    """uint8 images -> float32 in [0, 1]; other inputs are cast to float32 as they are.

    Token ids included: Keras' Embedding casts them back. A dict or tuple of inputs
    (a multi-input model) is normalised input by input.

    Args:
      x: a tensor, or a dict / list / tuple of tensors.

    Returns:
      ``x`` as float32, of the same structure: uint8 divided by 255, other
      dtypes unscaled.

    Examples:
        >>> normalize_images(tf.constant([0, 51, 255], tf.uint8)).numpy()
        array([0. , 0.2, 1. ], dtype=float32)
        >>> normalize_images({"ids": tf.constant([3, 7])})["ids"].numpy()
        array([3., 7.], dtype=float32)
    """
    if isinstance(x, (dict, list, tuple)):
        return tf.nest.map_structure(normalize_images, x)
    if x.dtype == tf.uint8:
        return tf.cast(x, tf.float32) / 255.0
    return tf.cast(x, tf.float32)


def _replica_batches(indices: np.ndarray, global_batch: int, ctx: tf.distribute.InputContext, drop_remainder: bool) -> tf.data.Dataset:
    """This input pipeline's per-replica index batches, in the order the
    strategy hands them to its replicas.

    Every global batch (``global_batch`` consecutive indices) is cut into one
    contiguous chunk per replica; pipeline ``p`` serves replicas ``p*k ..
    p*k+k-1`` (``k`` replicas per pipeline), which take its elements in turn.
    A final partial batch is split as evenly as possible: with a plain
    per-replica ``batch()`` the first replicas would take it all and the last
    ones get empty batches (NaN statistics in BatchNormalization).
    """
    replicas, pipelines, pid = ctx.num_replicas_in_sync, ctx.num_input_pipelines, ctx.input_pipeline_id
    per_pipeline = replicas // pipelines
    chunks = []
    for start in range(0, len(indices), global_batch):
        parts = np.array_split(indices[start:start + global_batch], replicas)
        chunks.extend(parts[pid * per_pipeline:(pid + 1) * per_pipeline])
    flat = np.concatenate(chunks).astype(np.int64) if chunks else np.zeros([0], np.int64)
    if drop_remainder:  # all chunks are full: keep the static batch shape (TPU)
        return tf.data.Dataset.from_tensor_slices(flat).batch(global_batch // replicas, drop_remainder=True)
    lengths = np.array([len(c) for c in chunks], np.int64)
    starts = np.cumsum(lengths) - lengths
    flat = tf.constant(flat)
    return tf.data.Dataset.from_tensor_slices((starts, lengths)).map(lambda s, n: flat[s:s + n])


class EpochInput:
    """What the Trainer reads: ``batch_size`` (global), ``steps_per_epoch``,
    ``len()`` and ``dataset(epoch, skip_batches, input_context)``, an epoch's
    input rebuilt exactly from any batch. [`InputPipeline`][tfcustom.data.pipeline.InputPipeline] (in memory) and
    [`tfcustom.data.streaming.StreamingPipeline`][tfcustom.data.streaming.StreamingPipeline] (TFRecord shards) are the two kinds.

    Examples:
        >>> pipeline = InputPipeline(Split(np.zeros((5, 1, 1, 1), np.uint8), np.arange(5)), batch_size=2)
        >>> isinstance(pipeline, EpochInput), pipeline.batch_size, pipeline.steps_per_epoch, len(pipeline)
        (True, 2, 3, 5)
        >>> [y.numpy().tolist() for _, y in pipeline.dataset(epoch=0, skip_batches=1)]  # resumed after one batch
        [[2, 3], [4]]
    """

    batch_size: int

    def dataset(self, epoch: int = 0, skip_batches: int = 0, input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
        raise NotImplementedError


@dataclasses.dataclass
class InputPipeline(EpochInput):
    """Batched, optionally shuffled ``tf.data`` input over one [`Split`][tfcustom.data.Split].

    Args:
      split: the examples.
      batch_size: the **global** batch size (summed over replicas).
      shuffle: a new seeded order every epoch (training); False keeps file order.
      seed: base seed of the per-epoch orders.
      drop_remainder: drop the final partial batch. Off by default: evaluation
        must see every example.
      cache: cache the normalised examples in memory (useful for evaluation
        pipelines that are read many times).
      augment: augmentations (``("crop", "flip")``, see `tfcustom.data.augment`),
        seeded by (seed, epoch, index of the example in ``split``).
      sample_weight: optional per-example weights (``[N]``); batches are then
        ``(x, y, sample_weight)``, as ``keras.Model.fit(sample_weight=...)``.

    Examples:
        >>> split = Split(np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1), np.arange(10) % 2)
        >>> pipeline = InputPipeline(split, batch_size=4, shuffle=True, seed=0)
        >>> len(pipeline), pipeline.steps_per_epoch  # the final partial batch is kept
        (10, 3)
        >>> [tuple(x.shape) for x, y in pipeline.dataset(epoch=0)]
        [(4, 1, 1, 1), (4, 1, 1, 1), (2, 1, 1, 1)]
    """

    split: Split
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    drop_remainder: bool = False
    cache: bool = False
    augment: Tuple[str, ...] = ()
    sample_weight: Optional[np.ndarray] = None

    def __post_init__(self):
        self.augment = parse_augment(self.augment)
        check_positive_int("batch_size", self.batch_size)
        check(
            self.batch_size <= len(self.split),
            "batch size is larger than the dataset",
            (self.batch_size, len(self.split)),
            f"use a batch size of at most {len(self.split)}",
        )
        if self.sample_weight is not None:
            self.sample_weight = np.asarray(self.sample_weight, np.float32).reshape(-1)
            check(len(self.sample_weight) == len(self.split), "sample_weight must hold one weight per example",
                  (len(self.sample_weight), len(self.split)), "pass an array of shape [number of examples]")
        self._x = None
        self._y = None

    def __len__(self) -> int:
        return len(self.split)

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_remainder else math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Indices of the examples of ``epoch`` in the order they are read."""
        n = len(self.split)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(n).astype(np.int64)

    def _tensors(self):
        if self._x is None:
            with tf.device("/cpu:0"):
                self._x = tf.nest.map_structure(tf.constant, self.split.x)
                self._y = tf.nest.map_structure(tf.constant, self.split.y)
        return self._x, self._y

    def dataset(self, epoch: int = 0, skip_batches: int = 0, input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
        """The input of one epoch, starting after ``skip_batches`` global batches."""
        batch = self.batch_size
        indices = self.order(epoch)
        if self.drop_remainder:
            indices = indices[: self.steps_per_epoch * batch]
        indices = indices[skip_batches * batch:]
        if input_context is not None:
            replicas = input_context.num_replicas_in_sync
            check(
                batch % replicas == 0,
                f"global batch size must divide evenly by the {replicas} replicas",
                batch,
                f"use a multiple of {replicas}",
            )
            ids = _replica_batches(indices, batch, input_context, self.drop_remainder)
        else:
            ids = tf.data.Dataset.from_tensor_slices(indices).batch(batch, drop_remainder=self.drop_remainder)
        x, y = self._tensors()
        augment, seed = self.augment, self.seed
        weights = None
        if self.sample_weight is not None:
            with tf.device("/cpu:0"):
                weights = tf.constant(self.sample_weight)

        def examples(i):
            images = tf.nest.map_structure(lambda a: tf.gather(a, i), x)
            if augment:
                images = augment_batch(images, i, epoch, seed, augment)
            if weights is None:
                return normalize_images(images), tf.nest.map_structure(lambda a: tf.gather(a, i), y)
            return normalize_images(images), tf.nest.map_structure(lambda a: tf.gather(a, i), y), tf.gather(weights, i)

        ds = ids.map(examples, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.cache and not self.shuffle:
            ds = ds.cache()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        options.deterministic = True
        # No autotuning model thread: TensorFlow's deletion of an autotuned iterator (each epoch's,
        # each evaluation's) waits for the thread's next optimization, up to the iterator's age
        # (60 s at most): its cancellation wake-up is lost. Without it the map runs min(16, CPUs)
        # calls at once (tf.data's starting value) and the prefetch buffer keeps its own sizing.
        options.autotune.enabled = False
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
