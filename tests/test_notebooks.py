"""The notebooks of examples/notebooks: executed top to bottom (small parameters), and the
committed ones are the current sources with the outputs of a full run.

Each notebook is built from its source in ``examples/notebooks/src``, gets small parameters in a
papermill-style ``injected-parameters`` cell and runs in a fresh Jupyter kernel (nbclient); a
cell that raises fails the test. The notebook's last cell asserts its promised facts and prints
them (``NOTEBOOK_FACTS``); the tests check them again here, from outside the kernel.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "examples", "notebooks")

_spec = importlib.util.spec_from_file_location("run_all", os.path.join(NOTEBOOKS, "run_all.py"))
run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_all)

SMALL = {
    "quickstart": {"EPOCHS": 1, "TRAIN_EXAMPLES": 3000, "TEST_EXAMPLES": 1000},
    "custom_components": {"EPOCHS": 1, "TRAIN_EXAMPLES": 2000},
    "tpu_training": {"TRAIN_EXAMPLES": 1024, "TEST_EXAMPLES": 1000, "STEPS_PER_EXECUTION": 2, "REPORT_EVERY": 1,
                     "CHECKPOINT_EVERY": 2},
    "from_scratch": {"HIDDEN_UNITS": 8, "NET_EPOCHS": 100},
}


@pytest.fixture(scope="module", autouse=True)
def kernel_env(fashion_dir):
    """The kernels import this checkout's tfcustom and read the installed Fashion-MNIST."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, saved) if p)
    yield
    if saved is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = saved


def _run(name):
    nb = run_all.run(name, SMALL[name])
    return run_all.facts(nb)


def _committed(name):
    import nbformat

    return nbformat.read(os.path.join(NOTEBOOKS, name + ".ipynb"), as_version=4)


@pytest.mark.parametrize("name", run_all.NAMES)
def test_committed_notebook_is_the_source_with_full_run_outputs(name):
    built, committed = run_all.build(name), _committed(name)
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in built.cells], (
        f"examples/notebooks/{name}.ipynb is stale: run `python examples/notebooks/run_all.py {name}`")
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code) and not any(o.output_type == "error" for c in code for o in c.outputs)
    assert any("parameters" in c.metadata.get("tags", []) for c in committed.cells)
    pictures = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert pictures, f"examples/notebooks/{name}.ipynb shows no picture in its committed outputs"
    facts = run_all.facts(committed)
    if name == "quickstart":
        assert facts["test_examples"] == 10000 and facts["test_accuracy"] > 0.85
    elif name == "tpu_training":
        assert facts["replicas"] == 8 and facts["test_accuracy"] > 0.8
    elif name == "custom_components":
        assert facts["test_accuracy"] > 0.8


def test_quickstart_runs():
    facts = _run("quickstart")
    assert facts["epochs"] == 1 and facts["test_examples"] == 1000
    assert facts["confusion_total"] == 1000 and abs(facts["confusion_correct"] / 1000 - facts["test_accuracy"]) < 1e-6
    assert facts["reload_difference"] < 1e-5 and facts["test_accuracy"] > 0.5


def test_custom_components_match_keras_sklearn_and_train_identically_three_ways():
    facts = _run("custom_components")
    assert max(facts["dense_vs_keras"], facts["softmax_vs_keras"], facts["model_vs_keras"], facts["loss_vs_keras"]) < 1e-5
    assert max(facts["dense_gradient_error"], facts["softmax_gradient_error"], facts["loss_gradient_error"]) < 1e-6
    assert max(facts["f1_vs_sklearn"], facts["test_f1_vs_sklearn"]) < 1e-5
    assert facts["tolerance"] == 1e-5
    assert facts["weights_hand_vs_step"] < 1e-5 and facts["weights_hand_vs_trainer"] < 1e-5


def test_from_scratch_gradients_and_solutions():
    facts = _run("from_scratch")
    assert facts["hand_vs_tape"] < 1e-6 and facts["tape_vs_finite_differences"] < 1e-6
    assert max(facts["linear_hand_vs_closed"], facts["linear_tape_vs_closed"]) < 1e-10
    assert max(facts["logistic_hand_vs_sklearn"], facts["logistic_tape_vs_sklearn"]) < 1e-8
