import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import pytest

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def pytest_configure(config):
    import logging

    logging.getLogger("absl").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def fashion_dir():
    if not os.path.isfile(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz")):
        pytest.fail("Fashion-MNIST is not installed: run `apt-get install -y dataset-fashion-mnist` (.ci/run does)")
    return FASHION_DIR


@pytest.fixture(scope="session")
def small_idx_dir(tmp_path_factory, fashion_dir):
    """A small Fashion-MNIST in IDX .gz files: the first 1200 train and 300 test examples."""
    from tfcustom.data import read_idx, write_idx

    d = tmp_path_factory.mktemp("small_fashion")
    for name, n in (("train", 1200), ("t10k", 300)):
        x = read_idx(os.path.join(fashion_dir, f"{name}-images-idx3-ubyte.gz"))[:n]
        y = read_idx(os.path.join(fashion_dir, f"{name}-labels-idx1-ubyte.gz"))[:n]
        write_idx(str(d / f"{name}-images-idx3-ubyte.gz"), x)
        write_idx(str(d / f"{name}-labels-idx1-ubyte.gz"), y)
    return str(d)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
