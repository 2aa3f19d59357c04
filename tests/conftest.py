import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import pytest

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def pytest_configure(config):
    import logging

    logging.getLogger("absl").setLevel(logging.WARNING)


# The files that take longest (measured with `python -m pytest --durations=0`), longest first.
# pytest-xdist `--dist loadfile` hands whole files to the workers in collection order
# (pyproject.toml sets --no-loadscope-reorder; xdist's default order puts the files with
# the most tests first, so these few-test heavy files came last and one worker ran them
# alone at the end). Longest first, the many short files fill in the gaps at the end.
HEAVY_FILES_FIRST = [
    # measured (2026-12-06, -n 2, a shared machine, s of setup+call per file): doctor 293, resume 248, readme_guides 231,
    # readme 228, resume_replicas 192, resume_streaming 172, registries_e2e 148, cli 140 (before its one-process
    # bad-config cases), readme_strategies 137, cluster_preemption 137, distributed_training 95, notebook_tpu 81,
    # faults 78, first_contact 76, notebooks 58; the rest in the order of the earlier measurement.
    "test_doctor.py", "test_resume.py", "test_readme_guides.py", "test_readme.py", "test_resume_replicas.py",
    "test_resume_streaming.py", "test_registries_e2e.py", "test_readme_strategies.py", "test_cluster_preemption.py",
    "test_cli.py", "test_distributed_training.py", "test_notebook_tpu.py", "test_faults.py", "test_first_contact.py",
    "test_notebooks.py", "test_weight_averaging.py", "test_sidecar.py", "test_eval_predict_cli.py", "test_summaries.py",
    "test_any_model.py", "test_autotune_resume.py", "test_legacy_files.py", "test_fit_recipe.py",
]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def fashion_dir():
    if not os.path.isfile(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz")):
        pytest.fail("Fashion-MNIST is not installed: run `apt-get install -y dataset-fashion-mnist` (.ci/run does)")
    return FASHION_DIR


@pytest.fixture(scope="session")
def small_idx_dir(tmp_path_factory, fashion_dir):
    """A small Fashion-MNIST in IDX .gz files: the first 1200 train and 300 test examples."""
    from legacy_fixture import small_fashion  # the same slices as the legacy fixtures were written on

    return small_fashion(str(tmp_path_factory.mktemp("small_fashion")), fashion_dir)


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, small_idx_dir):
    """One finished, uninterrupted run of the fault tests' tiny config (tests/fault_helpers.py),
    shared by tests/test_faults.py and tests/test_damaged_files.py: copy it, never change it."""
    from fault_helpers import tiny_run

    out = str(tmp_path_factory.mktemp("tiny_run") / "run")
    tiny_run(small_idx_dir, out)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)
