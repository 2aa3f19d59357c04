"""Train a tfcustom config from the command line.

    python examples/train.py --flagfile=configs/fashion_mnist_cnn.flags
    python examples/train.py --model=mlp --epochs=3 --output_dir=runs/mlp

Flags are parsed into a ``tfcustom.TrainConfig`` and passed to
``tfcustom.train_and_evaluate`` (see tfcustom/cli/train.py for the flags).
"""

from tfcustom.cli.train import run

if __name__ == "__main__":
    run()
