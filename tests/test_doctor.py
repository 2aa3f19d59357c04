"""tfcustom.doctor and tfcustom-doctor: pass on sound models, name the defect and the fix on planted bugs.

One subprocess (4 logical CPUs configured before TensorFlow starts) runs every scenario of
tests/doctor_scenarios.py; one more runs the CLI on a shipped model."""

import json
import os
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("scenario, check, measured", [
    ("late_weight", "variables in scope", "the first step raised"),
    ("dict_layers", "checkpoint coverage", "restored predictions differ by"),
    ("one_replica_metric", "exact metrics", "first_replica_accuracy"),
    ("retracing_step", "retracing", "new traces over 3 later steps: 3 on 1 replica"),
    ("replica_state", "replica state", "replica_counter/seen"),
])
def test_planted_bug_fails_naming_defect_and_fix(reports, scenario, check, measured):
    passed, text, fix = reports[scenario][check]
    assert not passed and measured in text and fix


def test_cli_passes_a_shipped_model_and_prints_the_table():
    proc = subprocess.run([sys.executable, "-m", "tfcustom.cli.doctor", "--model=logistic_regression", "--input_shape=4,4,1",
                           "--num_classes=3", "--checks=replica agreement,exact metrics,checkpoint coverage,nan batch"],
                          capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert [l.split()[-1] for l in lines[1:-1]] and all(" pass " in l for l in lines[1:-1]) and len(lines) == 6
    assert lines[-1] == "all checks passed"


def test_cli_bad_model_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "tfcustom.cli.doctor", "--model=no_such_module:make"],
                          capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [l for l in proc.stderr.splitlines() if l.startswith("error:")][-1].startswith("error: cannot import the model's module")
