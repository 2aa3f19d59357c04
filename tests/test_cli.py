"""The example trainer end to end, as a user runs it (subprocesses)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "examples", "train.py")


def run_trainer(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def small_args(data_dir, out, *extra):
    return ["--model=mlp", "--epochs=2", "--batch_size=64", "--validation_size=200", f"--data_dir={data_dir}",
            f"--output_dir={out}", "--verbose=0", "--seed=3", *extra]


def error_line(proc):
    stderr = proc if isinstance(proc, str) else proc.stderr
    lines = [l for l in stderr.splitlines() if l.startswith("error:") or "Flags parsing error" in l]
    assert lines, stderr[-2000:]
    return lines[-1]


def test_train_writes_a_complete_run_that_reloads(tmp_path, small_idx_dir):
    out = tmp_path / "run"
    proc = run_trainer(*small_args(small_idx_dir, out, "--metrics=accuracy,f1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Test accuracy:" in proc.stdout
    for name in ("config.json", "history.json", "history.csv", "learning_curves.png", "model.keras", "results.json"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert len(results["history"]) == 2 and set(results["test"]) == {"loss", "accuracy", "f1_score"}
    # A fresh process reloads the model with nothing but `import tfcustom`, and its
    # accuracy on the test files (computed with NumPy) is the reported one.
    check = f"""
import numpy as np, keras, tfcustom
from tfcustom.data import load
m = keras.models.load_model({str(out / 'model.keras')!r})
ds = load('fashion_mnist', {small_idx_dir!r})
pred = m.predict(ds.test.x.astype('float32') / 255.0, verbose=0).argmax(1)
print(float(np.mean(pred == ds.test.y)))
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    acc = float(subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, check=True).stdout.split()[-1])
    assert acc == pytest.approx(results["test"]["accuracy"], abs=1e-6)


def test_deterministic_runs_give_identical_histories(tmp_path, small_idx_dir):
    histories = []
    for i in range(2):
        proc = run_trainer(*small_args(small_idx_dir, tmp_path / f"r{i}", "--deterministic", "--model_kwargs={\"dropout\": 0.2}"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = json.loads((tmp_path / f"r{i}" / "history.json").read_text())
        histories.append([{k: v for k, v in r.items() if k != "time_s"} for r in records])
    assert histories[0] == histories[1]


BAD_CONFIGS = [
    (["--model=transformer9000"], "unknown model (received: 'transformer9000'). Choose one of:"),
    (["--optimizer=adamax_pro"], "unknown optimizer"),
    (["--batch_size=5000"], "batch size is larger than the dataset"),
    (["--model_kwargs={\"filterz\": 3}"], "filterz"),
    (["--metrics=accuracy,auc_roc"], "unknown metric"),
    (["--autotune_from=/nonexistent/run"], "no autotune decision to replay"),
]


@pytest.fixture(scope="module")
def bad_config_runs(tmp_path_factory, small_idx_dir):
    """Every BAD_CONFIGS case through the trainer's flag parser and main() in one subprocess
    (tests/cli_config_errors.py; the real process's exit code is tested below): (run dirs, [[code, stderr], ...])."""
    root = tmp_path_factory.mktemp("bad_configs")
    cases = [[str(a) for a in small_args(small_idx_dir, root / str(i), *extra)] for i, (extra, _) in enumerate(BAD_CONFIGS)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "cli_config_errors.py"), json.dumps(cases)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][len("RESULT "):])


@pytest.mark.parametrize("extra, message", BAD_CONFIGS)
def test_bad_config_is_one_clear_line_and_no_run_dir(bad_config_runs, extra, message):
    root, results = bad_config_runs
    i = BAD_CONFIGS.index((extra, message))
    code, stderr = results[i]
    assert code == 2, stderr[-3000:]
    assert message in error_line(stderr)
    assert not (root / str(i) / "results.json").exists()


def test_a_bad_flag_value_is_one_error_line_and_exit_2(tmp_path, small_idx_dir):
    proc = run_trainer(*small_args(small_idx_dir, tmp_path / "r", "--batch_size=-3"))
    assert proc.returncode == 2
    assert error_line(proc).startswith("error: flag --batch_size=-3: --batch_size must be a positive integer")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, message", [
    ("--epochs=0", "--epochs must be a positive integer"),
    ("--checkpoint_every_steps=0", "--checkpoint_every_steps must be a positive integer"),
    ("--keep_checkpoints=0", "--keep_checkpoints must be a positive integer"),
    ("--log_replica_losses=-1", "--log_replica_losses must be >= 0"),
    ("--strategy=quantum", "value should be one of <auto|cpu|gpu|mirrored|multi_worker|tpu>"),
    ("--precision=fp8", "value should be one of <auto|float32|mixed_float16|mixed_bfloat16>"),
    ("--num_cpu_replicas=0", "--num_cpu_replicas must be a positive integer"),
    ("--on_nonfinite=ignore", "--on_nonfinite must be stop, skip or rollback"),
])
def test_bad_flag_values_fail_at_parse_time(capsys, flag, message):
    # In process: the trainer's own flag definitions and parser (the test above
    # runs the real process once).
    from absl import flags

    import tfcustom.cli.train  # noqa: F401 (defines the trainer's flags)
    from tfcustom.cli import parse_flags

    try:
        with pytest.raises(SystemExit) as exit_info:
            parse_flags(["train.py", "--output_dir=/tmp/unused", flag])
    finally:
        flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs a /sys, where nobody (not even root) may create a directory")
