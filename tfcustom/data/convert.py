"""Convert a dataset to sharded TFRecords: ``python -m tfcustom.data.convert``, for instance:

    python -m tfcustom.data.convert --dataset=fashion_mnist --output_dir=/tmp/fm_tfrecord --num_shards=16
    tfcustom-train --dataset=tfrecord:/tmp/fm_tfrecord

``--dataset`` is ``fashion_mnist`` / ``mnist`` (IDX files, ``--data_dir``),
``tfds:<name>`` or a NumPy ``.npz`` file with ``x_train``, ``y_train``,
``x_test``, ``y_test`` (and optionally ``class_names``). Each split becomes
``--num_shards`` shards of as equal sizes as possible (at most one example
apart), in source order; see `tfcustom.data.tfrecord` for the format.
A non-empty ``--output_dir`` is refused unless ``--overwrite``.
Exit codes: 0 done, 2 bad flags or data, 75 a full disk or an I/O error
(free space and run the same command again: the shards of an unfinished
conversion, which has no ``dataset.json``, are replaced without ``--overwrite``).

Example (library):

>>> convert("fashion_mnist", "/tmp/fm_tfrecord", num_shards=16)
'/tmp/fm_tfrecord/dataset.json'
"""

from __future__ import annotations

import os
import re
import sys
from typing import Optional

import numpy as np

from tfcustom.data import sources
from tfcustom.data.tfrecord import FORMAT, SPEC_FILE, VERSION, shard_name, write_shard, write_spec
from tfcustom.errors import check, check_positive_int, config_error, data_error
from tfcustom.disk_errors import DiskError, remove

_SHARD_FILE = re.compile(r"^[A-Za-z0-9_]+-\d{5}-of-\d{5}\.tfrecord(\.tmp)?$")
RERUN = "the source data is untouched and the output has no dataset.json (not usable yet): free space and rerun the same command"


def load_source(dataset: str, data_dir: Optional[str] = None) -> sources.Dataset:
    """An IDX / TFDS dataset by name, or an ``.npz`` file, in memory."""
    if dataset.endswith(".npz"):
        if not os.path.isfile(dataset):
            raise data_error("NumPy file does not exist", dataset, "pass the path of an .npz with x_train, y_train, x_test, y_test")
        with np.load(dataset, allow_pickle=False) as f:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f]
            if missing:
                raise data_error(f"{dataset} lacks arrays {missing}", sorted(f.files), "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
            names = [str(c) for c in f["class_names"]] if "class_names" in f else None
            return sources.from_numpy(f["x_train"], f["y_train"], f["x_test"], f["y_test"], class_names=names,
                                      num_classes=len(names) if names else None, name=os.path.splitext(os.path.basename(dataset))[0])
    return sources.load(dataset, data_dir)


def _unfinished(output_dir: str) -> bool:
    """True for what a conversion that stopped (a full disk) leaves: shards, no dataset.json."""
    names = os.listdir(output_dir)
    return SPEC_FILE not in names and all(_SHARD_FILE.match(n) for n in names)


def prepare_output(output_dir: str, overwrite: bool) -> None:
    """Create ``output_dir``; refuse a non-empty one unless ``overwrite``, or it holds
    only the shards of an unfinished conversion (no ``dataset.json``), which are replaced."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise config_error("output path exists and is not a directory", output_dir, "pass another --output_dir")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not overwrite and not _unfinished(output_dir):
            raise config_error("output directory is not empty", output_dir, "choose another --output_dir, or pass --overwrite to replace its content")
        remove(os.path.join(output_dir, n) for n in os.listdir(output_dir))  # its content: the directory may be a mount point
    os.makedirs(output_dir, exist_ok=True)


def convert(dataset, output_dir: str, num_shards: int = 16, overwrite: bool = False, data_dir: Optional[str] = None) -> str:
    """Write ``dataset`` (a name, an ``.npz`` path or a [`tfcustom.data.Dataset`][tfcustom.data.Dataset])
    as sharded TFRecords plus ``dataset.json`` in ``output_dir``; return the spec's path."""
    check_positive_int("num_shards", num_shards)
    ds = dataset if isinstance(dataset, sources.Dataset) else load_source(dataset, data_dir)
    prepare_output(output_dir, overwrite)
    try:
        return _write(ds, output_dir, num_shards)
    except DiskError as e:  # full disk, I/O error: one line (exit 75), no .tmp left
        raise DiskError(f"{e}; {RERUN}") from None


def _write(ds: sources.Dataset, output_dir: str, num_shards: int) -> str:
    x0 = ds.train.x
    spec = {"format": FORMAT, "version": VERSION, "name": ds.name, "image_shape": list(x0.shape[1:]), "image_dtype": str(x0.dtype),
            "num_classes": int(ds.num_classes), "class_names": list(ds.class_names), "splits": {}}
    for split_name, split in (("train", ds.train), ("test", ds.test)):
        check(split.x.dtype == x0.dtype, "train and test images differ in dtype", (str(x0.dtype), str(split.x.dtype)), "convert both splits to one dtype")
        n = min(num_shards, len(split))
        shards, first = [], 0
        for i, idx in enumerate(np.array_split(np.arange(len(split)), n)):
            entry = write_shard(os.path.join(output_dir, shard_name(split_name, i, n)), split.x[idx], split.y[idx])
            entry["first_index"] = first
            first += entry["num_examples"]
            shards.append(entry)
        spec["splits"][split_name] = {"num_examples": len(split), "shards": shards}
    write_spec(output_dir, spec)  # last: a directory with a spec is complete
    return os.path.join(output_dir, SPEC_FILE)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfcustom.data.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, mnist, tfds:<name> or a .npz file")
    parser.add_argument("--data_dir", default=None, help="directory of the IDX files / TFDS data")
    parser.add_argument("--output_dir", required=True, help="where the shards and dataset.json go")
    parser.add_argument("--num_shards", type=int, default=16, help="shards per split (capped at the split's size)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfcustom.errors import TfcustomError

    try:
        path = convert(args.dataset, args.output_dir, args.num_shards, args.overwrite, args.data_dir)
    except TfcustomError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
