"""The finders of ``--learning_rate=find`` and ``--batch_size=find`` against independent oracles."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom.experiment import batch_finder, lr_finder


def _regression(seed=0, n=1024):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 4)) * np.array([1.0, 0.5, 2.0, 1.0])).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def _build_linear(optimizer=lambda: keras.optimizers.SGD(1e-3)):
    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        return model, keras.losses.MeanSquaredError(), optimizer()
    return build


def _gd_loss(x, y, lr, steps=30):
    """Full-batch gradient descent on the same least-squares problem, in NumPy."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    w, b = np.zeros((x.shape[1], 1)), 0.0
    for _ in range(steps):
        r = x @ w + b - y
        w, b = w - lr * 2 * x.T @ r / len(x), b - lr * 2 * r.mean()
    loss = float(np.mean((x @ w + b - y) ** 2))
    return loss if np.isfinite(loss) else np.inf


@pytest.mark.parametrize("rule", lr_finder.RULES)
def test_the_learning_rate_found_on_a_convex_problem_is_where_the_loss_falls_fastest(rule):
    x, y = _regression()
    batches = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1024, seed=0).batch(64).repeat()
    found = lr_finder.find_learning_rate(_build_linear(), batches, steps=100, rule=rule)
    # Oracle: the Hessian of the mean squared error bounds the stable step
    # sizes (2 / largest eigenvalue); NumPy's gradient descent with each rate
    # of a fine grid gives the rate whose loss falls fastest.
    hessian = 2 * x.T.astype(np.float64) @ x / len(x)
    stable = 2 / np.linalg.eigvalsh(hessian).max()
    grid = np.geomspace(1e-4, stable, 60)
    fastest = grid[int(np.argmin([_gd_loss(x, y, lr) for lr in grid]))]
    assert fastest / 10 <= found.learning_rate < stable, (found.learning_rate, fastest, stable)
    assert _gd_loss(x, y, found.learning_rate) < 0.05 * _gd_loss(x, y, 0.0)
    assert found.learning_rate == (found.steepest if rule == "steepest" else found.min_div_10)


def test_suggest_reads_the_steepest_point_and_a_tenth_of_the_minimum():
    lrs = np.geomspace(1e-5, 1.0, 101)
    t = np.log10(lrs)
    # Falls fastest at lr = 1e-3 (tanh's centre), lowest near 1e-1, then rises.
    curve = 2.0 - np.tanh(2.0 * (t + 3.0)) + 0.5 * np.maximum(t + 1.0, 0.0) ** 2 * 40
    steepest, min_div_10 = lr_finder.suggest(lrs, curve)
    assert steepest == pytest.approx(1e-3, rel=0.15)
    assert min_div_10 == pytest.approx(lrs[int(np.argmin(curve))] / 10)


def test_the_range_test_refuses_a_schedule_in_one_line():
    x, y = _regression(n=256)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
    schedule = lambda: keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9))  # noqa: E731
    with pytest.raises(ValueError, match="constant learning rate"):
        lr_finder.find_learning_rate(_build_linear(schedule), batches, steps=10)


def test_the_range_test_stops_at_divergence_and_plots(tmp_path):
    x, y = _regression(n=256)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
    found = lr_finder.find_learning_rate(_build_linear(), batches, steps=200, max_lr=100.0)
    assert len(found.learning_rates) < 200  # SGD on this problem diverges far below 100
    assert max(found.smoothed) > 4 * min(found.smoothed) or not np.isfinite(found.losses[-1])
    path = lr_finder.plot(found, str(tmp_path / lr_finder.PLOT_FILE))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert lr_finder.LRFinderResult.from_dict(found.to_dict()) == found


