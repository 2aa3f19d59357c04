"""The sidecar evaluator (tfcustom-evaluate --watch, tfcustom.experiment.sidecar) beside a real run.

One 2-process run (module fixture): the trainer (examples/train.py) and the sidecar
(examples/evaluate.py --watch) start together on this machine; the sidecar is SIGKILLed after
its first evaluation and started again. Oracles: the run's checkpoint index (which
checkpoints exist), evaluate_run / examples/evaluate.py --checkpoint=ckpt-N (the same
numbers), the trainer's history (its validation at epoch ends), NumPy (accuracy from the restored
model's logits), the TensorBoard event files. The remaining tests run the library in-process on
copies of that run. The CLI's one-line error for a missing run directory is a command of
docs/guides/sidecar.md (tests/test_readme.py runs it).
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tfcustom.training.checkpoint import listed_checkpoints
from tfcustom.errors import ConfigError
from tfcustom.experiment.sidecar import BEST_MODEL_DIR, SIDECAR_FILE, evaluate_continuously

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", PYTHONPATH=ROOT)
WATCH = ["--split=validation", "--watch_metric=val_accuracy", "--poll_seconds=0.1"]


def _example(name, *args):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", name), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def _train_args(data_dir, out):
    # 400 training examples / batch 32 = 13 steps per epoch, 2 epochs, a checkpoint every 3 steps (and at each epoch end)
    return ["--model=mlp", '--model_kwargs={"hidden_units": [16]}', "--epochs=2", "--batch_size=32", "--train_subset=600",
            "--validation_size=200", f"--data_dir={data_dir}", f"--output_dir={out}", "--verbose=0", "--seed=3",
            "--checkpoint_every_steps=3", "--keep_checkpoints=100", "--export_formats=", "--tensorboard", "--jit_compile=false",
            "--precision=float32"]


def _evaluations(out):
    try:
        with open(os.path.join(out, SIDECAR_FILE)) as f:
            return json.load(f)["evaluations"]
    except (OSError, ValueError, KeyError):
        return {}


def _printed_steps(stdout):
    return [int(s) for s in re.findall(r"^step (\d+) \(ckpt-\d+\):", stdout, re.M)]


@pytest.fixture(scope="module")
def watched(tmp_path_factory, small_idx_dir):
    """The trainer and the sidecar started together; the sidecar killed after one evaluation, then restarted."""
    out = str(tmp_path_factory.mktemp("sidecar") / "run")
    os.makedirs(out)  # the sidecar needs the run directory; the trainer starts a fresh run in an empty one
    trainer = _example("train.py", *_train_args(small_idx_dir, out))
    first = _example("evaluate.py", f"--watch={out}", *WATCH)
    procs = [trainer, first]
    try:
        deadline = time.monotonic() + 240
        while not _evaluations(out) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        trainer_running = trainer.poll() is None
        first.send_signal(signal.SIGKILL)
        first_out, first_err = first.communicate(timeout=60)
        evaluated = sorted(_evaluations(out), key=int)
        assert evaluated, first_err[-3000:]
        second = _example("evaluate.py", f"--watch={out}", *WATCH)
        procs.append(second)
        outputs = {name: p.communicate(timeout=240) for name, p in
                   (("trainer", trainer), ("second", second))}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for name, proc in (("trainer", trainer), ("second", second)):
        assert proc.returncode == 0, outputs[name][1][-3000:]
    return dict(out=out, data_dir=small_idx_dir, first=(first.returncode, first_out), second=outputs["second"][0],
                
                trainer_running=trainer_running)


def _steps_in_index(out):
    return sorted(int(n.split("-")[1]) for n in listed_checkpoints(os.path.join(out, "checkpoints")))


def test_every_checkpoint_evaluated_exactly_once_across_a_sigkill(watched):
    out = watched["out"]
    state = json.load(open(os.path.join(out, SIDECAR_FILE)))
    steps = _steps_in_index(out)
    assert len(steps) >= 8 and watched["first"][0] == -signal.SIGKILL
    assert sorted(int(s) for s in state["evaluations"]) == steps  # none missed
    assert state["skipped"] == [] and state["stopped"] == "results.json"
    printed = _printed_steps(watched["first"][1]) + _printed_steps(watched["second"])
    assert len(printed) == len(set(printed)), printed  # nothing evaluated again after the restart
    assert _printed_steps(watched["second"]) and set(printed) <= set(steps)
    for step, info in state["checkpoints"].items():
        assert info["checkpoint"] == f"ckpt-{step}" and info["examples"] == 200 and info["lag_s"] >= 0

    # TensorBoard: one point per checkpoint at its global step, after the restart's rewrite
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(out, "tensorboard", "eval_sidecar"), size_guidance={"tensors": 0})
    events.Reload()
    points = events.Tensors("evaluation_accuracy_vs_iterations")
    assert [p.step for p in points] == steps
    for p in points:
        assert float(np.asarray(tf_make_ndarray(p.tensor_proto))) == pytest.approx(state["evaluations"][str(p.step)]["val_accuracy"])


def tf_make_ndarray(proto):
    import tensorflow as tf

    return tf.make_ndarray(proto)


def test_best_checkpoint_is_exported(watched):
    import keras

    import tfcustom  # noqa: F401  (registers the models for loading)
    from tfcustom.experiment.export import load_run_model

    out = watched["out"]
    state = json.load(open(os.path.join(out, SIDECAR_FILE)))
    values = [(int(s), m["val_accuracy"]) for s, m in state["evaluations"].items()]
    best_step = min(s for s, v in values if v == max(v for _, v in values))  # the first of the highest, as Keras' save_best_only
    assert state["best"]["step"] == best_step and state["metric"] == "val_accuracy" and state["mode"] == "max"
    exported = keras.models.load_model(os.path.join(out, BEST_MODEL_DIR, "model.keras"))
    restored = load_run_model(out, f"ckpt-{best_step}")
    for a, b in zip(exported.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_metrics_equal_tfcustom_evaluate_on_the_same_checkpoint(watched):
    from tfcustom.data import load, normalize_images, split_validation, subset
    from tfcustom.experiment.export import evaluate_run, load_run_model

    out, data_dir = watched["out"], watched["data_dir"]
    evaluations = _evaluations(out)
    for step in (min(evaluations, key=int), max(evaluations, key=int)):
        logs = evaluate_run(out, f"ckpt-{step}", data_dir, "validation")
        assert evaluations[step] == {"val_loss": logs["loss"], "val_accuracy": logs["accuracy"]}  # the same numbers, exactly

    # NumPy oracle: the accuracy of the restored model's logits on the run's validation split
    config = json.load(open(os.path.join(out, "config.json")))
    train = subset(load("fashion_mnist", data_dir), config["train_subset"]).train
    _, val = split_validation(train, config["validation_size"], config["seed"])
    last = max(evaluations, key=int)
    logits = np.asarray(load_run_model(out, f"ckpt-{last}")(normalize_images(val.x), training=False))
    assert np.mean(logits.argmax(-1) == val.y) == pytest.approx(evaluations[last]["val_accuracy"], abs=1e-6)

    # the trainer's own validation at each epoch end (its history) is the sidecar's at that epoch's last step
    history = json.load(open(os.path.join(out, "history.json")))
    for record, step in zip(history, (13, 26)):
        assert evaluations[str(step)]["val_accuracy"] == pytest.approx(record["val_accuracy"], abs=1e-6)
        assert evaluations[str(step)]["val_loss"] == pytest.approx(record["val_loss"], rel=1e-5)


def _copy(out, dst, results=True):
    shutil.copytree(out, dst, ignore=shutil.ignore_patterns(SIDECAR_FILE, BEST_MODEL_DIR))
    if not results:
        os.remove(os.path.join(dst, "results.json"))
    return str(dst)


def _half_write(ckpt_dir, number):
    """What a save killed halfway leaves: the files of ckpt-<number> (cut short), not in the index."""
    newest = listed_checkpoints(ckpt_dir)[-1]
    for path in glob.glob(os.path.join(ckpt_dir, newest + ".*")):
        data = open(path, "rb").read()
        with open(path.replace(newest, f"ckpt-{number}"), "wb") as f:
            f.write(data[: len(data) // 2])
    os.makedirs(os.path.join(ckpt_dir, f"ckpt-{number}_temp"), exist_ok=True)


def test_half_written_checkpoint_timeout_resume_and_stop_on_results(watched, tmp_path):
    out, data_dir = watched["out"], watched["data_dir"]
    run = _copy(out, tmp_path / "run", results=False)  # a running run: no results.json yet
    ckpt_dir = os.path.join(run, "checkpoints")
    _half_write(ckpt_dir, 999)
    kwargs = dict(split="validation", metric="val_accuracy", data_dir=data_dir, poll_seconds=0.05, export_best=False, verbose=0)
    state = evaluate_continuously(run, timeout=0.5, **kwargs)
    assert state["stopped"] == "timeout"
    assert sorted(int(s) for s in state["evaluations"]) == _steps_in_index(out)  # ckpt-999 is not read
    assert state["evaluations"] == _evaluations(out)  # the same numbers as the watched run's sidecar

    # the save completes (a checkpoint of other weights at step 999: its files, then the index), and the run finishes
    import tensorflow as tf

    from tfcustom.training.checkpoint import model_variables
    from tfcustom.experiment.export import evaluate_run, load_run_model

    model = load_run_model(run, "latest")
    for v in model.trainable_variables:
        v.assign(v * 0.5)
    checkpoint = tf.train.Checkpoint(model_variables=model_variables(model), global_step=tf.Variable(999, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=None).save(checkpoint_number=999)
    shutil.copyfile(os.path.join(out, "results.json"), os.path.join(run, "results.json"))
    again = evaluate_continuously(run, timeout=30, **kwargs)  # resumes from sidecar.json
    assert again["stopped"] == "results.json"
    assert set(again["evaluations"]) == set(state["evaluations"]) | {"999"}
    for step in state["checkpoints"]:  # not evaluated again
        assert again["checkpoints"][step]["evaluated_at"] == state["checkpoints"][step]["evaluated_at"]
    logs = evaluate_run(run, "ckpt-999", data_dir, "validation")
    assert again["evaluations"]["999"] == {"val_loss": logs["loss"], "val_accuracy": logs["accuracy"]}
    assert again["evaluations"]["999"] != again["evaluations"]["26"]


def test_bad_arguments_raise_one_config_error(watched, tmp_path):
    out = watched["out"]
    with pytest.raises(ConfigError, match="run directory does not exist"):
        evaluate_continuously(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="unknown split"):
        evaluate_continuously(out, split="val")
    with pytest.raises(ConfigError, match="timeout must be"):
        evaluate_continuously(out, timeout=0)
    run = _copy(out, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"no metric 'val_accuracy' on the test split.*--split=validation"):
        evaluate_continuously(run, metric="val_accuracy", timeout=1)
    shutil.copyfile(os.path.join(out, SIDECAR_FILE), os.path.join(run, SIDECAR_FILE))
    with pytest.raises(ConfigError, match="sidecar.json was written by a sidecar with another metric"):
        evaluate_continuously(run, split="validation", metric="val_loss", timeout=1)


def test_a_checkpoint_deleted_before_its_evaluation_is_skipped_with_a_warning(watched, tmp_path, capsys):
    """The trainer's --keep_checkpoints deleted a checkpoint the index still listed when the sidecar read it."""
    out, data_dir = watched["out"], watched["data_dir"]
    run = _copy(out, tmp_path / "run")
    ckpt_dir = os.path.join(run, "checkpoints")
    gone = listed_checkpoints(ckpt_dir)[1]
    for path in glob.glob(os.path.join(ckpt_dir, gone + ".*")):
        os.remove(path)
    state = evaluate_continuously(run, split="validation", data_dir=data_dir, poll_seconds=0.05, export_best=False, verbose=0)
    assert state["skipped"] == [gone]
    assert sorted(int(s) for s in state["evaluations"]) == [s for s in _steps_in_index(out) if f"ckpt-{s}" != gone]
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and gone in warnings[0] and "--keep_checkpoints" in warnings[0]
