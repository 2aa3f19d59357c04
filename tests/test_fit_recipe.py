"""benchmarks/fit_recipe.py (the ``fit`` rows of the time-to-accuracy table) trains the recipe it claims.

The oracle is tfcustom-train's own run of the same flags: its saved model's
config, its checkpoint's optimizer state and step count, its config.json and
its history's learning rates (no TensorFlow code of the fit script is reused to
compute them).
"""

import json
import math
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from process_helpers import wait_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
TINY_CNN = '{"filters": [4, 8], "dense_units": 16, "dropout": 0.0, "batch_norm": true, "test_time_flip": true}'
TRAIN_EXAMPLES, EPOCHS = 600, 2


def _flags(data_dir, out):
    return [f"--flagfile={ROOT}/configs/fashion_mnist_fast.flags", "--seed=0", f"--data_dir={data_dir}",
            f"--train_subset={TRAIN_EXAMPLES}", "--test_subset=200", f"--epochs={EPOCHS}", "--verbose=0",
            f"--model_kwargs={TINY_CNN}", f"--output_dir={out}", "--overwrite"]


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, small_idx_dir):
    """``(tfcustom run dir, fit results)``: the same flags through tfcustom-train and fit_recipe.py, run side by side."""
    tmp = tmp_path_factory.mktemp("fit_recipe")
    ours, fit = str(tmp / "tfcustom"), str(tmp / "fit")
    # One thread pool each: the two tiny runs side by side do not oversubscribe the cores.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT,
               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    commands = [[sys.executable, os.path.join(ROOT, "examples", "train.py"), *_flags(small_idx_dir, ours),
                 "--notensorboard", "--export_formats=", "--target_accuracy=0.5", "--target_accuracy_test"],
                [sys.executable, os.path.join(BENCHMARKS, "fit_recipe.py"), *_flags(small_idx_dir, fit)]]
    logs = [open(tmp / f"stderr{i}.txt", "w+") for i in range(len(commands))]
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env, cwd=ROOT) for c, log in zip(commands, logs)]
    wait_all(procs, deadline_s=240)
    for proc, log in zip(procs, logs):
        log.seek(0)
        assert proc.returncode == 0, log.read()[-3000:]
        log.close()
    with open(os.path.join(fit, "results.json")) as f:
        return ours, json.load(f)


def _read_json(run_dir, name):
    with open(os.path.join(run_dir, name)) as f:
        return json.load(f)


def test_fit_trains_the_model_tfcustom_trains(both_runs):
    ours, fit = both_runs
    with zipfile.ZipFile(os.path.join(ours, "model.keras")) as z:
        saved = json.loads(z.read("config.json"))["config"]
    assert fit["model_config"] == saved  # same class and kwargs: filters, BatchNorm, test-time flip, 10 logits
    assert saved["test_time_flip"] is True and saved["num_classes"] == 10 and saved["filters"] == [4, 8]
    assert fit["parameters"] == _read_json(ours, "results.json")["parameters"]


def test_fit_uses_the_optimizer_schedule_and_steps_of_the_tfcustom_run(both_runs):
    import tensorflow as tf

    ours, fit = both_runs
    config, results = _read_json(ours, "config.json"), _read_json(ours, "results.json")
    reader = tf.train.load_checkpoint(os.path.join(ours, "checkpoints"))
    names = reader.get_variable_to_shape_map()
    iterations = int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
    assert iterations == EPOCHS * math.ceil(TRAIN_EXAMPLES / config["batch_size"])  # all 600 images: validation_size=0
    assert fit["optimizer"]["iterations"] == iterations and fit["steps_per_epoch"] * EPOCHS == iterations
    slots = sorted(names[n] for n in names if n.startswith("optimizer/_variables/"))
    trainable = [n for n in names if n.startswith("optimizer/_trainable_variables/")]
    assert len(slots) == 2 * len(trainable) and fit["optimizer"]["class"] == "Adam"  # Adam: m and v per variable
    assert sorted(s for s in fit["optimizer"]["variable_shapes"] if s) == slots
    steps_per_epoch = iterations // EPOCHS
    warmup_steps = int(config["warmup_epochs"] * steps_per_epoch)
    assert warmup_steps > 0  # the fast config warms up linearly from 0: step 0's rate is the ramp's start, not the peak
    # NumPy oracle of a linear warm-up to the peak, then cosine decay to 0 at the last step.
    peak, decay_steps = config["learning_rate"], iterations - warmup_steps
    steps = np.arange(EPOCHS + 1) * steps_per_epoch  # step 0, then each epoch end
    expected = np.where(steps < warmup_steps, peak * steps / warmup_steps,
                        peak * 0.5 * (1 + np.cos(np.pi * np.minimum(steps - warmup_steps, decay_steps) / decay_steps)))
    assert fit["optimizer"]["learning_rate_step0"] == pytest.approx(expected[0], abs=1e-12)
    np.testing.assert_allclose([r["learning_rate"] for r in fit["history"]], expected[1:], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose([r["learning_rate"] for r in fit["history"]], [r["learning_rate"] for r in results["history"]],
                               rtol=1e-6, atol=1e-9)  # the same cosine schedule over the same number of steps
    assert fit["steps_per_execution"] == config["steps_per_execution"] == 10
    assert fit["loss"] == {"class": "CategoricalCrossentropy", "label_smoothing": pytest.approx(config["label_smoothing"])}
    assert config["precision"] == "mixed_bfloat16"  # the fast config names it; fit must train in it too
    assert (fit["precision"], fit["jit_compile"]) == (results["precision"], results["jit_compile"]) == ("mixed_bfloat16", False)


def test_fit_results_hold_test_accuracy_per_epoch_outside_the_timed_span(both_runs):
    _, fit = both_runs
    assert [r["epoch"] for r in fit["history"]] == list(range(1, EPOCHS + 1))
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and r["time_s"] > 0 for r in fit["history"])
    assert fit["test"]["accuracy"] == fit["history"][-1]["test_accuracy"]
    assert fit["train_time_s"] == pytest.approx(sum(r["time_s"] for r in fit["history"]))