@pytest.mark.parametrize("limit, multiple, cap, expected", [(300, 8, 4096, 296), (5000, 8, 1024, 1024), (100, 16, 4096, 96)])
def test_the_batch_finder_backs_off_on_out_of_memory(limit, multiple, cap, expected):
    tried = {}

    def try_batch(batch_size):  # a simulated device that holds at most `limit` examples
        if batch_size > limit:
            raise tf.errors.ResourceExhaustedError(None, None, f"OOM when allocating a batch of {batch_size}")

    found = batch_finder.largest_batch_size(try_batch, start=32, max_batch_size=cap, multiple_of=multiple, tried=tried)
    # Oracle: the largest multiple of `multiple` that is <= min(limit, cap).
    assert found == (min(limit, cap) // multiple) * multiple
    assert found == expected
    assert all(fitted == (int(size) <= limit) for size, fitted in tried.items())


def test_the_batch_finder_says_when_nothing_fits():
    def try_batch(batch_size):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM")

    with pytest.raises(ValueError, match="not even the smallest batch fits"):
        batch_finder.largest_batch_size(try_batch, start=32)


def test_the_fastest_steps_per_execution_needs_to_beat_the_margin():
    seconds = {1: 1.0, 4: 0.97, 16: 0.5, 64: 0.49}  # 64 is within 5 % of 16
    best, times = batch_finder.fastest_steps_per_execution(lambda k: seconds[k], [1, 4, 16, 64])
    assert best == 16 and times["16"] == 0.5


def test_find_batch_size_trains_real_steps_and_keeps_to_the_cap():
    x, y = _regression(n=2048)
    make = lambda b: tf.data.Dataset.from_tensor_slices((x, y)).batch(b, drop_remainder=True).repeat()  # noqa: E731
    found = batch_finder.find_batch_size(_build_linear(), make, train_examples=len(x), start=32, max_batch_size=1024,
                                         steps_per_execution=(1, 4))
    assert found.batch_size == 128  # 2048 / 16: an epoch keeps 16 steps
    assert set(found.tried) == {"32", "64", "128"} and all(found.tried.values())
    assert found.steps_per_execution in (1, 4) and set(found.step_s) == {"1", "4"}


def test_a_run_finds_its_batch_size_and_learning_rate_and_a_resumed_run_reuses_them(tmp_path, small_idx_dir, monkeypatch):
    import json
    import os

    from tfcustom import TrainConfig
    from tfcustom.experiment import autotune
    from tfcustom.experiment import finders
    from tfcustom.experiment.train import train_and_evaluate

    config = TrainConfig(model="mlp", model_kwargs={"hidden_units": [32]}, epochs=1, batch_size="find", learning_rate="find",
                         validation_size=200, data_dir=small_idx_dir, verbose=0)
    run = str(tmp_path / "run")
    results = train_and_evaluate(config, run)
    found = results["autotune"]["finders"]
    # 1000 training examples: the cap is 1000 // 16 = 62, rounded down to a multiple of 8.
    assert found["batch_size"] == 56
    assert found["learning_rate"] == found["lr_finder"]["min_div_10"]
    assert 1e-6 < found["learning_rate"] < 1.0
    # Oracle: the same run at Keras' default learning rate (Adam, 1e-3) learns less in this one short epoch.
    default = train_and_evaluate(config.replace(batch_size=56, learning_rate=1e-3), str(tmp_path / "default"))
    assert results["test"]["accuracy"] > default["test"]["accuracy"] + 0.05, (results["test"], default["test"])
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["batch_size"] == "find"  # what was asked; autotune.json holds what was found
    assert autotune.load(run).finders == found
    assert os.path.getsize(os.path.join(run, "lr_finder.png")) > 1000

    def no_measuring(*args, **kwargs):
        raise AssertionError("a resumed run must not measure again")

    monkeypatch.setattr(finders, "_measure", no_measuring)
    resolved, again = finders.resolve(config, run, resume=True, multi_worker=False, build=no_measuring,
                                      make_batches=no_measuring, train_examples=1000)
    assert again == found and (resolved.batch_size, resolved.learning_rate) == (56, found["learning_rate"])
    assert resolved.steps_per_execution == found["steps_per_execution"]
