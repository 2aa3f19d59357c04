"""Data loading (IDX, TFDS, NumPy) and the per-epoch input pipeline."""

from tfcustom.data.idx import read_idx, write_idx
from tfcustom.data.pipeline import InputPipeline, normalize_images, split_validation
from tfcustom.data.sources import (
    DATASET_NAMES,
    Dataset,
    Split,
    from_numpy,
    load,
    load_idx_dataset,
    load_tfds_dataset,
    validate_split,
)

__all__ = [
    "DATASET_NAMES", "Dataset", "InputPipeline", "Split", "from_numpy", "load",
    "load_idx_dataset", "load_tfds_dataset", "normalize_images", "read_idx",
    "split_validation", "validate_split", "write_idx",
]
