# %% [markdown]
# # From scratch: backpropagation by hand, gradient descent by hand and by autodiff
#
# Before letting TensorFlow differentiate for you, do it once yourself:
# 1. a two-layer neural network in NumPy, forward **and backward** written by hand, its gradients
#    checked against `tf.GradientTape` and against finite differences (`tfcustom.testing.check_gradients`),
#    then trained by hand on scikit-learn's handwritten digits;
# 2. **linear regression** on scikit-learn's diabetes data: gradient descent with a hand-derived
#    gradient and with `tf.GradientTape`, both converging to the closed-form least-squares solution;
# 3. **logistic regression** on scikit-learn's breast-cancer data: the same two gradient descents,
#    converging to scikit-learn's `LogisticRegression`.
#
# Everything runs in float64, so "equal" means equal to ~1e-12, and the stated tolerances are met with room.
#
# **Runtime**: any; the CPU is enough (about a minute).

# %% setup

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
HIDDEN_UNITS = 32  # hidden layer of the two-layer network
NET_EPOCHS = 300  # full-batch gradient-descent steps for the network
NET_LEARNING_RATE = 0.5
LINEAR_STEPS = 20000  # gradient-descent steps for linear regression
LOGISTIC_STEPS = 60000  # gradient-descent steps for logistic regression
SEED = 0

# %%
import json

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split

import tfcustom
from tfcustom.testing import check_gradients

rng = np.random.default_rng(SEED)
tf.random.set_seed(SEED)


def relative_error(a, b):
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# %% [markdown]
# ## 1. A two-layer network by hand
# `h = tanh(x W1 + b1)`, `z = h W2 + b2`, `p = softmax(z)`, loss = mean cross-entropy.
#
# Backward, by the chain rule, for a batch of `n` examples with one-hot labels `Y`:
# `dz = (p - Y) / n`, `dW2 = h^T dz`, `db2 = sum(dz)`, `dh = dz W2^T`, `da = dh * (1 - h^2)`,
# `dW1 = x^T da`, `db1 = sum(da)`.

# %%
def init_params(n_in, n_hidden, n_out, rng):
    return {
        "W1": rng.normal(scale=np.sqrt(1.0 / n_in), size=(n_in, n_hidden)),
        "b1": np.zeros(n_hidden),
        "W2": rng.normal(scale=np.sqrt(1.0 / n_hidden), size=(n_hidden, n_out)),
        "b2": np.zeros(n_out),
    }


def forward(params, x):
    h = np.tanh(x @ params["W1"] + params["b1"])
    z = h @ params["W2"] + params["b2"]
    z = z - z.max(axis=1, keepdims=True)  # stable softmax
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return h, p


def loss_and_grads(params, x, y):
    n = len(x)
    h, p = forward(params, x)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    dz = p.copy()
    dz[np.arange(n), y] -= 1.0
    dz /= n
    dh = dz @ params["W2"].T
    da = dh * (1.0 - h**2)
    grads = {"W1": x.T @ da, "b1": da.sum(axis=0), "W2": h.T @ dz, "b2": dz.sum(axis=0)}
    return loss, grads


digits = load_digits()
x_all, y_all = digits.data / 16.0, digits.target
x_train, x_test, y_train, y_test = train_test_split(x_all, y_all, test_size=0.3, random_state=SEED, stratify=y_all)
params = init_params(64, HIDDEN_UNITS, 10, rng)
loss, hand_grads = loss_and_grads(params, x_train, y_train)
print(f"digits: {x_train.shape[0]} training and {x_test.shape[0]} test images of 8x8 pixels; initial loss {loss:.4f} (log 10 = {np.log(10):.4f})")

# %% [markdown]
# **Check 1**: the same forward pass written with TensorFlow ops, differentiated by `tf.GradientTape`.

# %%
variables = {k: tf.Variable(v, dtype=tf.float64, name=k) for k, v in params.items()}
xt, yt = tf.constant(x_train), tf.constant(y_train)


def tf_loss(x, y):
    h = tf.tanh(x @ variables["W1"] + variables["b1"])
    z = h @ variables["W2"] + variables["b2"]
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))


with tf.GradientTape() as tape:
    tape_loss = tf_loss(xt, yt)
tape_grads = dict(zip(variables, tape.gradient(tape_loss, list(variables.values()))))
hand_vs_tape = max(relative_error(hand_grads[k], tape_grads[k]) for k in params)
print(f"loss: by hand {loss:.12f}, TensorFlow {float(tape_loss):.12f}")
for k in params:
    print(f"  d loss / d {k:<3} {str(params[k].shape):<9} hand vs tape: relative error {relative_error(hand_grads[k], tape_grads[k]):.1e}")

