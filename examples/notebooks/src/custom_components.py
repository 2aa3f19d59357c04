# %% [markdown]
# # Custom components: write them, check them, train with them three ways
#
# Keras lets you write every piece of a model yourself. This notebook writes five: a **Dense**
# layer, a numerically **stable Softmax**, a **subclassed model**, a cross-entropy **loss** and a
# **precision / recall / F1** metric. Each is checked against an independent reference before it is
# trained: Keras' own layers and losses, tfcustom's, finite-difference gradients
# (`tfcustom.testing.check_gradients`) and scikit-learn's F1.
#
# Then the model is trained three ways, from the same initial weights on the same batches:
# 1. a `tf.GradientTape` training step written by hand and compiled with `tf.function`;
# 2. the same step from `tfcustom.make_train_step`;
# 3. the `tfcustom.Trainer`.
#
# They end with the same weights: the Trainer is a thin loop around the same arithmetic you write by hand.
#
# **Runtime**: any; the CPU is enough.

# %% setup

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
EPOCHS = 3
TRAIN_EXAMPLES = 15000  # Fashion-MNIST training images used (0: all 60 000)
BATCH_SIZE = 128
HIDDEN_UNITS = 128
LEARNING_RATE = 1e-3
SEED = 0

# %%
import json

import keras
from IPython.display import display
import numpy as np
import tensorflow as tf
from keras import ops
from sklearn.metrics import f1_score, precision_score, recall_score

import tfcustom
from tfcustom.data import InputPipeline, Split
from tfcustom.testing import check_gradients

keras.utils.set_random_seed(SEED)
tf.config.experimental.enable_op_determinism()
rng = np.random.default_rng(SEED)

# %% [markdown]
# ## 1. A Dense layer
# `build` creates the weights once the input size is known; `call` is the forward pass;
# `get_config` and the registration let Keras save and reload the layer (and let `check_gradients`
# rebuild a float64 copy of it).

# %%
@keras.saving.register_keras_serializable(package="notebook")
class MyDense(keras.layers.Layer):
    """``activation(inputs @ kernel + bias)``."""

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        return self.activation(ops.matmul(inputs, self.kernel) + self.bias)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": keras.activations.serialize(self.activation)}


# %% [markdown]
# **Check**: same outputs as `keras.layers.Dense` and tfcustom's `Dense` holding the same weights,
# and tape gradients equal to central finite differences (float64).

# %%
x = rng.normal(size=(16, 20)).astype("float32")
mine = MyDense(8, activation="relu")
mine(x)
keras_dense = keras.layers.Dense(8, activation="relu")
keras_dense(x)
keras_dense.set_weights(mine.get_weights())
tfc_dense = tfcustom.layers.Dense(8, activation="relu")
tfc_dense(x)
tfc_dense.set_weights(mine.get_weights())
dense_vs_keras = float(np.max(np.abs(mine(x) - keras_dense(x))))
dense_vs_tfcustom = float(np.max(np.abs(mine(x) - tfc_dense(x))))
dense_gradient_error = check_gradients(MyDense(8, activation="tanh"), x[:4])
print(f"MyDense vs keras.layers.Dense: max difference {dense_vs_keras:.2g}; vs tfcustom.layers.Dense: {dense_vs_tfcustom:.2g}")
print(f"MyDense gradients vs finite differences: relative error {dense_gradient_error:.1e}")

# %% [markdown]
# ## 2. A stable Softmax
# `exp(x) / sum(exp(x))` overflows for large logits (`exp(1000)` is `inf`, and `inf / inf` is NaN).
# Subtracting the row maximum first changes nothing mathematically and keeps every `exp` in (0, 1].

# %%
@keras.saving.register_keras_serializable(package="notebook")
class MySoftmax(keras.layers.Layer):
    def call(self, inputs):
        shifted = inputs - ops.stop_gradient(ops.max(inputs, axis=-1, keepdims=True))
        e = ops.exp(shifted)
        return e / ops.sum(e, axis=-1, keepdims=True)


