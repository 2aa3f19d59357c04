"""Data loading (IDX, TFDS, NumPy, sharded TFRecords) and the per-epoch input pipelines."""

from tfcustom.data.idx import read_idx, write_idx
from tfcustom.data.augment import AUGMENTATIONS, augment_batch, parse_augment
from tfcustom.data.pipeline import EpochInput, InputPipeline, normalize_images, split_validation
from tfcustom.data.sources import (
    DATASET_NAMES,
    Dataset,
    Split,
    from_numpy,
    load,
    load_idx_dataset,
    load_tfds_dataset,
    subset,
    validate_split,
)
from tfcustom.data.streaming import ShardedDataset, StreamingPipeline
from tfcustom.data.tfrecord import read_spec

__all__ = [
    "AUGMENTATIONS", "EpochInput", "ShardedDataset", "StreamingPipeline", "augment_batch", "parse_augment", "read_spec",
    "DATASET_NAMES", "Dataset", "InputPipeline", "Split", "from_numpy", "load",
    "load_idx_dataset", "load_tfds_dataset", "normalize_images", "read_idx",
    "split_validation", "subset", "validate_split", "write_idx",
]
