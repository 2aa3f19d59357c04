"""TensorBoard summaries, run pictures, step timing and the retrace warning.

Event files are read back with TensorBoard's own loader (the plugin event
multiplexer its server uses) and, in one test, from a ``tensorboard`` server
through its HTTP data API.
"""

import json
import logging
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from log_helpers import absl_info_messages
from process_helpers import free_ports
from tensorflow.python.framework import config as framework_config
from tfcustom.training.steps import op_determinism_enabled
from resume_helpers import ROOT, STEPS_PER_EPOCH, _env, args, latest_step, run, start_and_signal

LOG_EVERY = 5


def load_events(logdir):
    """{run: {tag: [(step, value), ...]}} as TensorBoard's server loads them (all points kept)."""
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem

    mux = pem.EventMultiplexer(tensor_size_guidance={"scalars": 0, "images": 0, "text": 0})
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    out = {}
    for name, tags in mux.Runs().items():
        out[name] = {tag: [(e.step, tf.make_ndarray(e.tensor_proto)) for e in mux.Tensors(name, tag)] for tag in tags["tensors"]}
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_idx_dir):
    """One short run with summaries on (2 epochs of 32 steps, step summaries every 5 steps)."""
    from tfcustom import TrainConfig, train_and_evaluate

    out = tmp_path_factory.mktemp("summaries") / "run"
    config = TrainConfig(model="mlp", model_kwargs={"hidden_units": [32]}, epochs=2, batch_size=32, validation_size=200,
                         data_dir=small_idx_dir, verbose=0, metrics=("accuracy", "ece"), log_every_steps=LOG_EVERY,
                         histograms_every_epochs=2, profile_steps=(3, 4))
    with absl_info_messages() as messages:
        results = train_and_evaluate(config, str(out))
    return out, results, messages, load_events(out / "tensorboard")


def test_epoch_scalars_equal_history(trained):
    out, results, _, events = trained
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2
    for key in history[0]:
        if key == "epoch":
            continue
        run_name, tag = ("validation", "epoch_" + key[4:]) if key.startswith("val_") else ("train", "epoch_" + key)
        points = events[run_name][tag]
        assert [s for s, _ in points] == [0, 1], (key, points)  # Keras' TensorBoard callback: step = epoch index
        np.testing.assert_allclose([float(v) for _, v in points], [r[key] for r in history], rtol=1e-6, err_msg=key)
    assert [s for s, _ in events["train"]["epoch_examples_per_second"]] == [0, 1]
    if op_determinism_enabled():  # set by an earlier test in this process: tf.timestamp is refused
        assert "epoch_input_wait_share" not in events["train"]
    else:
        shares = [float(v) for s, v in events["train"]["epoch_input_wait_share"]]
        assert len(shares) == 2 and all(0.0 <= s <= 1.0 for s in shares)


def test_step_scalars_at_the_logging_steps(trained):
    out, results, _, events = trained
    expected = list(range(LOG_EVERY, 2 * STEPS_PER_EPOCH + 1, LOG_EVERY))
    for tag in ("batch_loss", "batch_accuracy", "batch_learning_rate", "batch_gradient_norm", "batch_examples_per_second"):
        assert [s for s, _ in events["train"][tag]] == expected, tag
    np.testing.assert_allclose([float(v) for _, v in events["train"]["batch_learning_rate"]], 1e-3, rtol=1e-6)
    norms = np.array([float(v) for _, v in events["train"]["batch_gradient_norm"]])
    assert np.all(np.isfinite(norms)) and np.all(norms > 0)
    assert not any(t.startswith("batch_replica_") for t in events["train"])  # one replica: no per-replica shares


