# %% [markdown]
# # tfcustom quickstart: train, inspect and reuse a Fashion-MNIST classifier
#
# This notebook walks through the whole path once: load Fashion-MNIST, let tfcustom pick where to
# train (TPU, GPU or CPU), build a small convnet, train it with the `Trainer` (a progress bar per
# epoch), then look at what it learned: learning curves, test accuracy, a confusion matrix and the
# test images it gets wrong. Finally it saves the model, reloads it and predicts a few images.
#
# **Runtime**: any. The CPU is enough (a few minutes); *Runtime > Change runtime type > T4 GPU* is faster.
# Run the cells in order (*Runtime > Run all*).

# %% setup

# %% [markdown]
# ## Parameters
# The sizes of the run. The committed notebook shows a full run on a CPU with these values; the
# test suite runs it with tiny ones (one epoch on a few thousand images).

# %% tags=["parameters"]
EPOCHS = 3  # passes over the training images
TRAIN_EXAMPLES = 20000  # training images used (0: all 55 000 left after holding out 5 000 for validation)
TEST_EXAMPLES = 0  # test images evaluated (0: all 10 000)
BATCH_SIZE = 128
SEED = 0  # same seed, same numbers
WORK_DIR = "quickstart_run"  # where the model is saved

# %% [markdown]
# ## 1. Where to train
# `tfcustom.distribute.strategy.select("auto")` picks a TPU if one is reachable, else the GPU(s), else the CPU.
# Call it first, before any other TensorFlow operation. The seed makes the run repeatable:
# `enable_op_determinism` makes TensorFlow's kernels deterministic too.

# %%
import os
import json

import keras
import matplotlib.pyplot as plt
from IPython.display import display
import numpy as np
import tensorflow as tf

import tfcustom
from tfcustom.data import InputPipeline, Split, split_validation

strategy = tfcustom.distribute.strategy.select("auto")
print("Training on:", tfcustom.distribute.strategy.describe(strategy))
keras.utils.set_random_seed(SEED)
tf.config.experimental.enable_op_determinism()

# %% [markdown]
# ## 2. Data
# 60 000 training and 10 000 test images of 28x28 grey pixels, 10 classes of clothing.
# `load_fashion_mnist` reads the IDX files where they are installed and downloads them otherwise
# (Colab). 5 000 training images are held out for validation, chosen by the seed.

# %%
ds = tfcustom.distribute.colab.load_fashion_mnist()
class_names = list(ds.class_names)
train, val = split_validation(ds.train, num_validation=5000, seed=SEED)
if TRAIN_EXAMPLES:
    train = Split(train.x[:TRAIN_EXAMPLES], train.y[:TRAIN_EXAMPLES])
test = ds.test if not TEST_EXAMPLES else Split(ds.test.x[:TEST_EXAMPLES], ds.test.y[:TEST_EXAMPLES])
print(f"train {train.x.shape}, validation {val.x.shape}, test {test.x.shape}, pixels {train.x.dtype}")

fig, axes = plt.subplots(1, 10, figsize=(13, 1.9))
for ax, c in zip(axes, range(10)):
    i = int(np.flatnonzero(train.y == c)[0])
    ax.imshow(train.x[i, :, :, 0], cmap="gray_r")
    ax.set_title(class_names[c], fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# `InputPipeline` turns the arrays into `tf.data` input: pixels scaled to [0, 1], batched, and
# shuffled in a new seeded order each epoch (the global batch is split over the replicas, if any).

# %%
train_pipe = InputPipeline(train, BATCH_SIZE, shuffle=True, seed=SEED)
val_pipe = InputPipeline(val, 1000)
test_pipe = InputPipeline(test, 1000)
print(f"{train_pipe.steps_per_epoch} steps per epoch")

# %% [markdown]
# ## 3. Model
# A small convnet from `tfcustom.models` (conv 16 -> pool -> conv 32 -> pool -> dense 64 -> 10 logits).
# The model **and the optimizer** are created under `strategy.scope()`; calling the model once
# creates its variables there. The model outputs logits, so the loss gets `from_logits=True`.

# %%
with strategy.scope():
    model = tfcustom.models.get("cnn", num_classes=10, filters=[16, 32], dense_units=64)
    model(tf.zeros((1, 28, 28, 1)))
    optimizer = keras.optimizers.Adam(1e-3)
model.summary()

# %% [markdown]
# ## 4. Train
# The `Trainer` runs the compiled `GradientTape` step of `tfcustom.training.steps` (read it: it is short),
# shows a progress bar per epoch and evaluates on the validation images at each epoch end.

# %%
trainer = tfcustom.Trainer(
    model,
    tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True),
    optimizer,
    metrics=["accuracy"],
    strategy=strategy,
)
history = trainer.fit(train_pipe, epochs=EPOCHS, validation_data=val_pipe)

