"""The sharded TFRecord format: shards of ``tf.train.Example`` plus ``dataset.json``.

A dataset directory holds, per split, ``<split>-00000-of-000NN.tfrecord``
files and one ``dataset.json`` spec:

    {"format": "tfcustom.tfrecord", "version": 1, "name": "fashion_mnist",
     "image_shape": [28, 28, 1], "image_dtype": "uint8",
     "num_classes": 10, "class_names": [...],
     "splits": {"train": {"num_examples": 60000, "shards": [
         {"file": "train-00000-of-00016.tfrecord", "num_examples": 3750,
          "first_index": 0, "bytes": 3123456, "sha256": "..."}, ...]}, ...},
     "spec_sha256": "..."}

Each record is a ``tf.train.Example`` with ``image`` (the raw bytes of one
C-order array of ``image_shape`` and ``image_dtype``) and ``label`` (int64).
Examples keep their source order: shard ``i`` holds examples
``first_index .. first_index + num_examples - 1`` of the split.

Shards are written atomically (a temporary name, then a rename) and the spec
last, so a directory with a ``dataset.json`` is complete. [`read_spec`][tfcustom.data.tfrecord.read_spec]
checks a directory before anything is trained on it: the spec parses, the
shard files are exactly those listed (none missing, none extra), the per-shard
counts add up, and every shard has its recorded size (a truncated shard is
caught here, cheaply) and, with ``verify="full"`` (the default), its recorded
SHA-256 (any changed byte). ``spec_sha256`` is the SHA-256 of the spec's other
fields (canonical JSON): a spec edited by hand after the conversion is refused
(specs written before it existed are not checked). ``verify="size"`` skips the hashing for very large
datasets; a corrupt record is then still caught when it is read, by the
CRC32C that TFRecord keeps for every record, as a ``DataLossError``.

Examples:
    >>> spec = read_spec("/data/fashion_mnist_tfrecord")
    >>> spec.splits["train"].num_examples
    60000
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from tfcustom.errors import DataError, data_error
from tfcustom.disk_errors import atomic

SPEC_FILE = "dataset.json"
FORMAT = "tfcustom.tfrecord"
VERSION = 1
VERIFY_MODES = ("full", "size")
_SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-\d{5}-of-\d{5}\.tfrecord$")


@dataclasses.dataclass(frozen=True)
class Shard:
    file: str  # absolute path once read
    num_examples: int
    first_index: int
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    num_examples: int
    shards: List[Shard]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """The parsed ``dataset.json`` of a sharded dataset directory."""

    directory: str
    name: str
    image_shape: tuple
    image_dtype: str
    num_classes: int
    class_names: List[str]
    splits: Dict[str, SplitSpec]


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.tfrecord"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def serialize_example(image: np.ndarray, label: int) -> bytes:
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[np.ascontiguousarray(image).tobytes()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path: str, images: np.ndarray, labels: np.ndarray) -> Dict:
    """Write one shard atomically (``<path>.tmp`` then rename); return its spec entry."""
    with atomic(path, f"shard {os.path.basename(path)}") as tmp, tf.io.TFRecordWriter(tmp) as writer:
        for image, label in zip(images, labels):
            writer.write(serialize_example(image, label))
    return {"file": os.path.basename(path), "num_examples": int(len(labels)), "bytes": os.path.getsize(path), "sha256": file_sha256(path)}


def spec_digest(spec: Dict) -> str:
    """The SHA-256 of ``spec`` without its ``spec_sha256`` field, as canonical JSON."""
    body = {k: v for k, v in spec.items() if k != "spec_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def write_spec(directory: str, spec: Dict) -> None:
    path = os.path.join(directory, SPEC_FILE)
    spec = dict(spec, spec_sha256=spec_digest(spec))
    with atomic(path) as tmp, open(tmp, "w") as f:
        json.dump(spec, f, indent=2)
        f.write("\n")


def _bad(directory: str, what: str, received, fix: str = ""):
    return data_error(f"{directory}: {what}", received, fix or f"re-run `python -m tfcustom.data.convert --output_dir={directory} --overwrite`")


def _parse(directory: str, raw: Dict) -> DatasetSpec:
    try:
        if raw.get("format") != FORMAT or raw.get("version") != VERSION:
            raise _bad(directory, f"{SPEC_FILE} is not a {FORMAT} v{VERSION} spec", (raw.get("format"), raw.get("version")))
        splits = {}
        for name, s in raw["splits"].items():
            shards, first = [], 0
            for e in s["shards"]:
                shards.append(Shard(os.path.join(directory, e["file"]), int(e["num_examples"]), int(e.get("first_index", first)), int(e["bytes"]), str(e["sha256"])))
                first += int(e["num_examples"])
            if first != int(s["num_examples"]):
                raise _bad(directory, f"split '{name}': the shard counts add up to {first}, the spec says {s['num_examples']} examples", first)
            splits[name] = SplitSpec(int(s["num_examples"]), shards)
        return DatasetSpec(directory, str(raw.get("name", os.path.basename(directory))), tuple(int(d) for d in raw["image_shape"]),
                           str(np.dtype(raw["image_dtype"])), int(raw["num_classes"]), [str(c) for c in raw["class_names"]], splits)
    except DataError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _bad(directory, f"{SPEC_FILE} lacks a field or has a wrong type ({type(e).__name__}: {e})", SPEC_FILE) from None


def _check_shard(directory: str, shard: Shard, verify: str) -> None:
    if not os.path.isfile(shard.file):
        raise _bad(directory, f"shard {os.path.basename(shard.file)} listed in {SPEC_FILE} is missing", sorted(os.listdir(directory)))
    size = os.path.getsize(shard.file)
    if size != shard.bytes:
        what = "is truncated" if size < shard.bytes else "is longer than recorded"
        raise _bad(directory, f"shard {os.path.basename(shard.file)} {what} ({size} bytes, the spec says {shard.bytes})", size)
    if verify == "full":
        digest = file_sha256(shard.file)
        if digest != shard.sha256:
            raise _bad(directory, f"shard {os.path.basename(shard.file)} fails its checksum (the file changed after it was written)", digest[:16] + "...")


def read_spec(directory: str, splits: Sequence[str] = ("train", "test"), verify: str = "full") -> DatasetSpec:
    """Read and check ``directory/dataset.json`` and the shards of ``splits``.

    Raises [`tfcustom.errors.DataError`][tfcustom.errors.DataError] (one line) on a missing or
    unreadable spec, a missing split, missing or extra shard files, counts
    that do not add up, a truncated shard, or (``verify="full"``) a checksum
    mismatch. The shards are hashed in parallel threads.

    Args:
      directory: a directory written by ``python -m tfcustom.data.convert``.
      splits: the splits whose shards are checked (all must be in the spec).
      verify: ``"full"`` (sizes and SHA-256 checksums) or a cheaper mode of
        ``VERIFY_MODES``.

    Returns:
      The parsed ``DatasetSpec`` (shard paths made absolute).

    Examples:
        >>> import os, tempfile
        >>> from tfcustom.data import from_numpy
        >>> from tfcustom.data.convert import convert
        >>> d = os.path.join(tempfile.mkdtemp(), "tiny")
        >>> ds = from_numpy(np.zeros((6, 2, 2, 1), np.uint8), np.arange(6) % 2, np.zeros((2, 2, 2, 1), np.uint8), [0, 1])
        >>> convert(ds, d, num_shards=2) == os.path.join(d, "dataset.json")
        True
        >>> spec = read_spec(d)
        >>> spec.splits["train"].num_examples, [s.num_examples for s in spec.splits["train"].shards], spec.num_classes
        (6, [3, 3], 2)
        >>> os.remove(spec.splits["test"].shards[0].file)
        >>> read_spec(d)
        Traceback (most recent call last):
        ...
        tfcustom.errors.DataError: ...tiny: split 'test': 1 shard files on disk, 2 in dataset.json (received: ['test-00000-of-00002.tfrecord']). Re-run `python -m tfcustom.data.convert ...`.
    """
    if verify not in VERIFY_MODES:
        raise data_error("unknown shard verification mode", verify, f"use one of: {', '.join(VERIFY_MODES)}")
    if not os.path.isdir(directory):
        raise data_error("TFRecord dataset directory does not exist", directory, "convert a dataset there with `python -m tfcustom.data.convert`")
    path = os.path.join(directory, SPEC_FILE)
    if not os.path.isfile(path):
        raise _bad(directory, f"no {SPEC_FILE} (not a converted dataset, or the conversion did not finish)", sorted(os.listdir(directory))[:10])
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise _bad(directory, f"{SPEC_FILE} cannot be read ({type(e).__name__}: {str(e)[:120]})", path) from None
    spec = _parse(directory, raw)
    if "spec_sha256" in raw and raw["spec_sha256"] != spec_digest(raw):
        raise _bad(directory, f"{SPEC_FILE} was changed after the conversion (its spec_sha256 does not match its content; edited by hand?)", path)
    if len(spec.class_names) != spec.num_classes:
        raise _bad(directory, f"{SPEC_FILE} lists {len(spec.class_names)} class names for {spec.num_classes} classes", spec.class_names[:5])
    on_disk = {}
    for name in os.listdir(directory):
        m = _SHARD_RE.match(name)
        if m:
            on_disk.setdefault(m.group("split"), set()).add(name)
    shards = []
    for split in splits:
        if split not in spec.splits:
            raise _bad(directory, f"{SPEC_FILE} has no '{split}' split", sorted(spec.splits))
        listed = {os.path.basename(s.file) for s in spec.splits[split].shards}
        found = on_disk.get(split, set())
        if found != listed:
            raise _bad(directory, f"split '{split}': {len(found)} shard files on disk, {len(listed)} in {SPEC_FILE}",
                       sorted(found ^ listed)[:5])
        shards.extend(spec.splits[split].shards)
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(shards)))) as pool:
        list(pool.map(lambda s: _check_shard(directory, s, verify), shards))
    return spec


def parse_records(serialized: tf.Tensor, image_shape: Sequence[int], image_dtype: str):
    """A batch of serialized records -> ``(images [B, *image_shape], labels int32 [B])``."""
    parsed = tf.io.parse_example(serialized, {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)})
    images = tf.io.decode_raw(parsed["image"], tf.dtypes.as_dtype(image_dtype))
    images = tf.reshape(images, [-1, *image_shape])
    return images, tf.cast(parsed["label"], tf.int32)
