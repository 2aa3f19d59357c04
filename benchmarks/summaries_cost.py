"""Training throughput with TensorBoard summaries on vs off, interleaved.

Two Trainers of the same config (built as ``train_and_evaluate`` builds them),
one with a :class:`tfcustom.summaries.SummaryWriter` and one without, train
one epoch each in turn, ``--rounds`` times, on the first ``--train_examples``
training images (no validation). Reports the median examples/s of each and
their ratio. Interleaving spreads a shared machine's load over both variants.

    python benchmarks/summaries_cost.py --flagfile=configs/fashion_mnist_cnn.flags --rounds=4

Results depend on the machine and its load; they are measurements, not assertions.
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

flags.DEFINE_integer("rounds", 4, "Epochs per variant (alternating; the first epoch of each is untimed warm-up).")
flags.DEFINE_integer("train_examples", 12800, "Training examples per epoch.")


def _trainer(config, dataset, strategy, summary_writer):
    from tfcustom import train as train_lib
    from tfcustom.trainer import Trainer

    model = train_lib.build_model(config, dataset, strategy)
    with strategy.scope():
        optimizer = train_lib.build_optimizer(config, steps_per_epoch=100)
    return Trainer(model, train_lib.build_loss(config), optimizer, list(config.metrics), strategy=strategy, verbose=0,
                   num_classes=dataset.num_classes, steps_per_execution=config.steps_per_execution,
                   jit_compile=config.jit_compile, summary_writer=summary_writer)


def main(argv):
    import numpy as np
    import tensorflow as tf

    from tfcustom.data import InputPipeline, Split, load
    from tfcustom.summaries import SummaryWriter

    config = cli.config_from_flags()
    dataset = load(config.dataset, config.data_dir)
    n = min(flags.FLAGS.train_examples, len(dataset.train))
    train = InputPipeline(Split(dataset.train.x[:n], dataset.train.y[:n]), config.batch_size, shuffle=True, seed=config.seed)
    strategy = tf.distribute.get_strategy()
    logdir = tempfile.mkdtemp(prefix="tfcustom_summaries_cost_")
    writer = SummaryWriter(logdir, config.log_every_steps)
    writer.start(0, 0, config.to_dict())
    trainers = {"off": _trainer(config, dataset, strategy, None), "on": _trainer(config, dataset, strategy, writer)}
    rates = {k: [] for k in trainers}
    try:
        for r in range(flags.FLAGS.rounds + 1):
            for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
                start = time.perf_counter()
                trainers[name].fit(train, epochs=r + 1)
                if r > 0:  # the first epoch traces the step
                    rates[name].append(n / (time.perf_counter() - start))
    finally:
        writer.close()
        shutil.rmtree(logdir, ignore_errors=True)
    on, off = np.median(rates["on"]), np.median(rates["off"])
    print(f"model {config.model} {config.model_kwargs}, batch {config.batch_size}, {n} examples/epoch, "
          f"step summaries every {config.log_every_steps} steps, {flags.FLAGS.rounds} timed epochs each (interleaved)")
    print(f"summaries off: median {off:.0f} examples/s ({', '.join(f'{v:.0f}' for v in rates['off'])})")
    print(f"summaries on:  median {on:.0f} examples/s ({', '.join(f'{v:.0f}' for v in rates['on'])})")
    print(f"on/off throughput ratio: {on / off:.3f}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
