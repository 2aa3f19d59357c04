"""Keras' BatchNormalization vs tfcustom's (fused training kernel): forward + backward.

Times one training call and its gradient (``tf.function``, no XLA) of
``keras.layers.BatchNormalization`` and ``tfcustom.layers.BatchNormalization``
on the activation shapes of the default CNN (batch 128), interleaved over
``--rounds`` rounds; prints best and median per shape and their ratio.

    python benchmarks/batch_norm.py

Results depend on the machine and its load; they are measurements, not assertions.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import tensorflow as tf

from tfcustom.layers import BatchNormalization

SHAPES = [(128, 28, 28, 32), (128, 14, 14, 64), (128, 128)]


def step_fn(layer, shape):
    layer.build(shape)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.relu(layer(x, training=True))
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x] + layer.trainable_variables)

    return step


def time_ms(step, x, calls):
    step(x)[0].numpy()
    start = time.perf_counter()
    for _ in range(calls):
        out = step(x)
    out[0].numpy()
    return (time.perf_counter() - start) / calls * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    for shape in SHAPES:
        x = tf.random.normal(shape)
        steps = {"keras": step_fn(keras.layers.BatchNormalization(), shape), "tfcustom": step_fn(BatchNormalization(), shape)}
        times = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                times[name].append(time_ms(step, x, args.calls))
        k, t = times["keras"], times["tfcustom"]
        print(f"{str(shape):20s} keras best {min(k):6.2f} ms median {statistics.median(k):6.2f} | "
              f"tfcustom best {min(t):6.2f} ms median {statistics.median(t):6.2f} | "
              f"speed-up (median) {statistics.median(k) / statistics.median(t):.2f}x")


if __name__ == "__main__":
    main()
