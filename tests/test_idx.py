import gzip
import os

import numpy as np
import pytest

from tfcustom.data import load, read_idx, write_idx
from tfcustom.errors import ConfigError, DataError


def test_real_fashion_mnist_has_the_published_shape_and_balance(fashion_dir):
    ds = load("fashion_mnist", fashion_dir)
    assert ds.train.x.shape == (60000, 28, 28, 1) and ds.train.x.dtype == np.uint8
    assert ds.test.x.shape == (10000, 28, 28, 1)
    # Fashion-MNIST is balanced: 6000 train and 1000 test images per class.
    assert np.bincount(ds.train.y).tolist() == [6000] * 10
    assert np.bincount(ds.test.y).tolist() == [1000] * 10
    assert ds.class_names[9] == "Ankle boot"


def test_idx_header_is_parsed_independently(fashion_dir):
    path = os.path.join(fashion_dir, "t10k-images-idx3-ubyte.gz")
    raw = gzip.open(path).read()
    # Oracle: the IDX header by hand: magic 0x00000803, then 3 big-endian dims.
    assert int.from_bytes(raw[0:4], "big") == 0x803
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(3)]
    arr = read_idx(path)
    assert list(arr.shape) == dims
    assert arr[0, 14, 10] == raw[16 + 14 * 28 + 10]


def test_round_trip_plain_and_gz(tmp_path, rng):
    for dtype in (np.uint8, np.int32, np.float32):
        a = (rng.random((5, 3, 2)) * 100).astype(dtype)
        for name in ("a.idx", "a.idx.gz"):
            write_idx(str(tmp_path / name), a)
            np.testing.assert_array_equal(read_idx(str(tmp_path / name)), a)


def _copy_dir(src, dst, n_train=None):
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        with open(os.path.join(src, f), "rb") as i, open(os.path.join(dst, f), "wb") as o:
            o.write(i.read())


def test_truncated_gzip_names_the_file(tmp_path, small_idx_dir):
    _copy_dir(small_idx_dir, tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*(corrupt|truncated)"):
        load("fashion_mnist", str(tmp_path))


def test_truncated_body_is_reported(tmp_path, small_idx_dir):
    _copy_dir(small_idx_dir, tmp_path)
    path = str(tmp_path / "t10k-labels-idx1-ubyte.gz")
    raw = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-7])
    with pytest.raises(DataError, match="t10k-labels.*truncated"):
        load("fashion_mnist", str(tmp_path))


def test_bad_magic_and_wrong_dims(tmp_path, small_idx_dir):
    _copy_dir(small_idx_dir, tmp_path)
    path = str(tmp_path / "train-labels-idx1-ubyte.gz")
    raw = bytearray(gzip.open(path).read())
    raw[0] = 7
    with gzip.open(path, "wb") as f:
        f.write(bytes(raw))
    with pytest.raises(DataError, match="bad magic number"):
        load("fashion_mnist", str(tmp_path))
    # Images file where a labels file belongs: wrong number of dimensions.
    write_idx(path, np.zeros((1200, 2, 2), np.uint8))
    with pytest.raises(DataError, match="3 dimensions, expected 1"):
        load("fashion_mnist", str(tmp_path))


def test_labels_out_of_range_and_count_mismatch(tmp_path, small_idx_dir):
    _copy_dir(small_idx_dir, tmp_path)
    y = read_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz")).copy()
    y[3] = 12
    write_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"), y)
    with pytest.raises(DataError, match=r"labels outside \[0, 10\)"):
        load("fashion_mnist", str(tmp_path))
    write_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"), y[:-1] % 10)
    with pytest.raises(DataError, match="different numbers of examples"):
        load("fashion_mnist", str(tmp_path))


def test_missing_dir_file_and_unknown_dataset(tmp_path, small_idx_dir):
    with pytest.raises(DataError, match="does not exist.*apt-get install dataset-fashion-mnist"):
        load("fashion_mnist", str(tmp_path / "nope"))
    _copy_dir(small_idx_dir, tmp_path / "d")
    os.remove(tmp_path / "d" / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is missing"):
        load("fashion_mnist", str(tmp_path / "d"))
    with pytest.raises(ConfigError, match="unknown dataset"):
        load("imagenet_please")


def test_data_dir_env_variable(monkeypatch, small_idx_dir):
    monkeypatch.setenv("TFCUSTOM_DATA_DIR", small_idx_dir)
    assert len(load("fashion_mnist").train) == 1200
