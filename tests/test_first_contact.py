"""What a first-time user meets: quiet logs, --help, flag errors, a missing worker,
offline TFDS, wrong IDX element types, a missing MNIST (issue 12, items 5-11).

Each bad input: its one error line, its exit code, and no run left behind that
could pass for a finished one. Subprocesses only where the behaviour is the
process's (exit codes, stderr, signals); the rest in process.
"""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from process_helpers import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "examples", "train.py")
# A TensorFlow C++ log line ("I0000 00:00:... port.cc:153] ...") or TF's Python logger's own copy.
TF_NOISE = re.compile(r"\.cc:\d+\]|^INFO:tensorflow:|^WARNING:tensorflow:|WARNING: All log messages before absl")


def run(*args, env_extra=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFCUSTOM_TF_LOGS", "TF_CONFIG")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def only_error_line(proc):
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith(("error:", "stopped:"))]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


# --- help, flag errors, quiet logs -------------------------------------------------


def test_help_lists_our_flags_grouped_first_and_exits_0_without_tf_lines():
    proc = run("--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not [l for l in proc.stderr.splitlines() if TF_NOISE.search(l)], proc.stderr
    titles = [l[:-1] for l in proc.stdout.splitlines() if re.fullmatch(r"[a-z][a-z ]*:", l)]
    assert titles[:5] == ["data", "model", "optimization", "distribution", "checkpoints and output"], titles
    assert proc.stdout.index("--dataset") < proc.stdout.index("--epochs") < proc.stdout.index("--strategy")
    assert "pfor" not in proc.stdout and "tensor_tracer" not in proc.stdout


def test_helpfull_exits_0_and_adds_absl_and_tf_flags_after_ours():
    proc = run("--helpfull")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.index("--dataset") < proc.stdout.index("absl and TensorFlow flags:") < proc.stdout.index("--verbosity")


@pytest.mark.parametrize("args, env", [(["--help"], {"TFCUSTOM_TF_LOGS": "1"}), (["--help", "--verbosity=1"], {})])
def test_tf_logs_come_back_with_the_switch(args, env):
    proc = run(*args, env_extra=env)
    assert proc.returncode == 0
    assert [l for l in proc.stderr.splitlines() if TF_NOISE.search(l)], proc.stderr


@pytest.mark.parametrize("args, expected", [
    (["--epoch=3"], "error: unknown flag --epoch (received: '--epoch=3'); did you mean --epochs? See --help for the flags."),
    (["--flagfile=configs/nope.flags"], "error: cannot open flagfile (received: 'configs/nope.flags')."),
])
def test_absl_errors_read_as_ours(args, expected, monkeypatch, capsys):
    from absl import flags

    import tfcustom.cli.train  # noqa: F401 - defines the flags
    from tfcustom.cli import parse_flags

    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        parse_flags(["train.py", *args])
    flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l]
    assert len(err) == 1 and err[0].startswith(expected), err