def naive_softmax(z):
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


big = np.array([[1000.0, 0.0, -1000.0], [3.0, 1.0, 0.2]], dtype="float32")
with np.errstate(over="ignore", invalid="ignore"):
    print("naive softmax:  ", naive_softmax(big).astype(float).round(4).tolist())
print("MySoftmax:      ", MySoftmax()(big).numpy().astype(float).round(4).tolist())
logits = rng.normal(scale=5.0, size=(32, 10)).astype("float32")
softmax_vs_keras = float(np.max(np.abs(MySoftmax()(logits) - keras.activations.softmax(logits))))
softmax_vs_tfcustom = float(np.max(np.abs(MySoftmax()(logits) - tfcustom.layers.Softmax()(logits))))
softmax_gradient_error = check_gradients(MySoftmax(), logits[:4])
print(f"MySoftmax vs keras.activations.softmax: {softmax_vs_keras:.2g}; vs tfcustom.layers.Softmax: {softmax_vs_tfcustom:.2g}")
print(f"MySoftmax gradients vs finite differences: relative error {softmax_gradient_error:.1e}")

# %% [markdown]
# ## 3. A subclassed model
# `__init__` creates the layers, `call` wires them. The model returns **logits**; the softmax is
# applied when probabilities are wanted (`predict_proba`): the loss on logits is more accurate.

# %%
@keras.saving.register_keras_serializable(package="notebook")
class MyClassifier(keras.Model):
    def __init__(self, hidden_units=128, num_classes=10, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units, self.num_classes = hidden_units, num_classes
        self.flatten = keras.layers.Flatten()
        self.hidden = MyDense(hidden_units, activation="relu", name="hidden")
        self.logits = MyDense(num_classes, name="logits")
        self.softmax = MySoftmax()

    def build(self, input_shape):  # creates the variables, so that model.build(shape) works too
        self.hidden.build((None, int(np.prod(input_shape[1:]))))
        self.logits.build((None, self.hidden_units))

    def call(self, inputs, training=None):
        return self.logits(self.hidden(self.flatten(inputs)))

    def predict_proba(self, inputs):
        return self.softmax(self(inputs))

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "num_classes": self.num_classes}


model = MyClassifier(HIDDEN_UNITS)
model.build((None, 28, 28, 1))
print("variables:", [(v.path, tuple(v.shape)) for v in model.weights])
images = rng.random((8, 28, 28, 1)).astype("float32")
reference = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(HIDDEN_UNITS, activation="relu"), keras.layers.Dense(10)])
reference.set_weights(model.get_weights())
model_vs_keras = float(np.max(np.abs(model(images) - reference(images))))
print(f"MyClassifier vs a Keras Sequential with the same weights: max logit difference {model_vs_keras:.2g}")

# %% [markdown]
# ## 4. A loss
# Cross-entropy from logits: `-log softmax(z)[y] = logsumexp(z) - z[y]`, stable for any logits.
# `call` returns one value per example; Keras (and tfcustom's step) reduce them.

# %%
@keras.saving.register_keras_serializable(package="notebook")
class MyCrossEntropy(keras.losses.Loss):
    def call(self, y_true, logits):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        true_logit = ops.take_along_axis(logits, y_true[:, None], axis=-1)[:, 0]
        return ops.logsumexp(logits, axis=-1) - true_logit


labels = rng.integers(0, 10, size=32)
loss_mine = float(MyCrossEntropy()(labels, logits))
loss_keras = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits))
loss_tfcustom = float(tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits))
loss_gradient_error = check_gradients(lambda z: MyCrossEntropy().call(labels[:8], z), logits[:8].astype("float64"))
print(f"cross-entropy: mine {loss_mine:.6f}, Keras {loss_keras:.6f}, tfcustom {loss_tfcustom:.6f}")
print(f"MyCrossEntropy gradients vs finite differences: relative error {loss_gradient_error:.1e}")
print("at logits of +-1e4:", float(MyCrossEntropy()(np.array([1]), np.array([[1e4, -1e4, 0.0]], "float32"))), "(finite)")

