"""Models that are not integer-label image classifiers, trained by ``keras.Model.fit``
(the oracle) and by ``tfcustom.Trainer`` from the same initial weights and data.

Used by tests/test_any_model.py, in process (1 replica) and as a script
(``python tests/any_model_cases.py 2``: 2 logical CPUs, MirroredStrategy for the
Trainer, Keras on the default device), which prints ``RESULT <json>``.
Every case trains full-batch (one step per epoch), so the batch order does not matter.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

N = 64  # examples; the one batch splits evenly over 2 replicas
EPOCHS = 2


def _datasets():
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

    cancer_x, cancer_y = load_breast_cancer(return_X_y=True)
    cancer_x = ((cancer_x - cancer_x.mean(0)) / cancer_x.std(0))[:N].astype("float32")
    diabetes_x, diabetes_y = load_diabetes(return_X_y=True)
    digits_x, digits_y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, size=(N, 7))
    tokens[np.arange(N) % 3 == 0, 4:] = 0  # padding, masked by the Embedding
    return {
        "cancer": (cancer_x, cancer_y[:N].astype("float32")),
        "diabetes": (diabetes_x[:N].astype("float32"), (diabetes_y[:N] / 100.0).astype("float32")),
        "digits": ((digits_x[:N] / 16.0).astype("float32"), digits_y[:N].astype("int64")),
        "tokens": (tokens.astype("int32"), (tokens.sum(1) % 2).astype("float32")),
        "pixels": (rng.normal(size=(N, 4, 4, 2)).astype("float32"), rng.integers(0, 3, size=(N, 4, 4)).astype("int64")),
        "weights": rng.uniform(0.2, 2.0, size=N).astype("float32"),
    }


def _dense(inputs, units, activation=None, hidden=8):
    import keras

    return keras.Sequential([keras.Input(inputs), keras.layers.Dense(hidden, activation="tanh"),
                             keras.layers.Dense(units, activation=activation)])


def cases():
    """name -> dict(model=builder, loss, metrics, x, y, w (optional), class_weight (optional), policy,
    tol: the comparison's tolerance when not 1e-5 (float16: the forward pass rounds to 11 bits, so a
    different summation order over 2 replicas moves the loss by ~2e-5))."""
    import keras

    d = _datasets()
    cx, cy = d["cancer"]
    gx, gy = d["digits"]

    def lstm():
        return keras.Sequential([keras.Input((7,), dtype="int32"), keras.layers.Embedding(20, 4, mask_zero=True),
                                 keras.layers.LSTM(4), keras.layers.Dense(1, activation="sigmoid")])

    def pixels():
        return keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 1, activation="softmax")])

    def dict_inputs():
        a, b = keras.Input((20,), name="a"), keras.Input((10,), name="b")
        h = keras.layers.Dense(8, activation="tanh")(keras.layers.Concatenate()([a, b]))
        return keras.Model({"a": a, "b": b}, keras.layers.Dense(1, activation="sigmoid")(h))

    def float16():
        return keras.Sequential([keras.Input((30,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1),
                                 keras.layers.Activation("sigmoid", dtype="float32")])

    def two_outputs():
        inp = keras.Input((30,))
        h = keras.layers.Dense(8, activation="tanh")(inp)
        return keras.Model(inp, {"cls": keras.layers.Dense(1, activation="sigmoid", name="cls")(h),
                                 "reg": keras.layers.Dense(1, name="reg")(h)})

    onehot = np.eye(10, dtype="float32")[gy]
    return {
        "regression": dict(model=lambda: _dense((10,), 1), loss="mse", metrics=["mae", "mse"], x=d["diabetes"][0], y=d["diabetes"][1]),
        "binary": dict(model=lambda: _dense((30,), 1, "sigmoid"), loss="binary_crossentropy",
                       metrics=["accuracy", "auc", "precision"], x=cx, y=cy),
        "onehot": dict(model=lambda: _dense((64,), 10, "softmax"), loss="categorical_crossentropy", metrics=["accuracy"], x=gx, y=onehot),
        "sparse_probs": dict(model=lambda: _dense((64,), 10, "softmax"), loss="sparse_categorical_crossentropy",
                             metrics=["acc"], x=gx, y=gy),
        "sparse_logits": dict(model=lambda: _dense((64,), 10), loss=lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              metrics=["accuracy"], x=gx, y=gy),
        "dict_inputs": dict(model=dict_inputs, loss="binary_crossentropy", metrics=["accuracy"],
                            x={"a": cx[:, :20], "b": cx[:, 20:]}, y=cy),
        "masked_lstm": dict(model=lstm, loss="binary_crossentropy", metrics=["accuracy"], x=d["tokens"][0], y=d["tokens"][1]),
        "per_pixel": dict(model=pixels, loss="sparse_categorical_crossentropy", metrics=["accuracy"], x=d["pixels"][0], y=d["pixels"][1]),
        "float16": dict(model=float16, loss="binary_crossentropy", metrics=["accuracy"], x=cx, y=cy, policy="mixed_float16", tol=1e-4),
        "sample_weight": dict(model=lambda: _dense((30,), 1, "sigmoid"), loss="binary_crossentropy", metrics=["accuracy"],
                              x=cx, y=cy, w=d["weights"]),
        "two_outputs": dict(model=two_outputs, loss={"cls": "binary_crossentropy", "reg": "mse"}, loss_weights={"cls": 1.0, "reg": 0.5},
                            metrics={"cls": ["accuracy", "auc"], "reg": ["mae"]}, x=cx, y={"cls": cy, "reg": cx[:, 0] * 0.5}),
        "class_weight": dict(model=lambda: _dense((64,), 10, "softmax"), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                             x=gx, y=gy, class_weight={c: 1.0 + c / 5 for c in range(10)}),
    }


def _optimizer(policy):
    import keras

    opt = keras.optimizers.SGD(0.1)
    return keras.optimizers.LossScaleOptimizer(opt) if policy == "mixed_float16" else opt


def _loss(spec):
    return spec() if callable(spec) and not isinstance(spec, str) else spec


def _metrics(case):
    return dict(case["metrics"]) if isinstance(case["metrics"], dict) else list(case["metrics"])


def run_case(case, strategy=None):
    """(fit's evaluation, the Trainer's evaluation, fit's training logs, the Trainer's) for one case."""
    import keras
    import tensorflow as tf

    import tfcustom

    strategy = strategy or tf.distribute.get_strategy()
    keras.mixed_precision.set_global_policy(case.get("policy", "float32"))
    try:
        keras.utils.set_random_seed(0)
        ref = case["model"]()
        init = ref.get_weights()
        ref.compile(_optimizer(case.get("policy")), _loss(case["loss"]), metrics=_metrics(case), loss_weights=case.get("loss_weights"))
        x, y, w = case["x"], case["y"], case.get("w")
        hist = ref.fit(x, y, sample_weight=w, class_weight=case.get("class_weight"), batch_size=N, epochs=EPOCHS,
                       shuffle=False, verbose=0)
        want = ref.evaluate(x, y, sample_weight=w, batch_size=N, verbose=0, return_dict=True)
        with strategy.scope():
            ours = case["model"]()
            ours.set_weights(init)
            optimizer = _optimizer(case.get("policy"))
        trainer = tfcustom.Trainer(ours, _loss(case["loss"]), optimizer, metrics=_metrics(case), strategy=strategy, verbose=0,
                                   loss_weights=case.get("loss_weights"))
        data = (x, y) if w is None else (x, y, w)
        history = trainer.fit(data, epochs=EPOCHS, batch_size=N, class_weight=case.get("class_weight"))
        got = trainer.evaluate(data, batch_size=N)
        train_want = {k: float(v[-1]) for k, v in hist.history.items()}
        train_got = {k: float(history[k][-1]) for k in train_want if k in history.keys()}
        return ({k: float(v) for k, v in want.items()}, {k: float(v) for k, v in got.items()}, train_want, train_got)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def run_all(strategy=None):
    return {name: run_case(case, strategy) for name, case in cases().items()}


if __name__ == "__main__":
    import tensorflow as tf

    replicas = int(sys.argv[1])
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print("RESULT " + json.dumps(run_all(strategy)))