def test_histograms_and_profile(trained):
    import keras

    out, _, _, events = trained
    model = keras.models.load_model(out / "model.keras")
    histograms = {t: p for t, p in events["train"].items() if t.startswith("epoch_weights/")}
    assert len(histograms) == len(model.weights)
    assert all(any(t.endswith("/" + v.path) for t in histograms) for v in model.weights)
    assert all([s for s, _ in p] == [1] for p in histograms.values())  # every 2 epochs: after epoch 2 only
    traces = list((out / "tensorboard" / "train" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000


def test_end_of_run_summaries_pictures_and_confusion_counts(trained):
    import keras
    from sklearn.metrics import confusion_matrix

    import tfcustom
    from tfcustom.data import load

    out, results, _, events = trained
    for key, value in results["test"].items():
        np.testing.assert_allclose(float(events["test"]["test_" + key][0][1]), value, rtol=1e-6)
    (step, image), = events["test"]["confusion_matrix"]
    assert step == 1
    width, height = (int(v) for v in image[:2])  # an image summary: [width, height, png...]
    assert tf.io.decode_png(image[2]).shape[:2] == (height, width)
    assert "config" in events["train"] and json.loads(str(events["train"]["config"][0][1].item().decode()).strip("`\n"))["epochs"] == 2
    assert "_hparams_/session_start_info" in events["."]
    for name in ("confusion_matrix.png", "misclassified.png", "reliability.png", "learning_curves.png"):
        png = tf.io.decode_png((out / name).read_bytes())
        assert 300 <= png.shape[1] <= 3000 and 300 <= png.shape[0] <= 3000, (name, png.shape)
    # Counts against scikit-learn on the saved model's predictions.
    test = load("fashion_mnist", str(json.loads((out / "config.json").read_text())["data_dir"])).test
    model = keras.models.load_model(out / "model.keras")
    predicted = model.predict(tfcustom.data.normalize_images(test.x), verbose=0).argmax(-1)
    counts = np.array(results["confusion_matrix"])
    np.testing.assert_array_equal(counts, confusion_matrix(test.y, predicted, labels=range(10)))
    assert counts.sum() == len(test.y) == 300


def test_timing_line_and_no_retrace_warning_in_a_normal_run(trained):
    _, _, messages, _ = trained
    timing = [m for m in messages if " timing: " in m]
    wait = "not measured" if op_determinism_enabled() else "waiting for input"
    assert len(timing) == 2 and all("examples/s" in m and wait in m for m in timing), timing
    assert not [m for m in messages if "was traced" in m]


def _tiny_trainer(trainer_class=None, steps_per_execution=1, data=None):
    import keras

    import tfcustom

    with tf.distribute.get_strategy().scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        optimizer = keras.optimizers.SGD(0.1)
    cls = trainer_class or tfcustom.Trainer
    return cls(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer, verbose=0, steps_per_execution=steps_per_execution)


def _tiny_data(n=40, batch=4):
    from tfcustom.data import InputPipeline, Split

    rng = np.random.default_rng(0)
    return InputPipeline(Split(rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 3, n).astype("int32")), batch)


def test_retrace_warning_fires_when_the_step_is_retraced(caplog):
    import tfcustom

    class PythonNumberSteps(tfcustom.Trainer):
        """The classic mistake: a Python number where the step takes a tensor."""

        def make_train_step(self):
            fn = super().make_train_step().function  # the raw tf.function, without CheckedStep's int -> tensor

            def call(iterator, num_steps):
                return fn(iterator, int(num_steps))

            call.experimental_get_tracing_count = fn.experimental_get_tracing_count
            return call

    data = _tiny_data()  # 10 steps: 3 calls of 3 steps, 1 call of 1 step
    with caplog.at_level(logging.WARNING, logger="absl"):
        _tiny_trainer(steps_per_execution=3).fit(data, epochs=1)
    assert not [r for r in caplog.records if "was traced" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="absl"):
        _tiny_trainer(PythonNumberSteps, steps_per_execution=3).fit(data, epochs=2)
    warnings = [r.getMessage() for r in caplog.records if "was traced" in r.getMessage()]
    assert len(warnings) == 1 and "traced 2 times for 1 input signature" in warnings[0]  # once, not every epoch


@pytest.fixture
def no_op_determinism():
    """tf.timestamp needs op determinism off (an earlier test in this process may have turned it on)."""
    was = op_determinism_enabled()
    framework_config.disable_op_determinism()
    yield
    if was:
        tf.config.experimental.enable_op_determinism()


def test_input_wait_share_sees_a_slow_pipeline(no_op_determinism):
    """A pipeline that sleeps 50 ms per batch, a model that takes microseconds:
    the steps spend most of their time waiting for input."""
    from tfcustom.training.timing import StepTimer

    trainer = _tiny_trainer()
    x = np.zeros((24, 4), "float32")

    def sleep(a, b):
        a = tf.py_function(lambda t: (time.sleep(0.05), t)[1], [a], tf.float32)
        a.set_shape([None, 4])
        return a, b

    slow = tf.data.Dataset.from_tensor_slices((x, np.zeros(24, "int32"))).batch(4).map(sleep)
    iterator = iter(trainer._distribute(slow))
    trainer.train_step(iterator, tf.constant(1))  # traces the step
    timer = StepTimer(4, 24)
    timer.start(0)
    for _ in range(5):
        out = trainer.train_step(iterator, tf.constant(1))
        timer.record(1, out["input_wait_s"])
    assert timer.epoch_summary()["input_wait_share"] > 0.5
    assert float(out["input_wait_s"]) >= 0.04


def test_gradient_norm_is_the_norm_before_clipping():
    """``grad_norm`` against a GradientTape of the mean loss computed here."""
    import keras

    from tfcustom.training.steps import make_train_step

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, 3, 8).astype("int32")
    with tf.GradientTape() as tape:
        value = loss(y, model(x, training=True))
    expected = np.sqrt(sum(np.sum(np.square(g.numpy())) for g in tape.gradient(value, model.trainable_variables)))
    step = make_train_step(model, loss, keras.optimizers.SGD(0.1), clip_global_norm=expected / 10)
    out = step(iter(tf.data.Dataset.from_tensors((x, y))), tf.constant(1))
    np.testing.assert_allclose(float(out["grad_norm"]), expected, rtol=1e-5)


