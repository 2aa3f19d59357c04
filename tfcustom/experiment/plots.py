"""Pictures of a trained classifier: confusion matrix, misclassified images, reliability diagram.

Each ``plot_*`` function returns a ``matplotlib.figure.Figure`` (drawn with
the Agg backend, no pyplot state; a notebook shows it as the cell's value)
and, with ``path``, also writes it as a PNG. [`write_run_pictures`][tfcustom.experiment.plots.write_run_pictures] draws
the pictures of a run directory (``train_and_evaluate`` calls it; so does
``python examples/evaluate.py --pictures``).

Examples:
    >>> fig = plot_confusion_matrix([[5, 1], [2, 7]], ["cat", "dog"], path="cm.png")
    >>> probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> fig = plot_reliability(probabilities, np.array([0, 1, 1]), num_bins=5)
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np

from tfcustom import data as data_lib
from tfcustom.disk_errors import atomic
from tfcustom.errors import check, check_positive_int
from tfcustom.experiment.run_dir import load_run_model, read_run_config
from tfcustom.training.steps import make_predict_step

CONFUSION_FILE = "confusion_matrix.png"
MISCLASSIFIED_FILE = "misclassified.png"
RELIABILITY_FILE = "reliability.png"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Optional[str]):
    if path:
        with atomic(path) as tmp:  # never half a picture; a full disk is one line
            fig.savefig(tmp, dpi=100, format=os.path.splitext(path)[1][1:] or "png")
    return fig


def confusion_counts(labels, predictions, num_classes: int) -> np.ndarray:
    """``counts[true, predicted]``: how many examples of each true class got each prediction.

    Args:
      labels: the true classes (integers, any shape).
      predictions: the predicted classes, as many.
      num_classes: the matrix's size.

    Returns:
      An int64 ``(num_classes, num_classes)`` array; rows are true classes.

    Examples:
        >>> confusion_counts([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 2).tolist()
        [[1, 1], [1, 2]]
    """
    labels, predictions = np.asarray(labels, np.int64).ravel(), np.asarray(predictions, np.int64).ravel()
    return np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def plot_confusion_matrix(counts, class_names: Sequence[str], path: Optional[str] = None):
    """Counts (left) and row-normalised rates (right: each true class sums to 1),
    rows = true class, columns = predicted class.

    Args:
      counts: a square matrix, as `confusion_counts` returns.
      class_names: one name per row.
      path: where to write the PNG too (None: nowhere).

    Returns:
      The ``matplotlib.figure.Figure``.

    Examples:
        >>> fig = plot_confusion_matrix([[5, 1], [2, 7]], ["cat", "dog"])
        >>> fig.get_suptitle()
        'Confusion matrix (15 examples, accuracy 0.800)'
        >>> len(fig.axes)   # counts and rates, each with its colour bar
        4
    """
    counts = np.asarray(counts)
    n = len(class_names)
    check(counts.shape == (n, n), "counts must be a square matrix with one row per class name", counts.shape, f"pass a {n}x{n} matrix of counts")
    rows = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    fig = _figure(min(6 + 0.9 * n, 30), min(0.35 * n + 3, 16))
    for ax, values, title, fmt in zip(fig.subplots(1, 2), (counts, rates), ("counts", "row-normalised (recall on the diagonal)"), ("d", ".2f")):
        image = ax.imshow(values, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=10)
        top = values.max() if values.size else 0
        for i in range(n if n <= 20 else 0):  # numbers only where they fit
            for j in range(n):
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=6 if n > 8 else 8,
                        color="white" if values[i, j] > 0.6 * top else "black")
    fig.suptitle(f"Confusion matrix ({int(counts.sum())} examples, accuracy {np.trace(counts) / max(counts.sum(), 1):.3f})")
    fig.tight_layout()
    return _save(fig, path)


def plot_misclassified(images, labels, probabilities, class_names: Sequence[str], path: Optional[str] = None, num: int = 16):
    """A grid of the ``num`` misclassified images the model was most sure of,
    titled with the true class, the predicted class and its probability.

    Args:
      images: the examples' images, ``(N, H, W)`` or ``(N, H, W, C)``.
      labels: their true classes, ``(N,)``.
      probabilities: the model's class probabilities, ``(N, classes)``.
      class_names: the classes' names.
      path: where to write the PNG too (None: nowhere).
      num: at most this many images.

    Returns:
      The ``matplotlib.figure.Figure``.

    Examples:
        >>> probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
        >>> fig = plot_misclassified(np.zeros((4, 2, 2)), [0, 1, 1, 1], probabilities, ["cat", "dog"])
        >>> fig.get_suptitle()
        'Most confidently wrong (2 of 2 errors in 4 examples)'
        >>> fig.axes[0].get_title()   # the surest mistake first
        'true: dog\\npred: cat (0.80)'
    """
    check_positive_int("num", num)
    images, labels, probabilities = np.asarray(images), np.asarray(labels).ravel(), np.asarray(probabilities)
    check(len(images) == len(labels) == len(probabilities), "images, labels and probabilities must have one entry per example",
          (len(images), len(labels), len(probabilities)), "pass arrays of the same length")
    predicted = probabilities.argmax(axis=-1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:num]
    cols = int(np.ceil(np.sqrt(num)))
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig = _figure(max(1.8 * cols, 4.5), 2.0 * rows + 0.6)
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, wrong):
        image = images[i].squeeze()
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(f"true: {class_names[labels[i]]}\npred: {class_names[predicted[i]]} ({probabilities[i, predicted[i]]:.2f})", fontsize=7)
    fig.suptitle(f"Most confidently wrong ({len(wrong)} of {int((predicted != labels).sum())} errors in {len(labels)} examples)", fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.75 / fig.get_figheight(), wspace=0.1, hspace=0.45)
    return _save(fig, path)


def reliability_bins(probabilities, labels, num_bins: int = 15) -> Dict[str, np.ndarray]:
    """Per confidence bin ``((b-1)/num_bins, b/num_bins]``: ``count``, ``accuracy``,
    ``confidence`` (NaN for empty bins), and the expected calibration error ``ece``.

    Args:
      probabilities: class probabilities, ``(N, classes)``; the confidence is their maximum.
      labels: the true classes, ``(N,)``.
      num_bins: equal-width confidence bins over [0, 1].

    Returns:
      ``{"count", "accuracy", "confidence"}`` arrays of ``num_bins`` values, and
      ``"ece"``: the count-weighted mean of ``|accuracy - confidence|``.

    Examples:
        >>> r = reliability_bins([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1], num_bins=2)
        >>> r["count"].tolist(), round(float(r["accuracy"][1]), 4), round(float(r["confidence"][1]), 4)   # all in (0.5, 1]
        ([0.0, 3.0], 0.6667, 0.7667)
        >>> round(r["ece"], 4)
        0.1
    """
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels).ravel()
    confidence = probabilities.max(axis=-1)
    correct = (probabilities.argmax(axis=-1) == labels).astype(np.float64)
    bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    count = np.bincount(bins, minlength=num_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(bins, correct, minlength=num_bins) / count
        mean_conf = np.bincount(bins, confidence, minlength=num_bins) / count
    ece = float(np.nansum(count / max(count.sum(), 1) * np.abs(accuracy - mean_conf)))
    return {"count": count, "accuracy": accuracy, "confidence": mean_conf, "ece": ece}


def plot_reliability(probabilities, labels, path: Optional[str] = None, num_bins: int = 15):
    """Reliability diagram: accuracy per confidence bin against the diagonal of
    perfect calibration (bars below it: over-confident), with the ECE and
    the share of examples per bin.

    Args:
      probabilities: class probabilities, ``(N, classes)``.
      labels: the true classes, ``(N,)``.
      path: where to write the PNG too (None: nowhere).
      num_bins: confidence bins (see `reliability_bins`).

    Returns:
      The ``matplotlib.figure.Figure``.

    Examples:
        >>> fig = plot_reliability(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1]), num_bins=2)
        >>> fig.axes[0].get_title()
        'Reliability diagram (ECE 0.1000, 2 bins)'
    """
    check_positive_int("num_bins", num_bins)
    r = reliability_bins(probabilities, labels, num_bins)
    edges = np.linspace(0, 1, num_bins + 1)
    fig = _figure(5, 5.5)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(edges[:-1], np.nan_to_num(r["accuracy"]), width=1 / num_bins, align="edge", edgecolor="black", label="accuracy")
    top.bar(edges[:-1], np.nan_to_num(r["confidence"] - r["accuracy"]), bottom=np.nan_to_num(r["accuracy"]), width=1 / num_bins,
            align="edge", color="tab:red", alpha=0.3, label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability diagram (ECE {r['ece']:.4f}, {num_bins} bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(edges[:-1], r["count"] / max(r["count"].sum(), 1), width=1 / num_bins, align="edge", edgecolor="black")
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("share")
    fig.tight_layout()
    return _save(fig, path)


def softmax(logits) -> np.ndarray:
    """Probabilities from logits along the last axis, in float64 (stable: the maximum is subtracted first).

    Args:
      logits: an array of logits, ``(..., classes)``.

    Returns:
      A float64 array of the same shape; each row sums to 1.

    Examples:
        >>> softmax([[0.0, np.log(3.0)], [1000.0, 1000.0]]).round(6).tolist()
        [[0.25, 0.75], [0.5, 0.5]]
    """
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def write_run_pictures(run_dir: str, images, labels, probabilities, class_names: Sequence[str], reliability: bool = False) -> Dict[str, object]:
    """Write ``confusion_matrix.png``, ``misclassified.png`` and (``reliability``)
    ``reliability.png`` into ``run_dir``.

    Args:
      run_dir: the directory to write into.
      images: the test images, ``(N, H, W[, C])``.
      labels: their true classes, ``(N,)``.
      probabilities: the model's class probabilities, ``(N, classes)``.
      class_names: the classes' names.
      reliability: draw the reliability diagram too.

    Returns:
      ``{"counts": the confusion counts, "confusion_matrix": path, "misclassified": path}``,
      and ``"reliability": path`` with ``reliability``.

    Examples:
        >>> import tempfile
        >>> run_dir = tempfile.mkdtemp()
        >>> out = write_run_pictures(run_dir, np.zeros((3, 2, 2)), [0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], ["a", "b"])
        >>> out["counts"].tolist(), sorted(os.listdir(run_dir))
        ([[1, 0], [1, 1]], ['confusion_matrix.png', 'misclassified.png'])
    """
    probabilities = np.asarray(probabilities)
    counts = confusion_counts(labels, probabilities.argmax(axis=-1), len(class_names))
    out = {"counts": counts, "confusion_matrix": os.path.join(run_dir, CONFUSION_FILE), "misclassified": os.path.join(run_dir, MISCLASSIFIED_FILE)}
    plot_confusion_matrix(counts, class_names, out["confusion_matrix"])
    plot_misclassified(images, labels, probabilities, class_names, out["misclassified"])
    if reliability:
        out["reliability"] = os.path.join(run_dir, RELIABILITY_FILE)
        plot_reliability(probabilities, labels, out["reliability"])
    return out


def redraw_run_pictures(run_dir: str, which: str = "final", data_dir: Optional[str] = None) -> Dict[str, object]:
    """Draw a finished run's pictures again from its model and test split
    (``which`` as in [`tfcustom.experiment.export.load_run_model`][tfcustom.experiment.export.load_run_model]).

    Args:
      run_dir: a run directory (its ``config.json``, and the model ``which`` names).
      which: ``"final"``, ``"latest"``, ``"best"`` or ``"ckpt-N"``.
      data_dir: where the run's dataset is (default: the run's ``data_dir``).

    Returns:
      What `write_run_pictures` returns (reliability drawn if the run's metrics have ``ece``).

    Examples:
        >>> import tempfile
        >>> from tfcustom import TrainConfig
        >>> from tfcustom.data.idx import write_idx
        >>> from tfcustom.experiment.run_dir import build_run_model
        >>> run_dir = tempfile.mkdtemp()
        >>> for split, n in (("train", 4), ("t10k", 6)):
        ...     write_idx(os.path.join(run_dir, f"{split}-images-idx3-ubyte.gz"), np.zeros((n, 28, 28), np.uint8))
        ...     write_idx(os.path.join(run_dir, f"{split}-labels-idx1-ubyte.gz"), np.arange(n, dtype=np.uint8))
        >>> config = TrainConfig(dataset="mnist", data_dir=run_dir, model="logistic_regression")
        >>> _ = open(os.path.join(run_dir, "config.json"), "w").write(config.to_json())
        >>> build_run_model(config, 10).save(os.path.join(run_dir, "model.keras"))
        >>> int(redraw_run_pictures(run_dir)["counts"].sum())   # the 6 test images
        6
    """
    config = read_run_config(run_dir)
    dataset = data_lib.load(config.dataset, data_dir or config.data_dir)
    model = load_run_model(run_dir, which, num_classes=dataset.num_classes, input_shape=dataset.input_shape)
    pipe = data_lib.InputPipeline(dataset.test, min(config.eval_batch_size, len(dataset.test)))
    probabilities = softmax(make_predict_step(model)(iter(pipe.dataset())).numpy())
    return write_run_pictures(run_dir, dataset.test.x, dataset.test.y, probabilities, dataset.class_names, "ece" in config.metrics)
