"""Where examples come from: IDX files, TFDS, or NumPy arrays.

Every source returns a [`Dataset`][tfcustom.data.Dataset] of in-memory NumPy arrays (uint8 or
float images and int32 labels) that the pipeline in
`tfcustom.data.pipeline` turns into ``tf.data`` input.

Examples:
    >>> ds = load("fashion_mnist")          # IDX files from the default directory
    >>> ds.train.x.shape, ds.test.x.shape
    ((60000, 28, 28, 1), (10000, 28, 28, 1))
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from tfcustom.data.dataset import Dataset, Split, validate_split
from tfcustom.data.idx import read_idx
from tfcustom.errors import TfcustomError, check, config_error, data_error

DEFAULT_DATA_DIRS = {
    "fashion_mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "/usr/share/datasets/mnist",
}
DATA_DIR_ENV = "TFCUSTOM_DATA_DIR"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))

# Where the four IDX files come from, and how to point tfcustom at them.
WHERE_TO_GET = {
    "fashion_mnist": ("install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or download the four "
                      "*-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist, then pass --data_dir=DIR "
                      f"(or set ${DATA_DIR_ENV})"),
    "mnist": ("download the four *-ubyte.gz files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
              "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from https://yann.lecun.com/exdb/mnist/ or a mirror "
              f"(e.g. https://ossci-datasets.s3.amazonaws.com/mnist/), then pass --data_dir=DIR (or set ${DATA_DIR_ENV})"),
}

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def resolve_data_dir(name: str, data_dir: Optional[str] = None) -> str:
    """``data_dir`` argument, then ``$TFCUSTOM_DATA_DIR``, then the Debian path."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIRS[name]


def load_idx_dataset(name: str, data_dir: Optional[str] = None) -> Dataset:
    """Load MNIST or Fashion-MNIST from the four IDX ``.gz`` (or plain) files.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: the directory of ``train-images-idx3-ubyte.gz``,
        ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
        ``t10k-labels-idx1-ubyte.gz`` (default ``$TFCUSTOM_DATA_DIR``, then
        ``/usr/share/datasets/<name>``).

    Returns:
      A [`Dataset`][tfcustom.data.Dataset] of 10 classes, uint8 images ``(N, 28, 28, 1)``.

    Raises:
      DataError: the directory or a file is missing, or a file is corrupt.

    Examples:
        >>> import os, tempfile
        >>> from tfcustom.data import write_idx
        >>> d = tempfile.mkdtemp()
        >>> for split, n in (("train", 6), ("t10k", 2)):
        ...     write_idx(os.path.join(d, f"{split}-images-idx3-ubyte.gz"), np.zeros((n, 28, 28), np.uint8))
        ...     write_idx(os.path.join(d, f"{split}-labels-idx1-ubyte.gz"), np.arange(n, dtype=np.uint8))
        >>> ds = load_idx_dataset("mnist", data_dir=d)
        >>> ds.train.x.shape, ds.test.y.tolist(), ds.class_names[:3]
        ((6, 28, 28, 1), [0, 1], ('0', '1', '2'))
        >>> os.remove(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))
        >>> load_idx_dataset("mnist", data_dir=d)
        Traceback (most recent call last):
        ...
        tfcustom.errors.DataError: mnist: file t10k-labels-idx1-ubyte.gz is missing from ... Download the four *-ubyte.gz files ...
    """
    check(name in DEFAULT_DATA_DIRS, "no IDX layout known for dataset", name, "use 'fashion_mnist' or 'mnist'")
    directory = resolve_data_dir(name, data_dir)
    if not os.path.isdir(directory):
        raise data_error(f"{name} data directory does not exist", directory, WHERE_TO_GET[name])
    splits = {}
    for split, (img_base, lbl_base) in IDX_FILES.items():
        paths = []
        for base in (img_base, lbl_base):
            candidates = [os.path.join(directory, base + ext) for ext in (".gz", "")]
            found = next((p for p in candidates if os.path.isfile(p)), None)
            if found is None:
                raise data_error(
                    f"{name}: file {base}.gz is missing from {directory}",
                    sorted(os.listdir(directory)),
                    WHERE_TO_GET[name],
                )
            paths.append(found)
        images = read_idx(paths[0], expected_ndim=3, expected_dtype=np.uint8, what=f"{name} images")
        labels = read_idx(paths[1], expected_ndim=1, expected_dtype=np.uint8, what=f"{name} labels")
        if images.shape[0] != labels.shape[0]:
            raise data_error(
                f"{name}: {os.path.basename(paths[0])} and {os.path.basename(paths[1])} hold different numbers of examples",
                (images.shape[0], labels.shape[0]),
                "the files come from different datasets or one is corrupt; reinstall them",
            )
        splits[split] = validate_split(Split(images, labels), 10, f"{name} {split} ({paths[1]})")
    classes = FASHION_MNIST_CLASSES if name == "fashion_mnist" else MNIST_CLASSES
    return Dataset(name, splits["train"], splits["test"], 10, classes)


