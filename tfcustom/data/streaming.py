"""Stream sharded TFRecords (`tfcustom.data.tfrecord`) per epoch, per worker and per replica.

A [`StreamingPipeline`][tfcustom.data.streaming.StreamingPipeline] is the streaming twin of
[`tfcustom.data.InputPipeline`][tfcustom.data.InputPipeline]: ``pipeline.dataset(epoch, skip_batches,
input_context)`` builds one epoch's input without holding the split in memory.

**Order of an epoch** = f(seed, epoch): the shards are read in a seeded order
(a permutation of ``(seed, epoch)``), one after the other, and the resulting
stream is shuffled in consecutive *blocks* of ``shuffle_buffer`` examples, each
block by its own seeded permutation. Memory is bounded by one block.
Quality vs a global permutation: an example moves only within its block, so
two examples more than ``shuffle_buffer`` apart in the shard-shuffled stream
never meet in a batch; with shards in random order and a block spanning
several shards (the default 10000 examples = 2.7 shards of 60000/16) batches mix
about three shards, against all 16 for a global permutation. Examples within
a shard keep the converter's order across blocks, so convert from shuffled
data if the source is sorted by class. ``tf.data``'s ``shuffle(buffer)`` has
the same locality, but its order cannot be rebuilt from a step number.

**Exact resume**: the examples before global step ``k`` are known from the
per-shard counts of ``dataset.json``, so ``dataset(epoch, k)`` opens the
stream at the start of the block that holds step ``k``: whole shards before
it are not opened, records within the first shard are skipped (read, not
decoded: TFRecord has no index), and only that one block is re-read.

**Workers and replicas**: with ``P`` input pipelines (one per worker under
``MultiWorkerMirroredStrategy``/TPU), the epoch's stream (shard order as
above) is cut into ``P`` contiguous ranges whose sizes are each pipeline's
share of every global batch, so pipelines read disjoint records and run the
same number of steps. With at least as many shards as pipelines, and shards
and ranges of equal size, a pipeline reads whole shards only (file-level
sharding); otherwise the shards at range boundaries are split into disjoint
record slices. Each pipeline shuffles its own range; each global batch is
then cut per replica as [`InputPipeline`][tfcustom.data.InputPipeline] does, including the final
partial batch (split as evenly as possible), so evaluation counts every
example exactly once. With one input pipeline (one host, any number of
replicas) the global batches do not depend on the replica count.

Examples:
    >>> ds = ShardedDataset.open("/tmp/fm_tfrecord")
    >>> pipe = ds.pipeline("train", batch_size=128, shuffle=True, seed=0)
    >>> for x, y in pipe.dataset(epoch=0, skip_batches=100): ...
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfcustom.data.augment import augment_batch, parse_augment
from tfcustom.data.pipeline import EpochInput, normalize_images
from tfcustom.data.tfrecord import DatasetSpec, Shard, parse_records, read_spec
from tfcustom.errors import check, check_positive_int

READ_BUFFER_BYTES = 1 << 20
READ_CHUNK = 256  # records per batch straight after the read
AUTOTUNE_RAM_BUDGET = 256 << 20  # bytes tf.data's autotuned prefetch buffers may use
READ_AHEAD = 4  # chunks read ahead (in a background thread) within the current shard


def _replica_sizes(total: int, replicas: int) -> List[int]:
    """``np.array_split`` sizes: ``total`` examples over ``replicas`` chunks."""
    return [total // replicas + (r < total % replicas) for r in range(replicas)]


@dataclasses.dataclass
class StreamingPipeline(EpochInput):
    """Batched, optionally shuffled ``tf.data`` input streamed from TFRecord shards.

    Args:
      shards: the split's shards (from [`tfcustom.data.tfrecord.read_spec`][tfcustom.data.tfrecord.read_spec]).
      image_shape: shape of the stored images.
      image_dtype: dtype of the stored images.
      batch_size: the **global** batch size.
      shuffle: seeded shard order and block shuffle per epoch (training).
      seed: base seed of the orders (and of augmentation).
      shuffle_buffer: examples per shuffle block (memory bound).
      drop_remainder: drop the final partial batch (static shapes, TPU).
      keep: optional boolean mask over the split's example ids: only those
        examples are read (a validation carve-out, see [`ShardedDataset.pipelines`][tfcustom.data.streaming.ShardedDataset.pipelines]).
      augment: augmentations (``("crop", "flip")``), seeded by (seed, epoch, example id).

    Examples:
        >>> import os, tempfile
        >>> from tfcustom.data import from_numpy
        >>> from tfcustom.data.convert import convert
        >>> d = os.path.join(tempfile.mkdtemp(), "tiny")
        >>> _ = convert(from_numpy(np.zeros((6, 2, 2, 1), np.uint8), np.arange(6), np.zeros((2, 2, 2, 1), np.uint8), [0, 1]),
        ...             d, num_shards=2)
        >>> pipeline = ShardedDataset.open(d).pipeline("train", batch_size=4)
        >>> len(pipeline), pipeline.steps_per_epoch
        (6, 2)
        >>> [y.numpy().tolist() for _, y in pipeline.dataset(epoch=0)]
        [[0, 1, 2, 3], [4, 5]]
        >>> [y.numpy().tolist() for _, y in pipeline.dataset(epoch=0, skip_batches=1)]  # resumed after one batch
        [[4, 5]]
    """

    shards: Sequence[Shard]
    image_shape: Tuple[int, ...]
    image_dtype: str
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    shuffle_buffer: int = 10000
    drop_remainder: bool = False
    keep: Optional[np.ndarray] = None
    augment: Tuple[str, ...] = ()

    def __post_init__(self):
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("shuffle_buffer", self.shuffle_buffer)
        self.augment = parse_augment(self.augment)
        # Per shard: the raw record offsets of the examples this pipeline reads.
        self._kept = []
        for s in self.shards:
            if self.keep is None:
                self._kept.append(None)
            else:
                self._kept.append(np.flatnonzero(self.keep[s.first_index:s.first_index + s.num_examples]))
        self._counts = np.array([s.num_examples if k is None else len(k) for s, k in zip(self.shards, self._kept)], np.int64)
        check(self.batch_size <= len(self), "batch size is larger than the dataset", (self.batch_size, len(self)), f"use a batch size of at most {len(self)}")

    def __len__(self) -> int:
        return int(self._counts.sum())

    @property
    def steps_per_epoch(self) -> int:
        n = len(self)
        return n // self.batch_size if self.drop_remainder else math.ceil(n / self.batch_size)

    def shard_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.shards))
        return np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.shards))

    def _plan(self, ctx: Optional[tf.distribute.InputContext]):
        """This pipeline's range of the epoch's stream and its per-step replica sizes."""
        replicas = ctx.num_replicas_in_sync if ctx else 1
        pipelines = ctx.num_input_pipelines if ctx else 1
        pid = ctx.input_pipeline_id if ctx else 0
        check(self.batch_size % replicas == 0, f"global batch size must divide evenly by the {replicas} replicas",
              self.batch_size, f"use a multiple of {replicas}")
        k = replicas // pipelines
        n, g = len(self), self.batch_size
        full = n // g
        rem = 0 if self.drop_remainder else n - full * g
        rem_sizes = _replica_sizes(rem, replicas)
        shares = [full * (g // pipelines) + sum(rem_sizes[q * k:(q + 1) * k]) for q in range(pipelines)]
        start = sum(shares[:pid])
        steps = [[g // replicas] * k] * full + ([rem_sizes[pid * k:(pid + 1) * k]] if rem else [])
        return start, shares[pid], steps, g // pipelines

    def read_plan(self, epoch: int = 0, skip_batches: int = 0, input_context=None):
        """The records this pipeline reads: ``[(shard file, first record, number of records, first example id)]``,
        and the block-aligned position (in its range) where reading starts."""
        start, length, steps, per_step = self._plan(input_context)
        pos = min(skip_batches * per_step, length)
        read_from = (pos // self.shuffle_buffer) * self.shuffle_buffer if self.shuffle else pos
        a, b = start + read_from, start + length  # in the epoch's stream of kept examples
        segments, offset = [], 0
        for i in self.shard_order(epoch):
            c = int(self._counts[i])
            lo, hi = max(a, offset) - offset, min(b, offset + c) - offset
            offset += c
            if lo >= hi:
                continue
            kept, shard = self._kept[i], self.shards[i]
            raw_lo, raw_hi = (lo, hi) if kept is None else (int(kept[lo]), int(kept[hi - 1]) + 1)
            segments.append((shard.file, raw_lo, raw_hi - raw_lo, shard.first_index))
        return segments, read_from, pos, steps[skip_batches:]

    def _records(self, segments) -> tf.data.Dataset:
        """Batches of ``(serialized, example id)`` of the segments, in order.

        Everything after the read works on batches of records (per-element
        ``tf.data`` ops cost microseconds each). Shards are read one after the
        other, a few chunks ahead in a background thread: a parallel
        ``interleave`` was not faster on local disk and buffered whole shards
        (+250 MB RSS for 12 KB records).
        """
        if not segments:
            return tf.data.Dataset.from_tensors(self._empty())
        files, starts, lengths, firsts = (list(c) for c in zip(*segments))
        chunk, shape, dtype = READ_CHUNK, self.image_shape, self.image_dtype

        def read(file, start, count, first):
            records = tf.data.TFRecordDataset(file, buffer_size=READ_BUFFER_BYTES).skip(start).take(count).batch(chunk)
            records = records.map(lambda r: parse_records(r, shape, dtype)).prefetch(READ_AHEAD)
            return tf.data.Dataset.zip((records, tf.data.Dataset.range(first + start, first + start + count).batch(chunk)))

        ds = tf.data.Dataset.from_tensor_slices((files, np.array(starts, np.int64), np.array(lengths, np.int64), np.array(firsts, np.int64)))
        ds = ds.flat_map(read).map(lambda parsed, ids: (*parsed, ids))
        if self.keep is not None:
            keep = tf.constant(self.keep)
            ds = ds.map(lambda x, y, ids: tuple(tf.boolean_mask(t, tf.gather(keep, ids)) for t in (x, y, ids)))
        return ds

    def _empty(self):
        return (tf.zeros([0, *self.image_shape], tf.dtypes.as_dtype(self.image_dtype)), tf.zeros([0], tf.int32), tf.zeros([0], tf.int64))

    def _block_shuffle(self, ds: tf.data.Dataset, epoch: int, pid: int, first_block: int) -> tf.data.Dataset:
        seed = int(np.random.default_rng([self.seed, epoch, 2, pid]).integers(0, 2**62))

        def permute(block, examples):
            key = tf.random.stateless_uniform([tf.shape(examples[-1])[0]], seed=tf.stack([tf.constant(seed, tf.int64), block]))
            order = tf.argsort(key, stable=True)
            return tuple(tf.gather(t, order) for t in examples)

        # Sequential map: one block in memory at a time (a parallel map would prefetch blocks).
        return ds.rebatch(self.shuffle_buffer).enumerate(start=first_block).map(permute)

    def replica_records(self, epoch: int = 0, skip_batches: int = 0, input_context=None) -> tf.data.Dataset:
        """Per-replica batches of ``(images, labels, example ids)`` (images as
        stored), in the order the strategy hands them to this pipeline's replicas."""
        segments, read_from, pos, steps = self.read_plan(epoch, skip_batches, input_context)
        ds = self._records(segments)
        if self.shuffle:
            pid = input_context.input_pipeline_id if input_context else 0
            ds = self._block_shuffle(ds, epoch, pid, read_from // self.shuffle_buffer)
            if pos > read_from:  # drop the examples of the first block that come before step skip_batches
                cut = pos - read_from
                ds = ds.enumerate().map(lambda j, b: tf.nest.map_structure(lambda t: t[tf.where(j == 0, cut, 0):], b))
        if not steps:
            return ds.take(0)
        # One batch per replica and step: the sizes of this pipeline's replicas, step by step
        # (rebatch cycles through them). Zero sizes (fewer examples left than replicas) come
        # last; those batches are added empty.
        sizes = [n for step in steps for n in step]
        nonzero = [n for n in sizes if n]
        empty = tf.data.Dataset.from_tensors(self._empty()).repeat(len(sizes) - len(nonzero))
        if len(set(nonzero)) == 1:
            ds = ds.rebatch(nonzero[0])
        else:
            ds = ds.rebatch(np.array(nonzero, np.int64))
        return ds.take(len(nonzero)).concatenate(empty)

    def dataset(self, epoch: int = 0, skip_batches: int = 0, input_context=None) -> tf.data.Dataset:
        """The input of one epoch, starting after ``skip_batches`` global batches."""
        shape, augment, seed = self.image_shape, self.augment, self.seed
        drop = self.drop_remainder and input_context is not None

        def finish(images, labels, ids):
            if augment:
                images = augment_batch(images, ids, epoch, seed, augment)
            if drop:  # static per-replica batch shape (TPU)
                images = tf.ensure_shape(images, [self.batch_size // input_context.num_replicas_in_sync, *shape])
            return normalize_images(images), labels

        ds = self.replica_records(epoch, skip_batches, input_context)
        ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        options.deterministic = True
        options.autotune.ram_budget = AUTOTUNE_RAM_BUDGET  # autotuned buffers would otherwise grow towards half the host's RAM
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class ShardedDataset:
    """A converted dataset directory, opened and checked (``--dataset=tfrecord:DIR``).

    Has the fields of [`tfcustom.data.Dataset`][tfcustom.data.Dataset] that describe the data
    (``name``, ``num_classes``, ``class_names``, ``input_shape``) but no arrays:
    `pipeline` / [`pipelines`][tfcustom.data.streaming.ShardedDataset.pipelines] stream the splits.

    Attributes:
      spec: the checked ``dataset.json`` (from [`read_spec`][tfcustom.data.read_spec]).

    Examples:
        >>> import os, tempfile
        >>> from tfcustom.data import from_numpy
        >>> from tfcustom.data.convert import convert
        >>> d = os.path.join(tempfile.mkdtemp(), "tiny")
        >>> _ = convert(from_numpy(np.zeros((6, 2, 2, 1), np.uint8), np.arange(6) % 2, np.zeros((2, 2, 2, 1), np.uint8), [0, 1]),
        ...             d, num_shards=2)
        >>> ds = ShardedDataset.open(d)
        >>> ds.name, ds.num_classes, ds.input_shape, ds.num_examples("train")
        ('numpy', 2, (2, 2, 1), 6)
        >>> train, val, test = ds.pipelines(batch_size=2, eval_batch_size=lambda n: n, validation_size=2)
        >>> len(train), len(val), len(test)
        (4, 2, 2)
    """

    spec: DatasetSpec

    @classmethod
    def open(cls, directory: str, verify: str = "full") -> "ShardedDataset":
        """Read ``directory/dataset.json`` and check the train and test shards (see [`read_spec`][tfcustom.data.read_spec])."""
        return cls(read_spec(directory, ("train", "test"), verify))

    name = property(lambda self: self.spec.name)
    num_classes = property(lambda self: self.spec.num_classes)
    class_names = property(lambda self: self.spec.class_names)
    input_shape = property(lambda self: self.spec.image_shape)

    def num_examples(self, split: str) -> int:
        return self.spec.splits[split].num_examples

    def pipeline(self, split: str, batch_size: int, **kwargs) -> StreamingPipeline:
        return StreamingPipeline(self.spec.splits[split].shards, self.spec.image_shape, self.spec.image_dtype, batch_size, **kwargs)

    def validation_mask(self, num_validation: int, seed: int) -> Optional[np.ndarray]:
        """True for the training examples held out for validation: the same
        examples [`tfcustom.data.split_validation`][tfcustom.data.split_validation] holds out in memory."""
        n = self.num_examples("train")
        check(isinstance(num_validation, int) and 0 <= num_validation < n, "validation size must be in [0, number of training examples)",
              num_validation, f"pass a validation size below {n}")
        if num_validation == 0:
            return None
        mask = np.zeros(n, bool)
        mask[np.random.default_rng(seed).permutation(n)[:num_validation]] = True
        return mask

    def pipelines(self, batch_size: int, eval_batch_size, validation_size: int = 5000, seed: int = 0,
                  shuffle_buffer: int = 10000, augment: Sequence[str] = ()):
        """``(train, validation or None, test)`` pipelines; ``eval_batch_size(num_examples)`` gives an evaluation batch size."""
        val_mask = self.validation_mask(validation_size, seed)
        train = self.pipeline("train", batch_size, shuffle=True, seed=seed, shuffle_buffer=shuffle_buffer,
                              keep=None if val_mask is None else ~val_mask, augment=augment)
        val = None if val_mask is None else self.pipeline("train", eval_batch_size(validation_size), keep=val_mask)
        test = self.pipeline("test", eval_batch_size(self.num_examples("test")))
        return train, val, test
