"""The distributed step gives the single-device answer (CPU only, subprocesses).

Logical CPU devices and the multi-worker runtime must be set up before
TensorFlow initialises its devices, so everything distributed runs in fresh
interpreters (``tests/distributed_worker.py``):

* one ``suite`` process splits the CPU into 4 logical devices and trains the
  same model on 1, 2 and 4 replicas (plus steps_per_execution, XLA, BatchNorm,
  exact evaluation and mixed float16 variants); its results back several tests;
* two ``worker`` processes on 127.0.0.1 train with MultiWorkerMirroredStrategy;
* the example trainer runs with ``--strategy=mirrored --num_cpu_replicas=2``.

Oracles: the 1-replica run (``OneDeviceStrategy``), NumPy on the model's
outputs for evaluation, float32 for mixed precision.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from process_helpers import free_ports, tf_config, wait_all

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "distributed_worker.py")
TRAIN = os.path.join(ROOT, "examples", "train.py")
MULTI_WORKER_TIMEOUT_S = 120
N_TEST = 1001


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _load_npz(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def _max_diff(a, b):
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed_suite")
    proc = subprocess.run([sys.executable, WORKER, "suite", str(out)], capture_output=True, text=True,
                          timeout=600, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads((out / "suite.json").read_text())
    result["dir"] = str(out)
    return result


# -- input: every replica gets its share of every global batch ---------------------


def test_partial_last_batch_is_split_evenly_over_the_replicas():
    import tensorflow as tf

    from tfcustom.data import InputPipeline, Split

    n, batch = 330, 32  # 10 full global batches and one of 10
    pipe = InputPipeline(Split(np.zeros((n, 2, 2, 1), "uint8"), np.arange(n, dtype="int32")), batch, shuffle=True, seed=3)
    single = [y.numpy() for _, y in pipe.dataset(0)]
    for replicas, pipelines, last in ((2, 1, [5, 5]), (4, 1, [3, 3, 2, 2]), (4, 2, [3, 3, 2, 2])):
        # Pipeline p feeds replicas p*k .. p*k+k-1, which take its elements in turn.
        k = replicas // pipelines
        per_pipeline = [[y.numpy() for _, y in pipe.dataset(0, input_context=tf.distribute.InputContext(pipelines, p, replicas))]
                        for p in range(pipelines)]
        for step, expected in enumerate(single):
            parts = [per_pipeline[p][step * k + j] for p in range(pipelines) for j in range(k)]
            np.testing.assert_array_equal(np.concatenate(parts), expected)  # same examples, same order
            sizes = [len(part) for part in parts]
            assert sizes == ([batch // replicas] * replicas if step < len(single) - 1 else last), (replicas, step, sizes)
    # drop_remainder keeps the static per-replica shape that a TPU needs.
    fixed = InputPipeline(pipe.split, batch, drop_remainder=True).dataset(0, input_context=tf.distribute.InputContext(1, 0, 4))
    assert fixed.element_spec[1].shape.as_list() == [8]


# -- invariance ------------------------------------------------------------------


def test_same_weights_on_1_2_and_4_replicas(suite):
    inv = suite["invariance"]
    assert inv["weights_changed"] > 1e-2  # training moved the weights
    assert inv["max_diff_1_vs_2"] <= 1e-5, inv
    assert inv["max_diff_1_vs_4"] <= 1e-5, inv
    for n in ("2", "4"):  # the global-batch loss and the metrics agree too
        np.testing.assert_allclose(inv["train_loss"][n], inv["train_loss"]["1"], rtol=0, atol=1e-5)
        assert inv["train_accuracy"][n] == inv["train_accuracy"]["1"]


def test_xla_per_replica_step_gives_the_same_weights(suite):
    assert suite["invariance"]["max_diff_1_vs_2_jit"] <= 1e-5


def test_steps_per_execution_10_equals_1_on_2_replicas(suite):
    spe = suite["steps_per_execution"]
    assert spe["max_diff_k10_vs_k1"] <= 1e-6, spe
    assert spe["loss_k10"] == spe["loss_k1"]


def test_batch_norm_differs_by_per_replica_statistics_but_evaluates_exactly(suite):
    bn = suite["batch_norm"]
    # Documented difference: each replica normalises with its own batch's
    # statistics (16 examples, not 32), so the weights are not those of 1 replica.
    assert bn["max_diff_1_vs_2"] > 1e-3, bn
    # The replicas' moving statistics are averaged (Trainer.sync_replica_state):
    # the copies agree, and the 2-replica evaluation is that of the saved weights.
    assert bn["replica_copies_max_diff"] == 0.0
    e2, e1 = bn["eval_2_replicas"], bn["eval_1_device_same_weights"]
    assert round(e2["accuracy"] * N_TEST) == round(e1["accuracy"] * N_TEST)
    assert abs(e2["loss"] - e1["loss"]) <= 1e-6


# -- exact evaluation -------------------------------------------------------------


def test_evaluation_is_exact_on_2_and_4_replicas(suite):
    oracle = suite["numpy_oracle"]
    assert oracle["n"] == N_TEST
    for n, logs in suite["evaluation"].items():
        count = logs["accuracy"] * N_TEST
        assert abs(count - round(count)) < 1e-3, (n, count)  # a count over all 1001 examples
        assert round(count) == oracle["correct"], (n, logs)
        assert abs(logs["loss"] - suite["evaluation"]["1"]["loss"]) <= 1e-6, (n, logs)
        assert abs(logs["loss"] - oracle["loss"]) <= 1e-5, (n, logs)


def test_streaming_evaluation_is_exact_on_1_2_and_4_replicas(suite):
    # The test split streamed from 3 TFRecord shards: every example counted once, the partial batch included.
    oracle = suite["numpy_oracle"]
    for n, logs in suite["streaming_evaluation"].items():
        assert round(logs["accuracy"] * N_TEST) == oracle["correct"] and abs(logs["accuracy"] * N_TEST - oracle["correct"]) < 1e-3, (n, logs)
        assert abs(logs["loss"] - oracle["loss"]) <= 1e-5, (n, logs)


# -- mixed precision ---------------------------------------------------------------


def test_mixed_float16_on_2_replicas_skips_overflow_and_tracks_float32(suite):
    mp = suite["mixed_float16"]
    assert mp["logits_dtype"] == "float32" and mp["hidden_compute_dtype"] == "float16"
    step = mp["overflow_step"]
    # The forced overflow (scale 1e30) is skipped: not applied, scale halved,
    # not a non-finite step for the NaN policy, metrics untouched.
    assert step["steps_run"] == 1 and step["loss_scale_skipped"] == 1
    assert not step["nonfinite"] and step["skipped"] == 0
    assert step["scale_after"] == pytest.approx(5e29, rel=1e-6)
    assert step["weights_max_change"] == 0.0 and step["iterations"] == 0
    assert step["train_loss_count"] == 0.0
    # Loose float32 oracle: the same 22 steps in float32 (float16 keeps ~3
    # significant digits; weights are O(1), measured difference 0.034).
    assert 0 < mp["max_diff_vs_float32"] < 0.1 * max(1.0, mp["max_abs_weight"]), mp
    np.testing.assert_allclose(mp["loss_mixed"], mp["loss_float32"], rtol=0, atol=5e-3)
    assert mp["final_scale"] == 2.0 ** 15  # no overflow at the default scale


# -- multi-worker ---------------------------------------------------------------------


def test_multi_worker_on_localhost_matches_single_process(suite, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs, logs = [], []
    start = time.monotonic()
    try:
        for i in range(2):
            log = open(tmp_path / f"worker_{i}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, WORKER, "worker", str(tmp_path), str(tmp_path / f"run_{i}")],
                                          stdout=log, stderr=subprocess.STDOUT, env=_env(TF_CONFIG=tf_config(cluster, i)), cwd=ROOT))
    finally:
        wait_all(procs, MULTI_WORKER_TIMEOUT_S, start)
        for log in logs:
            log.close()
    elapsed = time.monotonic() - start
    tails = "\n".join(f"--- worker {i} ---\n" + (tmp_path / f"worker_{i}.log").read_text()[-3000:] for i in range(2))
    assert elapsed < MULTI_WORKER_TIMEOUT_S, f"multi-worker training did not finish in {MULTI_WORKER_TIMEOUT_S} s\n{tails}"
    assert [p.returncode for p in procs] == [0, 0], tails

    w0, w1 = (_load_npz(tmp_path / f"worker_{i}.npz") for i in range(2))
    oracle = _load_npz(os.path.join(suite["dir"], "oracle.npz"))
    assert _max_diff(w0, w1) == 0.0  # identical on both workers
    assert _max_diff(w0, oracle) <= 1e-5  # and the single-process result
    r0, r1 = (json.loads((tmp_path / f"worker_{i}.json").read_text()) for i in range(2))
    assert r0["num_replicas"] == r1["num_replicas"] == 2
    assert r0["strategy"] in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")  # TF's class name
    # Evaluation over both workers counts every test example once.
    expected = suite["oracle"]["test"]
    for r in (r0, r1):
        assert round(r["test"]["accuracy"] * N_TEST) == round(expected["accuracy"] * N_TEST)
        assert abs(r["test"]["loss"] - expected["loss"]) <= 1e-5
        np.testing.assert_allclose(r["history_loss"], suite["oracle"]["history_loss"], rtol=0, atol=1e-5)
    # Streaming from 4 TFRecord shards: each worker reads its own records (disjoint, every
    # training example once per epoch), and evaluation over both workers counts each test example once.
    ids = [r["stream_ids"] for r in (r0, r1)]
    assert len(ids[0]) == len(ids[1]) and sorted(ids[0] + ids[1]) == list(range(330 + 64))  # distributed_worker.make_dataset: N_TRAIN + 64
    files = [{os.path.basename(f) for f, start, count in r["stream_plan"] if start == 0 and count >= 98} for r in (r0, r1)]
    assert len(files[0]) == len(files[1]) == 2 and files[0].isdisjoint(files[1])  # 4 shards of 98/99: two whole shards each
    for r in (r0, r1):
        assert abs(r["stream_test"]["accuracy"] - r0["test"]["accuracy"]) < 1e-6
        assert abs(r["stream_test"]["loss"] - r0["test"]["loss"]) <= 1e-6
    # Only the chief (worker 0) writes the run's files.
    assert (tmp_path / "run_0" / "results.json").exists() and not (tmp_path / "run_1" / "results.json").exists()
    assert list((tmp_path / "run_0" / "tensorboard" / "train").glob("events.out.tfevents.*"))  # TensorBoard: the chief only
    assert not (tmp_path / "run_1" / "tensorboard").exists()


# -- the example trainer ------------------------------------------------------------------


def test_trainer_flags_mirrored_two_cpu_replicas_end_to_end(tmp_path, small_idx_dir):
    out = tmp_path / "run"
    args = ["--strategy=mirrored", "--num_cpu_replicas=2", "--steps_per_execution=10", "--jit_compile",
            f"--data_dir={small_idx_dir}", "--model=mlp", "--epochs=1", "--batch_size=64", "--validation_size=200",
            f"--output_dir={out}", "--verbose=0", "--log_replica_losses=5", "--log_every_steps=5"]
    proc = subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["num_replicas"] == 2 and results["strategy"] == "MirroredStrategy"
    assert results["precision"] == "float32"
    assert 0.5 < results["test"]["accuracy"] <= 1.0
    assert "Strategy 'mirrored': MirroredStrategy, 2 replica(s)" in proc.stderr
    replica_lines = [l for l in proc.stderr.splitlines() if "replicas' shares" in l]
    assert replica_lines, proc.stderr[-3000:]
    assert "sum of the 2 replicas' shares" in replica_lines[-1]
    # TensorBoard: each replica's loss share next to the loss. 1000 examples / 64 = 16 steps in calls of 10 and 6:
    # the calls ending at steps 10 and 16 cross a multiple of --log_every_steps=5.
    from test_summaries import load_events

    train = load_events(out / "tensorboard")["train"]
    steps = [s for s, _ in train["batch_loss"]]
    assert steps == [10, 16]
    assert [s for s, _ in train["batch_replica_0_loss"]] == [s for s, _ in train["batch_replica_1_loss"]] == steps
