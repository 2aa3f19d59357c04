"""Training throughput with TensorBoard summaries on vs off, interleaved.

Two Trainers of the same config (built as ``train_and_evaluate`` builds them),
one with a :class:`tfcustom.callbacks.summaries.SummaryWriter` and one without, train
one epoch each in turn, ``--rounds`` times, on the first ``--train_examples``
training images (no validation). Reports the median examples/s of each and
the median of the per-round on/off ratios (each round runs both, so a
shared machine's drifting load cancels out better than in the medians).
It also times the summary code itself (the Trainer's step-summary hook and
the writer's epoch summaries) as a share of the "on" training time: a
figure that the machine's load hardly disturbs.

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


def _timed(fn, total):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start

    return wrapper


def _trainer(config, dataset, strategy, summary_writer):
    from tfcustom.experiment import train as train_lib
    from tfcustom.training.trainer import Trainer

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
    from tfcustom.callbacks.summaries import SummaryWriter

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
    spent = [0.0]
    for obj, name in ((trainers["on"], "_write_step_summaries"), (writer, "write_epoch")):
        setattr(obj, name, _timed(getattr(obj, name), spent))
    on_time = 0.0
    try:
        for r in range(flags.FLAGS.rounds + 1):
            for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
                start = time.perf_counter()
                trainers[name].fit(train, epochs=r + 1)
                if r > 0:  # the first epoch traces the step
                    rates[name].append(n / (time.perf_counter() - start))
                    on_time += (time.perf_counter() - start) if name == "on" else 0.0
                elif name == "on":
                    spent[0] = 0.0
    finally:
        writer.close()
        shutil.rmtree(logdir, ignore_errors=True)
    on, off = np.median(rates["on"]), np.median(rates["off"])
    print(f"model {config.model} {config.model_kwargs}, batch {config.batch_size}, {n} examples/epoch, "
          f"step summaries every {config.log_every_steps} steps, {flags.FLAGS.rounds} timed epochs each (interleaved)")
    print(f"summaries off: median {off:.0f} examples/s ({', '.join(f'{v:.0f}' for v in rates['off'])})")
    print(f"summaries on:  median {on:.0f} examples/s ({', '.join(f'{v:.0f}' for v in rates['on'])})")
    ratios = [a / b for a, b in zip(rates["on"], rates["off"])]
    print(f"on/off throughput ratio: {on / off:.3f} (medians); per-round ratios {', '.join(f'{v:.3f}' for v in ratios)}, median {np.median(ratios):.3f}")
    print(f"time in the summary code: {spent[0]:.3f} s of {on_time:.1f} s of training with summaries ({100 * spent[0] / on_time:.2f} %)")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