#: Where TFDS downloads from; probed (a TCP connection, a few seconds at most) before a download.
TFDS_PROBE_ADDRESS = ("storage.googleapis.com", 443)


def network_reachable(address=TFDS_PROBE_ADDRESS, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``address`` succeeds within ``timeout`` seconds."""
    import socket

    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def _tfds_load(tfds, builder, name, split, data_dir):
    """``tfds.load`` from the prepared data; download only if it is not there and a network is."""
    try:
        return tfds.load(name, split=split, data_dir=data_dir, download=False)
    except Exception:  # not prepared (TFDS raises AssertionError and friends)
        pass
    if not network_reachable():
        where = data_dir or getattr(builder, "_data_dir_root", None) or "~/tensorflow_datasets"
        raise data_error(
            f"TFDS dataset {name} is not prepared in the TFDS data dir and no network is reachable to download it", where,
            f"run `tfds build {name}` on a machine with a network, copy its data dir here and pass --data_dir")
    return tfds.load(name, split=split, data_dir=data_dir, download=True)


def load_tfds_dataset(name: str, data_dir: Optional[str] = None, image_key: str = "image", label_key: str = "label") -> Dataset:
    """Load any TFDS dataset with (image, label) features into memory.

    Downloads through TFDS when the data is not prepared in ``data_dir``
    (which needs a network). Uses the ``train`` and ``test`` splits.

    Args:
      name: the TFDS name, e.g. ``"cifar10"``.
      data_dir: the TFDS data directory (default: TFDS's, ``~/tensorflow_datasets``).
      image_key: the feature holding the images.
      label_key: the feature holding the labels (a ``ClassLabel``: it gives
        ``num_classes`` and ``class_names``).

    Returns:
      A [`Dataset`][tfcustom.data.Dataset] in memory.

    Raises:
      ConfigError: unknown dataset, or no such feature.
      DataError: a split cannot be loaded (e.g. not prepared and no network).

    Examples:
        TFDS's mock data (random examples of the real shapes) stands in for a download here:

        >>> import tensorflow_datasets as tfds
        >>> with tfds.testing.mock_data(num_examples=4):
        ...     ds = load_tfds_dataset("mnist")
        >>> ds.train.x.shape, ds.train.x.dtype, ds.train.y.dtype, ds.num_classes
        ((4, 28, 28, 1), dtype('uint8'), dtype('int32'), 10)
        >>> load_tfds_dataset("no_such_dataset")
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: unknown TFDS dataset (DatasetNotFoundError) (received: 'no_such_dataset'). Use a name from `tfds.list_builders()`.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends
        raise config_error(f"unknown TFDS dataset ({type(e).__name__})", name, "use a name from `tfds.list_builders()`") from None
    info = builder.info
    for key in (image_key, label_key):
        check(key in info.features, f"TFDS dataset {name} has no feature '{key}'", list(info.features), "choose a dataset with image and label features")
    num_classes = int(info.features[label_key].num_classes)
    class_names = list(info.features[label_key].names)
    splits = {}
    for split in ("train", "test"):
        try:
            ds = _tfds_load(tfds, builder, name, split, data_dir)
        except TfcustomError:
            raise
        except Exception as e:
            raise data_error(
                f"could not load split '{split}' of TFDS dataset {name} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                data_dir,
                "check the network and that the dataset has train and test splits, or prepare it elsewhere and pass its --data_dir",
            ) from None
        # The whole split in one tf.data batch: decoded in tf.data, no Python loop over examples.
        arrays = tfds.as_numpy(ds.batch(2**31 - 1).get_single_element())
        splits[split] = validate_split(Split(arrays[image_key], arrays[label_key]), num_classes, f"TFDS {name} {split}")
    return Dataset(name, splits["train"], splits["test"], num_classes, class_names)


def check_images(x: np.ndarray, where: str) -> None:
    """The one rule for in-memory images: ``uint8`` (0..255, scaled by 1/255 in the
    input pipeline) or floating point already in [0, 1] (used as they are).
    Other integer types and floats outside [0, 1] are refused: the model would
    silently see values of another scale than Fashion-MNIST's."""
    if x.dtype == np.uint8:
        return
    if not np.issubdtype(x.dtype, np.floating):
        raise data_error(f"{where}: images must be uint8 (0..255) or floats in [0, 1]", str(x.dtype),
                         "convert 0..255 pixel values with x.astype(np.uint8), or scale them to floats in [0, 1]")
    if x.size:
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (0.0 <= lo and hi <= 1.0):
            raise data_error(f"{where}: float images must lie in [0, 1]", (lo, hi),
                             "divide 0..255 pixel values by 255 (or pass them as uint8), or pass check_range=False "
                             "for inputs you standardized on purpose")


def from_numpy(x_train, y_train, x_test, y_test, num_classes: Optional[int] = None, class_names=None, name: str = "numpy",
               check_range: bool = True) -> Dataset:
    """Wrap in-memory arrays as a [`Dataset`][tfcustom.data.Dataset] (labels validated).

    Args:
      x_train: training images, ``uint8`` (scaled to [0, 1] by the input
        pipeline) or floats in [0, 1]; other integer types and floats outside
        [0, 1] raise a [`DataError`][tfcustom.errors.DataError] unless ``check_range=False``.
      y_train: integer labels in ``[0, num_classes)``.
      x_test: test images, of the training images' shape.
      y_test: test labels.
      num_classes: default: the largest label + 1.
      class_names: default: ``"0"``, ``"1"``, ...
      name: the dataset's name in messages and results.
      check_range: False for inputs you standardised on purpose.

    Returns:
      The [`Dataset`][tfcustom.data.Dataset].

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> ds = from_numpy(rng.integers(0, 255, (8, 4, 4, 1), dtype=np.uint8), rng.integers(0, 3, 8),
        ...                 rng.integers(0, 255, (2, 4, 4, 1), dtype=np.uint8), np.array([0, 2]), num_classes=3)
        >>> ds.num_classes, ds.class_names
        (3, ['0', '1', '2'])
        >>> from_numpy(np.full((2, 1), 7.0), [0, 1], np.zeros((1, 1)), [0])
        Traceback (most recent call last):
        ...
        tfcustom.errors.DataError: ...
    """
    if check_range:
        check_images(np.asarray(x_train), f"{name} train")
        check_images(np.asarray(x_test), f"{name} test")
    if num_classes is None:
        num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
    class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    train = validate_split(Split(np.asarray(x_train), np.asarray(y_train)), num_classes, f"{name} train")
    test = validate_split(Split(np.asarray(x_test), np.asarray(y_test)), num_classes, f"{name} test")
    if train.x.shape[1:] != test.x.shape[1:]:
        raise data_error("train and test examples differ in shape", (train.x.shape[1:], test.x.shape[1:]), "pass arrays of the same example shape")
    return Dataset(name, train, test, num_classes, class_names)


def subset(ds: Dataset, train: Optional[int] = None, test: Optional[int] = None) -> Dataset:
    """``ds`` with only its first ``train`` training and ``test`` test examples.

    To try a config in seconds (``--train_subset=2000 --test_subset=500``).

    Args:
      ds: a [`Dataset`][tfcustom.data.Dataset].
      train: training examples kept (None: all).
      test: test examples kept (None: all).

    Returns:
      A new [`Dataset`][tfcustom.data.Dataset]; ``ds`` is unchanged.

    Examples:
        >>> ds = from_numpy(np.zeros((10, 2, 2, 1), np.uint8), np.arange(10) % 2, np.zeros((4, 2, 2, 1), np.uint8), [0, 1, 0, 1])
        >>> small = subset(ds, train=6)
        >>> len(small.train), len(small.test)
        (6, 4)
    """
    def first(split: Split, n: Optional[int]) -> Split:
        return split if n is None or n >= len(split) else Split(split.x[:n], split.y[:n])

    return dataclasses.replace(ds, train=first(ds.train, train), test=first(ds.test, test))


def load(name: str, data_dir: Optional[str] = None):
    """Load a dataset by name.

    Args:
      name: ``fashion_mnist`` / ``mnist`` (IDX files), ``tfds:<name>`` (e.g.
        ``tfds:cifar10``, through TFDS) or ``tfrecord:DIR`` (converted shards).
      data_dir: where the files are (default ``$TFCUSTOM_DATA_DIR``, then
        ``/usr/share/datasets/<name>``).

    Returns:
      A [`Dataset`][tfcustom.data.Dataset] in memory, or for ``tfrecord:DIR`` a
      [`ShardedDataset`][tfcustom.data.ShardedDataset] (streamed, not loaded).

    Examples:
        >>> ds = load("fashion_mnist")  # Debian's dataset-fashion-mnist
        >>> ds.train.x.shape, ds.train.x.dtype, ds.class_names[0]
        ((60000, 28, 28, 1), dtype('uint8'), 'T-shirt/top')
    """
    if name.startswith(TFRECORD_PREFIX):
        from tfcustom.data.streaming import ShardedDataset

        return ShardedDataset.open(name[len(TFRECORD_PREFIX):])
    if name in DEFAULT_DATA_DIRS:
        return load_idx_dataset(name, data_dir)
    if name.startswith("tfds:"):
        return load_tfds_dataset(name[len("tfds:"):], data_dir)
    raise config_error("unknown dataset", name, "use 'fashion_mnist', 'mnist' or 'tfds:<name>' (any TFDS image classification dataset)")


DATASET_NAMES = tuple(DEFAULT_DATA_DIRS) + ("tfds:<name>",)
TFRECORD_PREFIX = "tfrecord:"  # tfrecord:DIR, a directory written by `python -m tfcustom.data.convert`
