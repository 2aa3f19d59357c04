"""Training throughput, like with like: keras.Model.fit, the tfcustom Trainer and a hand-written loop.

One run, variants interleaved over rounds (this VM's speed drifts over
minutes), best and median round of each reported. Same model, data tensors,
batch size and optimizer (Adam) for every variant of a model. Per model:

* ``fit`` and ``Trainer`` at the **same** ``steps_per_execution`` and
  ``jit_compile`` (both with and without XLA), and a minimal hand-written
  ``tf.function`` loop at the same settings (the floor of loop overhead);
  the Trainer here reads the same in-memory float tensors as ``fit``.
* Each side's **defaults**: ``compile()``/``fit()`` as they come
  (``steps_per_execution=1``, ``jit_compile="auto"``) vs the Trainer at
  ``TrainConfig``'s defaults (``steps_per_execution=1``, jit_compile and
  precision chosen by :func:`tfcustom.experiment.autotune.tune`).
* Input pipeline cost: the Trainer on ``tfcustom.data.InputPipeline`` (uint8
  images decoded per batch, shuffled) vs on the in-memory tensors.

Plus a dense float32 matmul (1024^3) in GFLOP/s from the same run, and each
model's achieved GFLOP/s (training FLOPs taken as 3x the forward pass's,
counted by TF's profiler on the traced forward graph).

    python benchmarks/step_throughput.py --models=mlp,mlp_dropout,cnn,resnet --steps=50 --rounds=3 \\
        --json_out=benchmarks/step_throughput.json
    python benchmarks/step_throughput.py --table_from=benchmarks/step_throughput.json --update_readme=docs/guides/performance.md

Results depend on the machine and its load; they are measurements, not assertions.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

from doc_table import replace_between

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["mlp", "mlp_dropout", "cnn", "resnet"], "mlp (no dropout), mlp_dropout (0.2), cnn (default config), resnet.")
flags.DEFINE_integer("steps", 50, "Timed steps per variant and round.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("steps_per_execution", 10, "steps_per_execution of the like-with-like variants.")
flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX directory.")
flags.DEFINE_string("json_out", None, "Write the results as JSON here.")
flags.DEFINE_string("table_from", None, "Only print the Markdown table of this JSON (no measuring).")
flags.DEFINE_string("update_readme", None, "Replace the table between the step_throughput markers of this Markdown file (docs/guides/performance.md).")
flags.DEFINE_string("note", "", "A note stored in the JSON and printed under the table (e.g. 'measured under load').")

MODELS = {
    "mlp": ("MLP 784-256-128-10", "mlp", {"hidden_units": [256, 128]}),
    "mlp_dropout": ("MLP 784-256-128-10, dropout 0.2", "mlp", {"hidden_units": [256, 128], "dropout": 0.2}),
    "cnn": ("CNN (default config)", "cnn", {"filters": [32, 64], "dense_units": 128, "dropout": 0.3, "batch_norm": True}),
    "resnet": ("ResNet (tfcustom default)", "resnet", {}),
}


def matmul_gflops(n=1024, reps=20):
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))

    @tf.function
    def run():
        c = a
        for _ in range(reps):
            c = tf.matmul(c, b) * 1e-3
        return tf.reduce_sum(c)

    run()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        run().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 * reps / best / 1e9


def forward_flops(model, batch):
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec((batch, 28, 28, 1), tf.float32))
    opts = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return model_analyzer.profile(fn.graph, options=opts).total_float_ops


def build_variants(key, x, y, x_uint8):
    import keras
    import tensorflow as tf

    import tfcustom
    from tfcustom.experiment import autotune
    from tfcustom.data import InputPipeline, Split

    _, name, kwargs = MODELS[key]
    bs, spe, n = FLAGS.batch_size, FLAGS.steps_per_execution, len(x)

    def fresh(policy="float32"):
        keras.utils.set_random_seed(0)
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            m = tfcustom.models.get(name, num_classes=10, **kwargs)
            m(tf.zeros((1, 28, 28, 1)))
        finally:
            keras.mixed_precision.set_global_policy(previous)
        return m

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    memory = tf.data.Dataset.from_tensor_slices((x, y)).batch(bs).cache()
    pipe = InputPipeline(Split(x_uint8, y), bs, shuffle=True, seed=0)
    warm = x[: 2 * spe * bs], y[: 2 * spe * bs]
    variants = []

    def add_fit(label, **compile_kwargs):
        m = fresh()
        m.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"], **compile_kwargs)
        m.fit(*warm, batch_size=bs, epochs=1, verbose=0)
        variants.append((label, lambda: m.fit(x, y, batch_size=bs, epochs=1, verbose=0, shuffle=False)))

    def add_trainer(label, data, jit, steps_per_execution, policy="float32"):
        m = fresh(policy)
        opt = tfcustom.distribute.strategy.wrap_optimizer(keras.optimizers.Adam(1e-3), policy)
        t = tfcustom.Trainer(m, loss, opt, ["accuracy"], jit_compile=jit, steps_per_execution=steps_per_execution, verbose=0)
        t.fit(data, 1, steps_per_epoch=2 * spe)  # traced on the timed data's iterator type

        def epoch():
            t.epoch.assign(0)
            t.fit(data, 1)

        variants.append((label, epoch))

    def add_loop(label, jit):
        m = fresh()
        opt = keras.optimizers.Adam(1e-3)
        opt.build(m.trainable_variables)

        def grads(xb, yb):
            with tf.GradientTape() as tape:
                value = loss(yb, m(xb, training=True))
            return tape.gradient(value, m.trainable_variables), value

        grad_fn = tf.function(grads, jit_compile=True) if jit else grads

        @tf.function
        def run(iterator, steps):
            value = tf.constant(0.0)
            for _ in tf.range(steps):
                xb, yb = next(iterator)
                g, value = grad_fn(xb, yb)
                opt.apply_gradients(zip(g, m.trainable_variables))
            return value

        run(iter(memory), tf.constant(2))

        def epoch():
            it = iter(memory)
            for _ in range(n // bs // spe):
                run(it, tf.constant(spe))
            float(run(it, tf.constant(n // bs % spe)))

        variants.append((label, epoch))

    for jit in (False, True):
        tag = f"spe={spe}, jit={jit}"
        add_fit(f"fit {tag}", steps_per_execution=spe, jit_compile=jit)
        add_trainer(f"Trainer {tag}", memory, jit, spe)
        add_loop(f"hand loop {tag}", jit)
    # Defaults: fit as it comes; the Trainer at TrainConfig's defaults (autotune).
    add_fit("fit defaults (spe=1, jit=auto)")
    tuned = autotune.tune(lambda policy: (fresh(policy), loss, tfcustom.distribute.strategy.wrap_optimizer(keras.optimizers.Adam(1e-3), policy)),
                          lambda: memory.repeat(), steps=5, rounds=2, loss_steps=3)
    add_trainer(f"Trainer defaults (spe=1, autotune: jit={tuned.jit_compile}, {tuned.precision})", memory,
                tuned.jit_compile, 1, tuned.precision)
    # Input pipeline cost, at the like-with-like settings without XLA.
    add_trainer(f"Trainer spe={spe}, jit=False, InputPipeline", pipe, False, spe)
    return variants, forward_flops(fresh(), bs), tuned


def measure():
    from tfcustom.data import load

    ds = load("fashion_mnist", FLAGS.data_dir)
    n = FLAGS.steps * FLAGS.batch_size
    x_uint8, y = ds.train.x[:n], ds.train.y[:n].astype("int32")
    x = x_uint8.astype("float32") / 255.0
    gflops_ref = matmul_gflops()
    print(f"dense matmul 1024^3 float32: {gflops_ref:.1f} GFLOP/s", flush=True)
    out = {"batch_size": FLAGS.batch_size, "steps": FLAGS.steps, "rounds": FLAGS.rounds, "note": FLAGS.note,
           "steps_per_execution": FLAGS.steps_per_execution, "matmul_gflops": gflops_ref, "models": []}
    for key in FLAGS.models:
        variants, flops, tuned = build_variants(key, x, y, x_uint8)
        times = {label: [] for label, _ in variants}
        for _ in range(FLAGS.rounds):
            for label, fn in variants:
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
        rows = []
        for label, _ in variants:
            best, median = min(times[label]), statistics.median(times[label])
            rows.append({"variant": label, "best_images_per_s": n / best, "median_images_per_s": n / median,
                         "gflops": 3 * flops * (n / FLAGS.batch_size) / best / 1e9})
            print(f"{key:12s} {label:62s} best {n / best:8.0f} img/s  median {n / median:8.0f}  {rows[-1]['gflops']:.1f} GFLOP/s", flush=True)
        out["models"].append({"model": key, "title": MODELS[key][0], "forward_flops_per_batch": flops,
                              "autotune": tuned.to_dict(), "variants": rows})
        if FLAGS.json_out:  # after each model: a long run that is stopped keeps what it measured
            with open(FLAGS.json_out, "w") as f:
                json.dump(out, f, indent=2)
    return out


def _num(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ")


def table(results) -> str:
    lines = [f"Batch {results['batch_size']}, {results['steps']} steps per round, {results['rounds']} interleaved rounds; "
             f"dense matmul reference **{results['matmul_gflops']:.0f} GFLOP/s** (float32, same run). "
             "Ratio (of best img/s): Trainer and hand loop to `fit` at the same settings, Trainer defaults to `fit` defaults, "
             "Trainer on `InputPipeline` to the Trainer on in-memory tensors; GFLOP/s = 3 x forward FLOPs / best time.",
             "", "| model | variant | best img/s | median img/s | ratio | GFLOP/s |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for m in results["models"]:
        by = {r["variant"]: r for r in m["variants"]}
        first = True
        for r in m["variants"]:
            label = r["variant"]
            ref = None
            if label.endswith(", InputPipeline"):  # input pipeline cost: vs the Trainer on in-memory tensors
                ref = by.get(label.replace(", InputPipeline", ""))
            elif label.startswith(("Trainer spe", "hand loop")):
                ref = by.get("fit " + re.sub(r"^(Trainer|hand loop) ", "", label))
            elif label.startswith("Trainer defaults"):
                ref = next((v for k, v in by.items() if k.startswith("fit defaults")), None)
            ratio = f"{r['best_images_per_s'] / ref['best_images_per_s']:.2f}" if ref else "1.00" if label.startswith("fit") else ""
            lines.append(f"| {m['title'] if first else ''} | {label} | {_num(r['best_images_per_s'])} | "
                         f"{_num(r['median_images_per_s'])} | {ratio} | {r['gflops']:.1f} |")
            first = False
    if results.get("note"):
        lines += ["", f"*{results['note']}*"]
    return "\n".join(lines)


def main(argv):
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    if FLAGS.table_from:
        with open(FLAGS.table_from) as f:
            results = json.load(f)
    else:
        results = measure()
    text = table(results)
    print(text)
    if FLAGS.update_readme:
        replace_between(FLAGS.update_readme, "step_throughput", text)


if __name__ == "__main__":
    app.run(main)
