"""tfcustom.distribute.colab: a TPU that fails is explained in one paragraph, then the CPU/GPU takes over.

The failure is faked where TensorFlow raises it (``initialize_tpu_system``),
with the exact error chain a Colab TPU runtime shows when the CPU build of
TensorFlow is installed (an InvalidArgumentError, re-raised as NotFoundError).
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from tfcustom.distribute import colab
from tfcustom.distribute import strategy as strategy_lib

NO_KERNEL = (
    "No OpKernel was registered to support Op 'ConfigureDistributedTPU' used by {{node ConfigureDistributedTPU}} "
    "with these attrs: [enable_whole_mesh_compilations=false, tpu_embedding_config=\"\", "
    "compilation_failure_closes_chips=false, is_global_init=false, embedding_config=\"\", tpu_cancellation_closes_chips=2]\n"
    "Registered devices: [CPU]\nRegistered kernels:\n  <no registered kernels>\n\n\t [[ConfigureDistributedTPU]] "
    "[Op:__inference__tpu_init_fn_4]"
)
CPU_ONLY = {"tensorflow": "2.21.0", "tensorflow-cpu": None, "tensorflow-tpu": None, "libtpu": "0.0.17", "keras": "3.15.0"}


class _FakeResolver:
    def __init__(self, tpu=None, **kwargs):
        self.tpu = tpu


def _colab_tpu_failure(resolver):
    try:
        raise tf.errors.InvalidArgumentError(None, None, NO_KERNEL)
    except tf.errors.InvalidArgumentError:
        raise tf.errors.NotFoundError(None, None, "TPUs not found in the cluster. Failed in initialization: " + NO_KERNEL)


def test_a_tpu_without_tpu_kernels_is_explained_in_one_paragraph_then_the_cpu_takes_over(monkeypatch):
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", _FakeResolver)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", _colab_tpu_failure)
    monkeypatch.setattr(colab, "installed_versions", lambda: dict(CPU_ONLY))
    replicas = len(tf.config.list_logical_devices("CPU"))  # this process's devices are fixed by now: keep them
    printed = []
    choice = colab.select_strategy(num_cpu_replicas=replicas, try_tpu=True, echo=printed.append)

    assert choice.fell_back and choice.failure.kind == "no_tpu_kernels"
    assert choice.device == "CPU" and isinstance(choice.strategy, tf.distribute.MirroredStrategy)
    assert choice.strategy.num_replicas_in_sync == replicas
    assert len(printed) == 1 and "\n\n" not in printed[0]  # one paragraph
    text = " ".join(printed[0].split())
    assert text.startswith("The TPU could not be used: this TensorFlow build has no TPU kernels")
    assert "Colab's TPU runtimes no longer come with TensorFlow" in text
    assert "Installed: tensorflow 2.21.0, tensorflow-tpu not installed, libtpu 0.0.17." in text
    assert "pip install tensorflow-tpu==<version>" in text and "Restart session" in text
    assert f"Continuing on {replicas} logical CPU devices" in text
    assert "(The error was: InvalidArgumentError: No OpKernel was registered to support Op 'ConfigureDistributedTPU'" in text
    # The strategy works: a value summed over the replicas.
    total = choice.strategy.reduce(tf.distribute.ReduceOp.SUM, choice.strategy.run(lambda: tf.constant(1.0)), axis=None)
    assert float(total) == replicas


@pytest.mark.parametrize(
    "error, versions, kind, phrase",
    [
        (RuntimeError(NO_KERNEL), {"tensorflow": "2.21.0", "tensorflow-tpu": "2.20.0"}, "version_mismatch",
         "versions do not match (tensorflow 2.21.0, tensorflow-tpu 2.20.0)"),
        (ValueError("Please provide a TPU Name to connect to."), CPU_ONLY, "no_tpu",
         "no TPU is attached to this runtime. Installed:"),
        (RuntimeError("Deadline exceeded\nmore"), CPU_ONLY, "other",
         "TensorFlow failed to start the TPU (RuntimeError: Deadline exceeded)"),
    ],
)
def test_other_tpu_failures_get_their_own_explanation(error, versions, kind, phrase):
    failure = colab.diagnose_tpu_failure(error, versions=versions, fallback="2 GPU(s)")
    assert failure.kind == kind
    assert phrase in failure.paragraph and "Continuing on 2 GPU(s)" in failure.paragraph


def test_the_library_error_of_a_failed_tpu_start_keeps_the_tf_message_for_the_diagnosis(monkeypatch):
    """tfcustom.distribute.strategy.select('tpu') wraps TF's error in a ConfigError; the diagnosis reads through it."""
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", _FakeResolver)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", _colab_tpu_failure)
    with pytest.raises(Exception) as info:
        strategy_lib.select("tpu", tpu="local")
    assert colab.diagnose_tpu_failure(info.value, versions=CPU_ONLY).kind == "no_tpu_kernels"


def test_no_tpu_signs_here():
    assert not colab.tpu_runtime() and not colab.in_colab()