# %% [markdown]
# ## 5. A precision / recall / F1 metric
# A metric keeps **state** across batches: here the confusion matrix (true class x predicted class).
# Precision, recall and F1 come from its counts at the end, so the result is exact over uneven
# batches (averaging per-batch F1 scores would not be). `result()` is the macro F1 (the mean over classes).

# %%
@keras.saving.register_keras_serializable(package="notebook")
class MyF1(keras.metrics.Metric):
    def __init__(self, num_classes=10, name="my_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.counts = self.add_variable(shape=(num_classes, num_classes), initializer="zeros", name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        pairs = ops.one_hot(y_true, self.num_classes)[:, :, None] * ops.one_hot(predicted, self.num_classes)[:, None, :]
        self.counts.assign_add(ops.sum(pairs, axis=0))

    def scores(self):
        tp = ops.diagonal(self.counts)
        precision = ops.divide_no_nan(tp, ops.sum(self.counts, axis=0))
        recall = ops.divide_no_nan(tp, ops.sum(self.counts, axis=1))
        f1 = ops.divide_no_nan(2 * precision * recall, precision + recall)
        return precision, recall, f1

    def result(self):
        return ops.mean(self.scores()[2])

    def reset_state(self):
        self.counts.assign(ops.zeros_like(self.counts))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


y_true = rng.integers(0, 10, size=1000)
y_logits = rng.normal(size=(1000, 10)) + 2.0 * np.eye(10)[y_true]  # better than chance, far from perfect
mine_f1, tfc_f1 = MyF1(10), tfcustom.metrics.F1Score(num_classes=10)
for start, stop in ((0, 7), (7, 300), (300, 1000)):  # uneven batches
    mine_f1.update_state(y_true[start:stop], y_logits[start:stop])
    tfc_f1.update_state(y_true[start:stop], y_logits[start:stop])
y_hat = y_logits.argmax(axis=1)
p, r, f = (v.numpy() for v in mine_f1.scores())
f1_vs_sklearn = max(abs(float(mine_f1.result()) - f1_score(y_true, y_hat, average="macro")),
                    float(np.max(np.abs(p - precision_score(y_true, y_hat, average=None)))),
                    float(np.max(np.abs(r - recall_score(y_true, y_hat, average=None)))))
print(f"macro F1: mine {float(mine_f1.result()):.6f}, tfcustom {float(tfc_f1.result()):.6f}, "
      f"scikit-learn {f1_score(y_true, y_hat, average='macro'):.6f}")
print(f"per-class precision, recall and F1 vs scikit-learn: max difference {f1_vs_sklearn:.1e}")

# %% [markdown]
# ## 6. Data
# A subset of Fashion-MNIST. `InputPipeline` gives each epoch a seeded order, so the three training
# methods below see exactly the same batches.

# %%
ds = tfcustom.distribute.colab.load_fashion_mnist()
train = Split(ds.train.x[:TRAIN_EXAMPLES or None], ds.train.y[:TRAIN_EXAMPLES or None])
pipe = InputPipeline(train, BATCH_SIZE, shuffle=True, seed=SEED)
test_pipe = InputPipeline(ds.test, 1000)
print(f"{len(train)} training images, {pipe.steps_per_epoch} steps per epoch, {EPOCHS} epochs")

keras.utils.set_random_seed(SEED)
initial = MyClassifier(HIDDEN_UNITS)
initial.build((None, 28, 28, 1))
initial_weights = initial.get_weights()


def fresh_model():
    """A new model holding the same initial weights, and a new optimizer."""
    m = MyClassifier(HIDDEN_UNITS)
    m.build((None, 28, 28, 1))
    m.set_weights(initial_weights)
    return m, keras.optimizers.Adam(LEARNING_RATE)


# %% [markdown]
# ## 7. Training by hand: `GradientTape` + `tf.function`
# One step: forward pass under the tape, loss, gradients, update. `tf.function` compiles the step
# into a graph; the `input_signature` (batch size `None`) makes one graph serve every batch,
# including the smaller last one. The Python `print` inside runs only while tracing: it shows how
# often the function is traced. Building the optimizer first creates its slot variables outside the
# function; otherwise the first call creates them and `tf.function` traces a second time.

# %%
model_a, optimizer_a = fresh_model()
optimizer_a.build(model_a.trainable_variables)
loss_fn = MyCrossEntropy()
f1_a = MyF1(10)


@tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32), tf.TensorSpec([None], tf.int32)])
def train_step(x, y):
    print("tracing train_step")
    with tf.GradientTape() as tape:
        logits = model_a(x, training=True)
        loss = loss_fn(y, logits)  # the mean over the batch
    grads = tape.gradient(loss, model_a.trainable_variables)
    optimizer_a.apply_gradients(zip(grads, model_a.trainable_variables))
    f1_a.update_state(y, logits)
    return loss