def test_reliability_ece_matches_the_metric():
    from tfcustom.metrics import ExpectedCalibrationError
    from tfcustom.experiment.plots import plot_reliability, reliability_bins

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(200, 5)) * 2
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 5, 200)
    metric = ExpectedCalibrationError(num_bins=10)
    metric.update_state(labels, logits)
    r = reliability_bins(probabilities, labels, num_bins=10)
    np.testing.assert_allclose(r["ece"], float(metric.result()), rtol=1e-5)
    assert r["count"].sum() == 200
    assert plot_reliability(probabilities, labels, num_bins=10).get_axes()


def _http_json(port, path, **params):
    url = f"http://127.0.0.1:{port}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_sigkill_then_resume_leaves_one_point_per_step(tmp_path, small_idx_dir):
    """Summaries written after the restored checkpoint are replaced, not duplicated;
    checked with TensorBoard's loader and through a tensorboard server's HTTP API."""
    out = tmp_path / "killed"
    argv = args(small_idx_dir, out, "--epochs=2", f"--log_every_steps={LOG_EVERY}", "--checkpoint_every_steps=4", "--keep_checkpoints=5")
    code, _, _ = start_and_signal(argv, str(out), signal.SIGKILL, STEPS_PER_EPOCH + 6, 2 * STEPS_PER_EPOCH - 8)
    assert code == -signal.SIGKILL
    # Forget the two newest checkpoints: the event files then certainly hold points after the restored step.
    restored = latest_step(str(out)) - 8  # 8 steps hold a multiple of LOG_EVERY
    index = out / "checkpoints" / "checkpoint"
    lines = index.read_text().splitlines()
    paths = [l.split(": ", 1)[1] for l in lines if l.startswith("all_model_checkpoint_paths:")]
    stamps = [l.split(": ", 1)[1] for l in lines if l.startswith("all_model_checkpoint_timestamps:")]
    kept = [(p, t) for p, t in zip(paths, stamps) if int(re.search(r"ckpt-(\d+)", p).group(1)) <= restored]
    # TF's CheckpointManager lists only the paths that carry a timestamp: keep both.
    index.write_text("\n".join([f'model_checkpoint_path: "ckpt-{restored}"', *(f"all_model_checkpoint_paths: {p}" for p, _ in kept),
                                *(f"all_model_checkpoint_timestamps: {t}" for _, t in kept)]) + "\n")
    for path in (out / "checkpoints").glob("ckpt-*"):
        if int(re.search(r"ckpt-(\d+)", path.name).group(1)) > restored:
            path.unlink()
    before = load_events(out / "tensorboard")["train"]["batch_loss"]
    assert max(s for s, _ in before) > restored
    proc = run(argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"global step {restored}," in proc.stderr
    assert "was traced" not in proc.stderr
    events = load_events(out / "tensorboard")
    for run_name, tags in events.items():
        for tag, points in tags.items():
            steps = [s for s, _ in points]
            assert len(steps) == len(set(steps)), (run_name, tag, steps)
    steps = list(range(LOG_EVERY, 2 * STEPS_PER_EPOCH + 1, LOG_EVERY))
    assert [s for s, _ in events["train"]["batch_loss"]] == steps
    earlier = {s: float(v) for s, v in before if s <= restored}
    assert {s: float(v) for s, v in events["train"]["batch_loss"] if s <= restored} == earlier
    history = json.loads((out / "history.json").read_text())

    # The same through a tensorboard server (its default loader).
    port = free_ports(1)[0]
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", f"--logdir={out / 'tensorboard'}", "--host=127.0.0.1",
                               f"--port={port}", "--reload_interval=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=ROOT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                if {"train", "validation"} <= set(_http_json(port, "/data/runs")):
                    tags = _http_json(port, "/data/plugin/scalars/tags")
                    if "epoch_loss" in tags.get("validation", {}) and "batch_loss" in tags.get("train", {}):
                        break
            except OSError:
                pass
            assert time.time() < deadline and server.poll() is None, "tensorboard did not serve the runs"
            time.sleep(0.5)
        batch = _http_json(port, "/data/plugin/scalars/scalars", run="train", tag="batch_loss")
        assert [p[1] for p in batch] == steps
        for key, run_name, tag in (("loss", "train", "epoch_loss"), ("val_accuracy", "validation", "epoch_accuracy")):
            points = _http_json(port, "/data/plugin/scalars/scalars", run=run_name, tag=tag)
            assert [p[1] for p in points] == [0, 1]
            np.testing.assert_allclose([p[2] for p in points], [r[key] for r in history], rtol=1e-6)
    finally:
        server.kill()
        server.wait(timeout=30)


def test_evaluate_redraws_the_pictures_of_a_run(trained):
    """``examples/evaluate.py --pictures``: the same counts from the saved model as at the end of training."""
    from tfcustom.experiment.plots import redraw_run_pictures

    out, results, _, _ = trained
    (out / "misclassified.png").unlink()
    pictures = redraw_run_pictures(str(out))
    np.testing.assert_array_equal(pictures["counts"], results["confusion_matrix"])
    assert set(pictures) >= {"confusion_matrix", "misclassified", "reliability"}  # the run has the ece metric
    assert tf.io.decode_png((out / "misclassified.png").read_bytes()).shape[0] > 300