def test_test_time_flip_without_flip_augmentation_exits_2_in_one_line(tmp_path):
    out = tmp_path / "run"
    proc = run("--model=cnn", '--model_kwargs={"test_time_flip": true}', "--augment=crop", f"--output_dir={out}", "--epochs=1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = only_error_line(proc)
    assert "test_time_flip" in line and "--augment=flip" in line, line
    assert not (out / "results.json").exists()


# --- data: IDX element type, float images, MNIST, TFDS offline ---------------------


def _write_fashion(d, images):
    from tfcustom.data import write_idx

    rng = np.random.default_rng(0)
    for name, n in (("train", 60), ("t10k", 20)):
        write_idx(str(d / f"{name}-images-idx3-ubyte.gz"), images[:n])
        write_idx(str(d / f"{name}-labels-idx1-ubyte.gz"), rng.integers(0, 10, n).astype(np.uint8))


def test_signed_byte_images_are_refused_naming_file_and_types(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write_fashion(data, np.random.default_rng(1).integers(-128, 127, (60, 28, 28)).astype(np.int8))
    out = tmp_path / "run"
    proc = run(f"--data_dir={data}", f"--output_dir={out}", "--model=mlp", "--epochs=1", "--validation_size=10")
    assert proc.returncode == 2
    line = only_error_line(proc)
    assert "train-images-idx3-ubyte.gz" in line and "signed byte (0x09)" in line and "unsigned byte (0x08)" in line, line
    assert not (out / "results.json").exists()


def test_float_images_outside_unit_range_are_refused():
    from tfcustom.data import from_numpy
    from tfcustom.errors import DataError

    y = np.array([0, 1, 0, 1])
    with pytest.raises(DataError, match=r"float images must lie in \[0, 1\] \(received: \(0\.0, 255\.0\)\)"):
        from_numpy(np.linspace(0, 255, 4 * 9, dtype=np.float32).reshape(4, 3, 3), y, np.zeros((4, 3, 3), np.float32), y)
    with pytest.raises(DataError, match="must be uint8"):
        from_numpy(np.zeros((4, 3, 3), np.int16), y, np.zeros((4, 3, 3), np.int16), y)
    ds = from_numpy(np.full((4, 3, 3), 0.5, np.float32), y, np.zeros((4, 3, 3), np.float32), y)  # in range: used as is
    assert float(ds.train.x.max()) == 0.5


def test_missing_mnist_says_where_to_get_it_and_how_to_point_at_it(tmp_path):
    from tfcustom.data import load
    from tfcustom.errors import DataError

    with pytest.raises(DataError) as e:
        load("mnist", str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "\n" not in msg and "yann.lecun.com" in msg and "--data_dir" in msg and "TFCUSTOM_DATA_DIR" in msg, msg


def test_tfds_offline_fails_at_once_with_one_short_line(tmp_path, monkeypatch):
    from tfcustom.data import sources
    from tfcustom.errors import DataError

    monkeypatch.setattr(sources, "network_reachable", lambda *a, **k: False)
    start = time.monotonic()
    with pytest.raises(DataError) as e:
        sources.load("tfds:mnist", str(tmp_path / "tfds"))
    line = f"error: {e.value}"
    assert time.monotonic() - start < 60  # a bound against retry loops, not a speed claim
    assert len(line) <= 300 and "\n" not in line, line
    assert "not prepared" in line and "no network" in line and "tfds build mnist" in line, line


# --- multi-worker with a missing worker ------------------------------------------------


def _one_worker_of_two(tmp_path, timeout):
    import json

    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, TRAIN, "--strategy=multi_worker", f"--cluster_timeout={timeout}",
                             f"--output_dir={out}", "--model=mlp", "--epochs=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    return proc, cluster["worker"][1], out


def test_missing_worker_is_named_after_cluster_timeout(tmp_path):
    proc, missing, out = _one_worker_of_two(tmp_path, timeout=4)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert f"waiting for workers [{missing}] to join" in err
    line = only_error_line(subprocess.CompletedProcess([], proc.returncode, "", err))
    assert line.startswith(f"error: workers ['{missing}'] of TF_CONFIG never joined the cluster"), line
    assert not out.exists()


def test_ctrl_c_while_waiting_for_workers_stops_promptly(tmp_path):
    proc, missing, out = _one_worker_of_two(tmp_path, timeout=300)
    err = ""
    for line in proc.stderr:  # wait for the first "waiting" line, then press Ctrl-C
        err += line
        if "waiting for workers" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=30)[1]  # 30 s: bound against a hang, the handler reacts within 0.25 s
    err += rest
    assert proc.returncode == 4, err
    line = only_error_line(subprocess.CompletedProcess([], proc.returncode, "", err))
    assert line.startswith("stopped: SIGINT while waiting for workers") and missing in line, line
    assert not out.exists()


def test_subset_takes_the_first_examples_and_is_validated():
    from tfcustom.experiment.config import TrainConfig
    from tfcustom.data import Split, from_numpy, subset
    from tfcustom.errors import ConfigError

    x = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2)
    y = np.arange(10) % 3
    ds = subset(from_numpy(x, y, x[:6], y[:6]), train=4, test=None)
    np.testing.assert_array_equal(ds.train.x[..., 0], x[:4])
    np.testing.assert_array_equal(ds.train.y, y[:4])
    assert len(ds.test) == 6
    with pytest.raises(ConfigError, match="train_subset must be a positive integer"):
        TrainConfig(train_subset=0).validate()