curve_a = []  # each epoch's mean loss, for the picture in section 9
for epoch in range(EPOCHS):
    f1_a.reset_state()
    losses, sizes = zip(*[(float(train_step(x, y)), len(y)) for x, y in pipe.dataset(epoch)])
    curve_a.append(float(np.average(losses, weights=sizes)))
    print(f"epoch {epoch + 1}: mean loss {np.average(losses, weights=sizes):.4f}, train F1 {float(f1_a.result()):.4f}")

# %% [markdown]
# ## 8. The same step from `tfcustom.make_train_step`
# It computes the same thing (read `tfcustom/training/steps.py`), under any `tf.distribute` strategy, and runs
# several steps per call: here a whole epoch in one call.

# %%
model_b, optimizer_b = fresh_model()
f1_b, loss_b = MyF1(10), keras.metrics.Mean()
step = tfcustom.make_train_step(model_b, MyCrossEntropy(), optimizer_b, metrics=[f1_b], loss_tracker=loss_b)
curve_b = []
for epoch in range(EPOCHS):
    f1_b.reset_state()
    loss_b.reset_state()
    out = step(iter(pipe.dataset(epoch)), tf.constant(pipe.steps_per_epoch))
    curve_b.append(float(loss_b.result()))
    print(f"epoch {epoch + 1}: {int(out['steps_run'])} steps, mean loss {float(loss_b.result()):.4f}, train F1 {float(f1_b.result()):.4f}")

# %% [markdown]
# ## 9. The same with the `Trainer`
# The loop with a progress bar, history and evaluation, around the same compiled step. The custom
# metric goes in like a built-in one.

# %%
model_c, optimizer_c = fresh_model()
trainer = tfcustom.Trainer(model_c, MyCrossEntropy(), optimizer_c, metrics=["accuracy", MyF1(10)])
history = trainer.fit(pipe, epochs=EPOCHS)

# %% [markdown]
# The three loops' loss curves on one axis: they coincide (the same arithmetic in the same order).

# %%
import matplotlib.pyplot as plt

epochs_axis = np.arange(1, EPOCHS + 1)
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot(epochs_axis, curve_a, "o-", lw=4, alpha=0.35, label="the hand-written step")
ax.plot(epochs_axis, curve_b, "s--", lw=2, label="tfcustom.make_train_step")
ax.plot(epochs_axis, history["loss"], "x:", ms=10, color="black", label="tfcustom.Trainer")
ax.set(xlabel="epoch", ylabel="mean training loss", title="Three loops, one curve", xticks=epochs_axis)
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 10. Same weights?
# The largest difference between corresponding weights after training, relative to the weight's
# largest magnitude. The three methods do the same float32 arithmetic in the same order, so they
# agree to float32 round-off or better (the stated tolerance is 1e-5; on a CPU they are usually
# bitwise equal). The last column shows that training did move the weights.

