"""Size and save time of the training checkpoint of a config (default: the README main job).

Builds the config's model, optimizer and Trainer exactly as ``train_and_evaluate``
does (no training), then times ``CheckpointManager.save`` of the full training
checkpoint (model, optimizer slots, loop position, metrics, early stopping).

    python benchmarks/checkpoint_cost.py --flagfile=configs/fashion_mnist_cnn.flags --saves=10

Results depend on the machine and its disk; they are measurements, not assertions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

import tfcustom.cli.train as cli  # defines the trainer's flags, so --flagfile works here
from tfcustom.cli import parse_flags

flags.DEFINE_integer("saves", 10, "Timed saves (after one untimed save).")


def main(argv):
    import numpy as np
    import tensorflow as tf

    from tfcustom.experiment import train as train_lib
    from tfcustom.training.checkpoint import training_checkpoint
    from tfcustom.data import load
    from tfcustom.callbacks.early_stopping import EarlyStopping
    from tfcustom.training.trainer import Trainer

    config = cli.config_from_flags()
    dataset = load(config.dataset, config.data_dir)
    strategy = tf.distribute.get_strategy()
    model = train_lib.build_model(config, dataset, strategy)
    optimizer = train_lib.build_optimizer(config, steps_per_epoch=100)
    trainer = Trainer(model, train_lib.build_loss(config), optimizer, list(config.metrics), verbose=0,
                      num_classes=dataset.num_classes)
    directory = tempfile.mkdtemp(prefix="tfcustom_ckpt_cost_")
    try:
        manager = tf.train.CheckpointManager(training_checkpoint(trainer, EarlyStopping(config.monitor)), directory, max_to_keep=2)
        manager.save()
        times = []
        for _ in range(flags.FLAGS.saves):
            start = time.perf_counter()
            manager.save()
            times.append(time.perf_counter() - start)
        prefix = os.path.basename(manager.latest_checkpoint)
        size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory) if f.startswith(prefix + "."))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"model {config.model} {config.model_kwargs}: {model.count_params():,} parameters, optimizer {config.optimizer}")
    print(f"checkpoint size {size / 1e6:.2f} MB; save time over {len(times)} saves: "
          f"median {1000 * np.median(times):.0f} ms, min {1000 * min(times):.0f} ms, max {1000 * max(times):.0f} ms")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
