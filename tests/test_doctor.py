"""tfcustom.doctor and tfcustom-doctor: pass on sound models, name the defect and the fix on planted bugs.

One subprocess (4 logical CPUs configured before TensorFlow starts) runs every scenario of
tests/doctor_scenarios.py (a functional model, every shipped model with every check, the
planted bugs); one more runs the CLI on a shipped model."""

import json
import os
import subprocess
import sys

import pytest

from tfcustom import models
from tfcustom.doctor import CHECKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


@pytest.fixture(scope="module")
def reports():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "doctor_scenarios.py")], capture_output=True,
                          text=True, timeout=600, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_plain_functional_model_passes_every_check(reports):
    failed = {name: r for name, r in reports["functional"].items() if not r[0]}
    assert not failed and len(reports["functional"]) == 7


SHIPPED = ["cnn", "logistic_regression", "mlp", "resnet"]


def test_the_scenarios_cover_every_shipped_model():
    assert SHIPPED == models.names()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_passes_every_check(reports, name):
    report = reports[f"shipped:{name}"]
    assert list(report) == list(CHECKS)
    assert {check: r[1] for check, r in report.items() if not r[0]} == {}


@pytest.mark.parametrize("name, kinds", [("mlp", ["dropout"]), ("cnn", ["BatchNorm", "dropout"]), ("resnet", ["BatchNorm"])])
def test_replica_dependent_layers_are_compared_neutralised_and_their_as_built_difference_shown(reports, name, kinds):
    measured = reports[f"shipped:{name}"]["replica agreement"][1]
    as_built = float(measured.split("as built, 4 replicas differ by ")[1].split()[0])
    assert "BatchNorm synchronised and dropout off" in measured and as_built > 1e-3  # without neutralising it would fail
    assert [kind for kind in ("BatchNorm", "dropout") if f"per-replica {kind}" in measured] == kinds


def test_a_loss_averaged_per_replica_fails_replica_agreement_far_beyond_rounding(reports):
    passed, measured, _ = reports["replica_mean_loss"]["replica agreement"]
    assert not passed and float(measured.split("4 replicas ")[1].split()[0]) > 1e-3  # 100x the tolerance: gradients 4x too large


@pytest.mark.parametrize("scenario, check, measured", [
    ("replica_mean_loss", "replica agreement", "after 3 steps of SGD(0.001)"),
    ("late_weight", "variables in scope", "the first step raised"),
    ("dict_layers", "checkpoint coverage", "restored predictions differ by"),
    ("one_replica_metric", "exact metrics", "first_replica_accuracy"),
    ("retracing_step", "retracing", "new traces over 3 later steps: 3 on 1 replica, 3 on 2"),
    ("replica_state", "replica state", "replica_counter/seen"),
])
def test_planted_bug_fails_naming_defect_and_fix(reports, scenario, check, measured):
    passed, text, fix = reports[scenario][check]
    assert not passed and measured in text and fix


def test_cli_passes_a_shipped_model_prints_the_table_and_the_time_and_writes_json(tmp_path):
    checks = ["replica agreement", "exact metrics", "checkpoint coverage", "nan batch"]
    proc = subprocess.run([sys.executable, "-m", "tfcustom.cli.doctor", "--model=logistic_regression", "--input_shape=4,4,1",
                           "--num_classes=3", f"--checks={','.join(checks)}", f"--json_out={tmp_path / 'doctor.json'}"],
                          capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert all(" pass " in l for l in lines[1:-2]) and len(lines) == 7
    assert lines[-2] == "all checks passed"
    report = json.loads((tmp_path / "doctor.json").read_text())
    assert report["passed"] and [c["name"] for c in report["checks"]] == checks and all(c["passed"] for c in report["checks"])
    assert abs(sum(c["seconds"] for c in report["checks"]) - report["seconds"]) < 1e-9
    slowest = max(report["checks"], key=lambda c: c["seconds"])
    assert lines[-1].startswith(f"time: {report['seconds']:.1f} s ({slowest['name']} {slowest['seconds']:.1f} s, ")


def test_cli_bad_model_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "tfcustom.cli.doctor", "--model=no_such_module:make"],
                          capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [l for l in proc.stderr.splitlines() if l.startswith("error:")][-1].startswith("error: cannot import the model's module")


def test_cli_json_out_in_a_missing_directory_is_one_line_exit_2_before_any_check(tmp_path):
    missing = tmp_path / "no_such_dir" / "doctor.json"
    proc = subprocess.run([sys.executable, "-m", "tfcustom.cli.doctor", "--model=logistic_regression", "--input_shape=4,4,1",
                           f"--json_out={missing}"], capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == ""  # refused before the table
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --json_out's directory does not exist")