# %%
TOLERANCE = 1e-5
rows = []
for va, vb, vc in zip(model_a.weights, model_b.weights, model_c.weights):
    a, b, c = (np.asarray(v) for v in (va, vb, vc))
    scale = np.max(np.abs(a))
    rows.append((va.path.split("/", 1)[1], a.shape, np.max(np.abs(a - b)) / scale, np.max(np.abs(a - c)) / scale,
                 np.max(np.abs(a - np.asarray(initial_weights[len(rows)]))) / scale))
print(f"{'weight':<16}{'shape':<12}{'hand vs make_train_step':>25}{'hand vs Trainer':>18}{'moved in training':>20}")
for name, shape, ab, ac, moved in rows:
    print(f"{name:<16}{str(shape):<12}{ab:>25.1e}{ac:>18.1e}{moved:>20.3f}")
weights_hand_vs_step = float(max(r[2] for r in rows))
weights_hand_vs_trainer = float(max(r[3] for r in rows))

# %% [markdown]
# ## 11. Test accuracy and F1
# The trained model on the 10 000 test images, with the custom metric checked against scikit-learn
# once more.

# %%
results = trainer.evaluate(test_pipe)
test_logits = trainer.predict(test_pipe)
test_pred = test_logits.argmax(axis=1)
sk_f1 = f1_score(ds.test.y, test_pred, average="macro")
matrix = tfcustom.metrics.ConfusionMatrix(num_classes=10)
matrix.update_state(ds.test.y, test_logits)
display(tfcustom.experiment.plots.plot_confusion_matrix(matrix.result().numpy().astype(int), ds.class_names))
print(f"test accuracy {results['accuracy']:.4f}, macro F1: mine {results['my_f1']:.4f}, scikit-learn {sk_f1:.4f}")
probabilities = model_c.predict_proba(ds.test.x[:3].astype("float32") / 255.0).numpy()
for i in range(3):
    print(f"image {i}: {ds.class_names[probabilities[i].argmax()]} ({probabilities[i].max():.1%}), true {ds.class_names[ds.test.y[i]]}")

# %% [markdown]
# ## What this run showed

# %%
FACTS = {
    "dense_vs_keras": dense_vs_keras, "dense_vs_tfcustom": dense_vs_tfcustom, "dense_gradient_error": dense_gradient_error,
    "softmax_vs_keras": softmax_vs_keras, "softmax_vs_tfcustom": softmax_vs_tfcustom,
    "softmax_gradient_error": softmax_gradient_error, "model_vs_keras": model_vs_keras,
    "loss_vs_keras": abs(loss_mine - loss_keras), "loss_vs_tfcustom": abs(loss_mine - loss_tfcustom),
    "loss_gradient_error": loss_gradient_error, "f1_vs_sklearn": f1_vs_sklearn,
    "f1_vs_tfcustom": abs(float(mine_f1.result()) - float(tfc_f1.result())),
    "weights_hand_vs_step": weights_hand_vs_step, "weights_hand_vs_trainer": weights_hand_vs_trainer,
    "tolerance": TOLERANCE, "test_accuracy": results["accuracy"], "test_f1_vs_sklearn": abs(results["my_f1"] - sk_f1),
}
assert max(FACTS["dense_vs_keras"], FACTS["dense_vs_tfcustom"], FACTS["softmax_vs_keras"],
           FACTS["softmax_vs_tfcustom"], FACTS["model_vs_keras"], FACTS["loss_vs_keras"], FACTS["loss_vs_tfcustom"]) < 1e-5
assert max(FACTS["dense_gradient_error"], FACTS["softmax_gradient_error"], FACTS["loss_gradient_error"]) < 1e-6
assert max(FACTS["f1_vs_sklearn"], FACTS["f1_vs_tfcustom"], FACTS["test_f1_vs_sklearn"]) < 1e-5
assert max(FACTS["weights_hand_vs_step"], FACTS["weights_hand_vs_trainer"]) < TOLERANCE
print("NOTEBOOK_FACTS " + json.dumps(FACTS))