def test_a_setting_plain_fit_cannot_reproduce_is_refused_in_one_line():
    fit_recipe = _benchmark_module("fit_recipe")
    from tfcustom import TrainConfig

    fit_recipe.check_reproducible(TrainConfig())  # the defaults train under fit as they are
    with pytest.raises(SystemExit) as stop:
        fit_recipe.check_reproducible(TrainConfig(ema_decay=0.99, clip_global_norm=1.0))
    assert str(stop.value) == ("error: fit_recipe.py does not reproduce --clip_global_norm=1.0, --ema_decay=0.99 "
                               "under plain keras.Model.fit; drop them")


def test_fit_input_shuffles_and_flips_anew_each_epoch():
    import tensorflow as tf

    fit_recipe = _benchmark_module("fit_recipe")
    from tfcustom.data import InputPipeline, Split

    n = 64
    images = np.tile(np.arange(4, dtype=np.uint8).reshape(1, 1, 4, 1), (n, 2, 1, 1))  # rows 0 1 2 3: a flip reverses them
    pipeline = InputPipeline(Split(images, np.arange(n)), batch_size=16, shuffle=True, seed=3, augment=("flip",))
    dataset = fit_recipe.train_dataset(pipeline, lambda y: y)
    epochs = [[(int(y), bool(x[0, 0, 0] > 0)) for xb, yb in dataset for x, y in zip(xb, yb)] for _ in range(2)]
    for epoch in epochs:
        assert sorted(i for i, _ in epoch) == list(range(n))  # every example once per epoch
        assert 16 < sum(f for _, f in epoch) < 48  # about half mirrored
    assert [i for i, _ in epochs[0]] != [i for i, _ in epochs[1]]  # a new order each epoch
    assert dict(epochs[0]) != dict(epochs[1])  # and new flips
    assert tf.reduce_max(next(iter(dataset))[0]).numpy() == pytest.approx(3 / 255)  # normalised as tfcustom's input


def _benchmark_module(name):
    sys.path.insert(0, BENCHMARKS)
    try:
        return __import__(name)
    finally:
        sys.path.remove(BENCHMARKS)


def _run(variant, seed, train_s, reached_at):
    reached = {f"{t:g}": {"reached": False} for t in (0.91, 0.92, 0.93, 0.935, 0.94)}
    if reached_at is not None:
        reached["0.935"] = {"reached": True, "time_s": reached_at}
    return {"config": "c.flags", "variant": variant, "seed": seed, "train_s": train_s, "test_accuracy": 0.935, "reached": reached}


def test_table_has_fit_rows_and_ratios_over_the_seeds_both_reached(tmp_path):
    tta = _benchmark_module("time_to_accuracy")
    runs = [_run("tfcustom", 0, 100, 40), _run("fit", 0, 125, 50), _run("fit", 1, 125, None), _run("tfcustom", 1, 100, 60)]
    rows = tta.table(runs).splitlines()
    assert rows[0].startswith("| config | variant | time to 91 % |")
    assert rows[2].startswith("| `c.flags` | tfcustom | not reached |") and "| 50 s |" in rows[2]  # mean of 40 and 60
    assert rows[3].startswith("|  | `fit` |") and "| 50 s (1/2 seeds) |" in rows[3]
    assert rows[4] == "|  | tfcustom / `fit` | — | — | — | **0.80** (1 seed) | — |  | **0.80** |"  # 40/50 on seed 0; 200/250
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- time_to_accuracy:begin -->\nold\n<!-- time_to_accuracy:end -->\nafter\n")
    _benchmark_module("doc_table").replace_between(str(page), "time_to_accuracy", "new")
    assert page.read_text() == "before\n<!-- time_to_accuracy:begin -->\nnew\n<!-- time_to_accuracy:end -->\nafter\n"