def test_unwritable_output_dir_is_one_clear_line(tmp_path, small_idx_dir):
    # os.access says "writable" to root even here; the check really tries.
    proc = run_trainer(*small_args(small_idx_dir, "/sys/kernel/tfcustom_run"))
    assert proc.returncode == 2
    assert "output directory cannot be created (not writable) (received: '/sys/kernel')" in error_line(proc)
    assert not os.path.exists("/sys/kernel/tfcustom_run")


def test_missing_and_corrupt_data(tmp_path, small_idx_dir):
    proc = run_trainer(*small_args(tmp_path / "nowhere", tmp_path / "r"))
    assert proc.returncode == 2 and "data directory does not exist" in error_line(proc)
    assert not (tmp_path / "r").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in os.listdir(small_idx_dir):
        data = open(os.path.join(small_idx_dir, f), "rb").read()
        (bad / f).write_bytes(data[:100] if f.startswith("t10k-images") else data)
    proc = run_trainer(*small_args(bad, tmp_path / "r"))
    assert proc.returncode == 2 and "t10k-images-idx3-ubyte.gz" in error_line(proc)
    assert not (tmp_path / "r").exists()


def test_finished_run_is_not_overwritten_by_accident(tmp_path, small_idx_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("{}")
    proc = run_trainer(*small_args(small_idx_dir, out))
    assert proc.returncode == 2 and "already holds a finished run" in error_line(proc) and "--overwrite" in error_line(proc)
    assert (out / "results.json").read_text() == "{}"


def test_export_best_exports_the_best_epochs_model(tmp_path, small_idx_dir):
    out = tmp_path / "best"
    # A high learning rate makes validation accuracy jump around, so the best epoch is rarely the last.
    proc = run_trainer(*small_args(small_idx_dir, out, "--export_best", "--epochs=5", "--learning_rate=0.03", "--monitor=val_accuracy"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    val_acc = [r["val_accuracy"] for r in results["history"]]
    assert results["exported"] == "best"
    assert results["best_epoch"] == int(np.argmax(val_acc)) + 1
    # Oracle: the exported model, evaluated with NumPy on the same validation split, has the best epoch's accuracy.
    check = f"""
import numpy as np, keras, tfcustom
from tfcustom.data import load, split_validation
m = keras.models.load_model({str(out / 'model.keras')!r})
_, val = split_validation(load('fashion_mnist', {small_idx_dir!r}).train, 200, 3)
print(float(np.mean(m.predict(val.x.astype('float32') / 255.0, verbose=0).argmax(1) == val.y)))
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    acc = float(subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, check=True).stdout.split()[-1])
    assert acc == pytest.approx(max(val_acc), abs=1e-6)


def test_report_error_gives_one_line_and_the_documented_exit_code(capsys):
    """The README's exit codes: 3 non-finite loss, 4 stopped by SIGTERM/Ctrl-C, 75 a full disk, 2 any other tfcustom error."""
    from tfcustom.cli import report_error
    from tfcustom.errors import ConfigError, NonFiniteLossError
    from tfcustom.disk_errors import DiskError
    from tfcustom.distribute.preemption import TrainingInterrupted

    cases = [
        (NonFiniteLossError("loss is nan at epoch 1"), "", 3, "error: loss is nan at epoch 1\n"),
        (TrainingInterrupted("SIGTERM: saved ckpt-7."), " Run it again.", 4, "stopped: SIGTERM: saved ckpt-7. Run it again.\n"),
        (ConfigError("bad --epochs"), "", 2, "error: bad --epochs\n"),
        (DiskError("no space left on device while writing x"), "", 75, "error: no space left on device while writing x\n"),
    ]
    for error, hint, code, line in cases:
        assert report_error(error, stopped_hint=hint) == code
        assert capsys.readouterr().err == line


def test_every_setting_is_one_flag_with_its_default_help_and_group():
    """Each TrainConfig field makes exactly one tfcustom-train flag (issue #21 item 4): same default, help and
    --help group; the only flags that are not settings are --config, --output_dir and --overwrite."""
    import dataclasses
    import json as json_lib

    from absl import flags

    import tfcustom.cli.train as cli
    from tfcustom.cli.config_flags import flag_name
    from tfcustom.distribute.strategy import PRECISIONS, STRATEGY_NAMES
    from tfcustom.experiment.config import TrainConfig

    ours = {name for names in cli.HELP_GROUPS.values() for name in names}
    fields = dataclasses.fields(TrainConfig)
    assert ours - {flag_name(f) for f in fields} == {"config", "output_dir", "overwrite"}
    default = TrainConfig()
    for f in fields:
        flag = flags.FLAGS[flag_name(f)]
        assert flag.help.endswith(f.metadata["help"]), f.name  # an enum's help starts with its <choices>:
        value = getattr(default, f.name)
        want = json_lib.dumps(value) if isinstance(value, dict) else (list(value) if isinstance(value, tuple) else value)
        assert flag.default == want or (value is None and flag.default in (None, [])), (f.name, flag.default, value)
        assert flag_name(f) in cli.HELP_GROUPS[f.metadata["group"]], f.name
    assert tuple(flags.FLAGS["strategy"].parser.enum_values) == STRATEGY_NAMES
    assert tuple(flags.FLAGS["precision"].parser.enum_values) == PRECISIONS