# %% [markdown]
# **Check 2**: the tape's gradients against central finite differences, `(f(w + e) - f(w - e)) / 2e`
# for every weight (on 32 examples, to keep it quick). Together: hand = tape = finite differences.
# The function's input is a vector of example indices (integers are not differentiated), so only
# the weights are checked.

# %%
fd_error = check_gradients(lambda i: tf_loss(tf.gather(xt, i), tf.gather(yt, i)), tf.range(32),
                           variables=list(variables.values()))
print(f"tape vs finite differences (all {sum(v.shape.num_elements() for v in variables.values())} weights): relative error {fd_error:.1e}")

# %% [markdown]
# **Training by hand**: full-batch gradient descent, `w <- w - learning_rate * dL/dw`.

# %%
curve = []
for epoch in range(NET_EPOCHS):
    loss, grads = loss_and_grads(params, x_train, y_train)
    for k in params:
        params[k] -= NET_LEARNING_RATE * grads[k]
    curve.append(loss)
net_test_accuracy = float(np.mean(forward(params, x_test)[1].argmax(axis=1) == y_test))
print("loss every 50 steps:", [round(float(l), 4) for l in curve[::50]], "final", round(float(curve[-1]), 4))
print(f"test accuracy of the hand-trained network: {net_test_accuracy:.4f}")

# %% [markdown]
# ## 2. Linear regression: closed form, GD by hand, GD by autodiff
# Minimize the mean squared error `L(w) = mean((X w - y)^2)` (X has a column of ones for the
# intercept). Closed form: the least-squares solution. By hand: `dL/dw = 2/n X^T (X w - y)`.
# By autodiff: the tape computes the same gradient from the loss. Features are standardized so
# that one step size suits all; the step is `1 / L` with `L` the largest curvature (eigenvalue of the Hessian).

# %%
X, y = load_diabetes(return_X_y=True)
X = (X - X.mean(axis=0)) / X.std(axis=0)
A = np.c_[X, np.ones(len(X))]
closed_form = np.linalg.lstsq(A, y, rcond=None)[0]
sk = LinearRegression().fit(X, y)
sklearn_linear = np.r_[sk.coef_, sk.intercept_]
hessian = 2.0 / len(A) * A.T @ A
lr = 1.0 / np.linalg.eigvalsh(hessian).max()
print(f"diabetes: {A.shape[0]} patients, {X.shape[1]} features; step size {lr:.4f}, condition number {np.linalg.cond(hessian):.0f}")

w = np.zeros(A.shape[1])
for _ in range(LINEAR_STEPS):
    w -= lr * 2.0 / len(A) * A.T @ (A @ w - y)
linear_hand = w

w_tf = tf.Variable(tf.zeros(A.shape[1], tf.float64))
At, ytf = tf.constant(A), tf.constant(y)


@tf.function
def linear_gd(steps):
    for _ in tf.range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((tf.linalg.matvec(At, w_tf) - ytf) ** 2)
        w_tf.assign_sub(lr * tape.gradient(loss, w_tf))


linear_gd(tf.constant(LINEAR_STEPS))
linear_tape = w_tf.numpy()

names = list(load_diabetes().feature_names) + ["intercept"]
print(f"{'coefficient':<12}{'closed form':>14}{'scikit-learn':>14}{'GD by hand':>14}{'GD autodiff':>14}")
for i, name in enumerate(names):
    print(f"{name:<12}{closed_form[i]:>14.6f}{sklearn_linear[i]:>14.6f}{linear_hand[i]:>14.6f}{linear_tape[i]:>14.6f}")
linear_hand_vs_closed = relative_error(linear_hand, closed_form)
linear_tape_vs_closed = relative_error(linear_tape, closed_form)
linear_hand_vs_tape = relative_error(linear_hand, linear_tape)
print(f"relative error vs closed form: by hand {linear_hand_vs_closed:.1e}, autodiff {linear_tape_vs_closed:.1e}; "
      f"hand vs autodiff {linear_hand_vs_tape:.1e} (stated tolerance 1e-10)")

# %% [markdown]
# **Convergence, in pictures**: left, the linear model's loss under gradient descent minus the
# closed-form optimum (log scale: a straight line is the linear rate that the step `1 / L` promises);
# right, the loss of the network trained by hand in part 1.

# %%
import matplotlib.pyplot as plt

optimum = np.mean((A @ closed_form - y) ** 2)
w, gaps = np.zeros(A.shape[1]), []
for _ in range(LINEAR_STEPS):
    gaps.append(np.mean((A @ w - y) ** 2) - optimum)
    w -= lr * 2.0 / len(A) * A.T @ (A @ w - y)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.semilogy(np.maximum(gaps, 1e-16))
