"""tfcustom metrics under tf.distribute.MirroredStrategy on 2 logical CPUs.

Logical devices must be configured before TensorFlow initialises its devices,
which has already happened in this pytest process once any other test ran.
So the distributed part runs in a fresh interpreter (``sys.executable -c``)
that prints its results as JSON; the oracle (scikit-learn / NumPy on all the
data) is computed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn import metrics as skm

C = 5
N = 203  # global batch 16 -> 12 full batches + one of 11: uneven per replica
GLOBAL_BATCH = 16

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    from tfcustom import metrics as M

    data = np.load(sys.argv[1])
    labels, logits, weights = data["labels"], data["logits"], data["weights"]
    C, batch = int(data["C"]), int(data["batch"])

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    with strategy.scope():
        metrics = {
            "f1_macro": M.F1Score(C, average="macro"),
            "precision_none": M.Precision(C, average=None),
            "recall_weighted": M.Recall(C, average="weighted"),
            "confusion": M.ConfusionMatrix(C),
            "balanced_accuracy": M.BalancedAccuracy(C),
            "ece": M.ExpectedCalibrationError(num_bins=10),
        }

    ds = tf.data.Dataset.from_tensor_slices((labels, logits, weights)).batch(batch)
    dist_ds = strategy.experimental_distribute_dataset(ds)

    @tf.function
    def step(y, z, w):
        def update(y, z, w):
            for m in metrics.values():
                m.update_state(y, z, w)
        strategy.run(update, args=(y, z, w))

    for y, z, w in dist_ds:
        step(y, z, w)

    # Per-replica partial states (to prove both replicas held data).
    cm = metrics["confusion"].confusion
    local = [np.asarray(v).sum() for v in strategy.experimental_local_results(cm.value)]
    out = {k: np.asarray(m.result()).tolist() for k, m in metrics.items()}
    out["replica_totals"] = [float(t) for t in local]

    # keras.Model.fit on 2 replicas: the per-batch values Keras shows (keras-team/keras#21054).
    import keras
    x = data["x"]
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Dense(C)])
        model.compile(optimizer=keras.optimizers.SGD(0.0),  # fixed predictions: the oracle needs them
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[M.ExpectedCalibrationError(num_bins=10)],  # Keras: unweighted
                      weighted_metrics=[M.Precision()])  # Keras: with the sample weights
    per_batch = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: per_batch.append(
        [float(logs["precision"]), float(logs["expected_calibration_error"])]))
    model.fit(x, labels, sample_weight=weights, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    out["keras_per_batch"] = per_batch
    out["keras_logits"] = model.predict(x, batch_size=batch, verbose=0).tolist()

    # The Trainer on 2 replicas: the metric object passed holds the evaluation's value afterwards.
    import tfcustom
    with strategy.scope():
        trainer_model = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Dense(C)])
        f1 = M.F1Score()  # num_classes from the model's output
    trainer = tfcustom.Trainer(trainer_model, tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True), "sgd",
                               metrics=[f1], strategy=strategy, verbose=0)
    trainer.fit((x, labels), epochs=1, batch_size=batch)
    trainer.evaluate((x, labels), batch_size=batch)
    out["trainer_f1"] = float(f1.result())
    out["trainer_logits"] = trainer.predict(x).tolist()
    print("RESULT " + json.dumps(out))
    """
)


def _data():
    rng = np.random.default_rng(42)
    labels = rng.choice(C, size=N, p=[0.55, 0.25, 0.12, 0.08, 0.0])  # class 4 absent
    logits = rng.normal(size=(N, C)).astype("float32") * 1.5
    logits[np.arange(N), labels] += 1.0
    weights = rng.uniform(0.0, 2.0, size=N).astype("float32")
    return labels.astype("int32"), logits, weights


def _np_ece(labels, logits, weights, num_bins):
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, correct = p.max(1), (p.argmax(1) == labels)
    w = weights.astype(np.float64)
    ece = 0.0
    for b in range(num_bins):
        in_bin = (conf > b / num_bins) & (conf <= (b + 1) / num_bins)
        if w[in_bin].sum() > 0:
            ece += abs((w[in_bin] * correct[in_bin]).sum() - (w[in_bin] * conf[in_bin]).sum())
    return ece / w.sum()


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_metrics_under_mirrored_strategy_equal_sklearn_on_all_data(tmp_path):
    labels, logits, weights = _data()
    path = os.path.join(tmp_path, "data.npz")
    x = np.random.default_rng(7).normal(size=(N, 8)).astype("float32")
    np.savez(path, labels=labels, logits=logits, weights=weights, C=C, batch=GLOBAL_BATCH, x=x)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, path],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=repo,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    got = json.loads(line[len("RESULT "):])

    # both replicas accumulated part of the data; the read sums them
    totals = got["replica_totals"]
    assert len(totals) == 2 and all(t > 0 for t in totals), totals
    np.testing.assert_allclose(sum(totals), weights.astype(np.float64).sum(), rtol=1e-9)

    preds = logits.argmax(1)
    kw = dict(labels=list(range(C)), sample_weight=weights, zero_division=0)
    np.testing.assert_allclose(
        got["f1_macro"], skm.f1_score(labels, preds, average="macro", **kw), atol=1e-6
    )
    np.testing.assert_allclose(
        got["precision_none"], skm.precision_score(labels, preds, average=None, **kw), atol=1e-6
    )
    np.testing.assert_allclose(
        got["recall_weighted"], skm.recall_score(labels, preds, average="weighted", **kw), atol=1e-6
    )
    np.testing.assert_allclose(
        got["confusion"],
        skm.confusion_matrix(labels, preds, labels=list(range(C)), sample_weight=weights),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        got["balanced_accuracy"],
        skm.balanced_accuracy_score(labels, preds, sample_weight=weights),
        atol=1e-6,
    )
    np.testing.assert_allclose(got["ece"], _np_ece(labels, logits, weights, 10), atol=1e-6)

    # keras.Model.fit's per-batch values on 2 replicas equal scikit-learn on the data seen so far
    fit_logits = np.asarray(got["keras_logits"])
    fit_preds = fit_logits.argmax(1)
    per_batch = got["keras_per_batch"]
    assert len(per_batch) == -(-N // GLOBAL_BATCH)
    for i, (precision, ece) in enumerate(per_batch):
        n = min((i + 1) * GLOBAL_BATCH, N)
        want = skm.precision_score(labels[:n], fit_preds[:n], average="macro", labels=list(range(C)), sample_weight=weights[:n], zero_division=0)
        assert precision == pytest.approx(want, abs=1e-6), (i, precision, want)
        assert ece == pytest.approx(_np_ece(labels[:n], fit_logits[:n], np.ones(n), 10), abs=1e-6), i

    # the Trainer's metric object after evaluate on 2 replicas
    trainer_preds = np.asarray(got["trainer_logits"]).argmax(1)
    assert got["trainer_f1"] == pytest.approx(skm.f1_score(labels, trainer_preds, average="macro", labels=list(range(C)), zero_division=0), abs=1e-6)
