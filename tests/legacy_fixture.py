"""The command and data of the legacy fixtures (tests/fixtures/make_legacy.py, tests/test_legacy_files.py)."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
MODEL_KWARGS = '{"filters": [4, 8], "dense_units": 16, "dropout": 0.1, "batch_norm": true, "test_time_flip": true}'


def args(data_dir, out, epochs):
    return [os.path.join(ROOT, "examples", "train.py"), "--model=cnn", f"--model_kwargs={MODEL_KWARGS}", f"--epochs={epochs}",
            "--batch_size=32", "--validation_size=200", f"--data_dir={data_dir}", f"--output_dir={out}", "--augment=flip",
            "--verbose=0", "--seed=7", "--deterministic", "--checkpoint_every_steps=4", "--tensorboard=false"]


def small_fashion(d, fashion_dir=FASHION_DIR):
    """The tests' small Fashion-MNIST (as conftest's small_idx_dir): first 1200 train, 300 test images."""
    from tfcustom.data import read_idx, write_idx

    os.makedirs(d, exist_ok=True)
    for name, n in (("train", 1200), ("t10k", 300)):
        for kind in ("images-idx3", "labels-idx1"):
            write_idx(os.path.join(d, f"{name}-{kind}-ubyte.gz"), read_idx(os.path.join(fashion_dir, f"{name}-{kind}-ubyte.gz"))[:n])
    return d


def test_images(data_dir):
    from tfcustom.data import read_idx

    return read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))[:16].astype("float32")[..., None] / 255.0
