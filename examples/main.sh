#!/usr/bin/env bash
# The main job: install tfcustom, make sure Fashion-MNIST is present, train the
# default config (configs/fashion_mnist_cnn.flags) and print the test accuracy.
#
#   bash examples/main.sh [extra flags, e.g. --output_dir=runs/mine --overwrite]
#
# TFCUSTOM_SKIP_INSTALL=1 skips the pip install (tfcustom already installed).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${TFCUSTOM_DATA_DIR:-/usr/share/datasets/fashion-mnist}"

if [ "${TFCUSTOM_SKIP_INSTALL:-0}" != 1 ]; then
  python -m pip install -q -e .
fi

if [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$DATA_DIR" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "Fashion-MNIST not found in $DATA_DIR: installing Debian's dataset-fashion-mnist"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  else
    echo "error: Fashion-MNIST not found in $DATA_DIR." >&2
    echo "Install it with 'sudo apt-get install dataset-fashion-mnist', or put the four IDX .gz files" >&2
    echo "(train-images-idx3-ubyte.gz, ...) in a directory and set TFCUSTOM_DATA_DIR to it." >&2
    exit 2
  fi
fi

exec tfcustom-train --flagfile=configs/fashion_mnist_cnn.flags --data_dir="$DATA_DIR" "$@"
