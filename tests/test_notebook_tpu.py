"""The tpu_training notebook, executed with small parameters (see tests/test_notebooks.py).

In a file of its own: it is the longest notebook test (a fresh kernel tracing the step for
8 replicas three times), and ``--dist loadfile`` sends each file to one xdist worker, so
this one runs beside the other notebooks instead of after them.
"""

from __future__ import annotations

import math

from test_notebooks import _run, kernel_env  # noqa: F401 - kernel_env is the autouse fixture


def test_tpu_notebook_on_8_logical_cpus_shows_8_per_core_losses_summing_to_the_loss():
    facts = _run("tpu_training")
    assert facts["device"] == "CPU" and not facts["fell_back"] and facts["replicas"] == 8 and facts["policy"] == "float32"
    assert len(facts["reports"]) == 4
    for report in facts["reports"]:
        assert len(report["replica_losses"]) == 8
        assert math.isclose(sum(report["replica_losses"]), report["loss"], rel_tol=1e-6)
    assert math.isclose(facts["first_loss"], facts["keras_first_loss"], rel_tol=1e-5)
    assert facts["resumed_step"] == facts["step_at_stop"] == 4 and facts["restored_difference"] == 0.0
    assert facts["final_step"] == 8