# %% [markdown]
# ## 5. Learning curves
# Training and validation loss and accuracy per epoch. A validation curve that turns up while the
# training curve keeps going down is overfitting.

# %%
epochs = history["epoch"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(epochs, history["loss"], "o-", label="train")
ax1.plot(epochs, history["val_loss"], "o-", label="validation")
ax1.set(xlabel="epoch", ylabel="loss", title="loss")
ax2.plot(epochs, history["accuracy"], "o-", label="train")
ax2.plot(epochs, history["val_accuracy"], "o-", label="validation")
ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
for ax in (ax1, ax2):
    ax.legend()
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
for record in history.records:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items() if k != "time_s"})

# %% [markdown]
# ## 6. Test accuracy and the confusion matrix
# `evaluate` sees every test image once. `ConfusionMatrix` counts (true class, predicted class)
# pairs; the diagonal holds the correct predictions (left: counts, right: each true class's rates).

# %%
results = trainer.evaluate(test_pipe)
print(f"test loss {results['loss']:.4f}, test accuracy {results['accuracy']:.4f} on {len(test)} images")

logits = trainer.predict(test_pipe)
probabilities = tf.nn.softmax(logits).numpy()
predicted = probabilities.argmax(axis=1)
matrix = tfcustom.metrics.ConfusionMatrix(num_classes=10)
matrix.update_state(test.y, logits)
counts = matrix.result().numpy().astype(int)

display(tfcustom.experiment.plots.plot_confusion_matrix(counts, class_names))
worst = np.argsort(counts.diagonal() / counts.sum(axis=1))[:3]
print("hardest classes:", ", ".join(f"{class_names[c]} ({counts[c, c] / counts[c].sum():.1%} right)" for c in worst))

# %% [markdown]
# ## 7. What it gets wrong
# The 16 misclassified test images the model was most sure of, with the true class, the predicted
# class and the probability the model gave its prediction (`tfcustom.experiment.plots`).

# %%
display(tfcustom.experiment.plots.plot_misclassified(test.x, test.y, probabilities, class_names, num=16))
print(f"{np.sum(predicted != test.y)} of {len(test)} test images misclassified")

# %% [markdown]
# ## 8. Save, reload, predict
# A `.keras` file holds the architecture and the weights. tfcustom's layers and models are
# registered with Keras, so after `import tfcustom` the file loads with `keras.models.load_model`.

# %%
os.makedirs(WORK_DIR, exist_ok=True)
path = os.path.join(WORK_DIR, "model.keras")
model.save(path)
reloaded = keras.models.load_model(path)
few = test.x[:8].astype("float32") / 255.0
reloaded_logits = reloaded.predict(few, verbose=0)
reload_difference = float(np.max(np.abs(reloaded_logits - logits[:8])))
print(f"saved {path} ({os.path.getsize(path) / 1024:.0f} KiB); reloaded model vs original: max logit difference {reload_difference:.2g}")

p = tf.nn.softmax(reloaded_logits).numpy()
fig, axes = plt.subplots(1, 8, figsize=(14, 2.4))
for ax, i in zip(axes, range(8)):
    ax.imshow(test.x[i, :, :, 0], cmap="gray_r")
    ok = p[i].argmax() == test.y[i]
    ax.set_title(f"{class_names[p[i].argmax()]} {p[i].max():.0%}", fontsize=8, color="black" if ok else "firebrick")
    ax.axis("off")
plt.show()
for i in range(8):
    print(f"image {i}: predicted {class_names[p[i].argmax()]:<12} ({p[i].max():6.1%}), true {class_names[test.y[i]]}")

# %% [markdown]
# ## What this run showed
# The final cell checks what the notebook promised (the test suite reads these values).

# %%
FACTS = {
    "test_accuracy": results["accuracy"],
    "numpy_accuracy": float(np.mean(predicted == test.y)),
    "confusion_total": int(counts.sum()),
    "confusion_correct": int(counts.trace()),
    "test_examples": len(test),
    "reload_difference": reload_difference,
    "epochs": len(history),
}
assert abs(FACTS["test_accuracy"] - FACTS["numpy_accuracy"]) < 1e-6  # evaluate() == NumPy on the predictions
assert FACTS["confusion_total"] == len(test) and FACTS["confusion_correct"] == int(np.sum(predicted == test.y))
assert FACTS["reload_difference"] < 1e-5  # the reloaded model is the trained one
assert FACTS["test_accuracy"] > 0.5  # far above chance (0.1) even after a tiny run
print("NOTEBOOK_FACTS " + json.dumps(FACTS))