ax1.set(xlabel="GD step", ylabel="loss - closed-form optimum", title="Linear regression (diabetes)")
ax2.plot(curve)
ax2.set(xlabel="full-batch GD step", ylabel="cross-entropy", title="The network trained by hand (digits)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Logistic regression: scikit-learn, GD by hand, GD by autodiff
# scikit-learn's `LogisticRegression(C=1.0)` (its default) minimizes
# `sum_i logloss_i + ||w||^2 / 2` (the intercept is not penalized); its Newton solver reaches
# that minimum to machine precision. Divided by `n`, that is
# `L(w) = mean(logloss) + ||w||^2 / (2 n)`, with gradient
# `dL/dw = X^T (sigmoid(X w + b) - y) / n + w / n` and `dL/db = mean(sigmoid(X w + b) - y)`.
# The penalty makes the problem strongly convex (without it this nearly separable data has no
# finite optimum), so gradient descent converges to the one solution scikit-learn finds.

# %%
X, y = load_breast_cancer(return_X_y=True)
X = (X - X.mean(axis=0)) / X.std(axis=0)
n, d = X.shape
sk = LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-14, max_iter=1000).fit(X, y)
sklearn_logistic = np.r_[sk.coef_[0], sk.intercept_]
lr = 1.0 / (0.25 * np.linalg.eigvalsh(np.c_[X, np.ones(n)].T @ np.c_[X, np.ones(n)] / n).max() + 1.0 / n)
print(f"breast cancer: {n} tumours, {d} features; step size {lr:.4f}")


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


w, b = np.zeros(d), 0.0
for _ in range(LOGISTIC_STEPS):
    r = sigmoid(X @ w + b) - y
    w, b = w - lr * (X.T @ r / n + w / n), b - lr * r.mean()
logistic_hand = np.r_[w, b]

w_tf, b_tf = tf.Variable(tf.zeros(d, tf.float64)), tf.Variable(tf.constant(0.0, tf.float64))
Xt, ytf = tf.constant(X), tf.constant(y, tf.float64)


@tf.function
def logistic_gd(steps):
    for _ in tf.range(steps):
        with tf.GradientTape() as tape:
            logits = tf.linalg.matvec(Xt, w_tf) + b_tf
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=ytf, logits=logits))
            loss += tf.reduce_sum(w_tf**2) / (2.0 * n)
        gw, gb = tape.gradient(loss, [w_tf, b_tf])
        w_tf.assign_sub(lr * gw)
        b_tf.assign_sub(lr * gb)


logistic_gd(tf.constant(LOGISTIC_STEPS))
logistic_tape = np.r_[w_tf.numpy(), b_tf.numpy()]

names = list(load_breast_cancer().feature_names) + ["intercept"]
print(f"{'coefficient':<24}{'scikit-learn':>14}{'GD by hand':>14}{'GD autodiff':>14}")
for i in list(range(6)) + [d]:
    print(f"{names[i]:<24}{sklearn_logistic[i]:>14.6f}{logistic_hand[i]:>14.6f}{logistic_tape[i]:>14.6f}")
print(f"... ({d - 6} more coefficients)")
logistic_hand_vs_sklearn = relative_error(logistic_hand, sklearn_logistic)
logistic_tape_vs_sklearn = relative_error(logistic_tape, sklearn_logistic)
logistic_hand_vs_tape = relative_error(logistic_hand, logistic_tape)
accuracy = float(np.mean((X @ logistic_hand[:-1] + logistic_hand[-1] > 0) == y))
print(f"relative error vs scikit-learn: by hand {logistic_hand_vs_sklearn:.1e}, autodiff {logistic_tape_vs_sklearn:.1e}; "
      f"hand vs autodiff {logistic_hand_vs_tape:.1e} (stated tolerance 1e-8); training accuracy {accuracy:.4f}")

# %% [markdown]
# ## What this run showed

# %%
FACTS = {
    "hand_vs_tape": hand_vs_tape, "tape_vs_finite_differences": fd_error, "net_test_accuracy": net_test_accuracy,
    "linear_hand_vs_closed": linear_hand_vs_closed, "linear_tape_vs_closed": linear_tape_vs_closed,
    "linear_hand_vs_tape": linear_hand_vs_tape, "linear_vs_sklearn": relative_error(closed_form, sklearn_linear),
    "logistic_hand_vs_sklearn": logistic_hand_vs_sklearn, "logistic_tape_vs_sklearn": logistic_tape_vs_sklearn,
    "logistic_hand_vs_tape": logistic_hand_vs_tape,
}
assert FACTS["hand_vs_tape"] < 1e-6 and FACTS["tape_vs_finite_differences"] < 1e-6
assert max(FACTS["linear_hand_vs_closed"], FACTS["linear_tape_vs_closed"], FACTS["linear_hand_vs_tape"], FACTS["linear_vs_sklearn"]) < 1e-10
assert max(FACTS["logistic_hand_vs_sklearn"], FACTS["logistic_tape_vs_sklearn"], FACTS["logistic_hand_vs_tape"]) < 1e-8
print("NOTEBOOK_FACTS " + json.dumps(FACTS))
