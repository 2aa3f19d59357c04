"""What ``keras.Model.fit`` takes as data, for the [`tfcustom.Trainer`][tfcustom.Trainer].

* ``(x, y)`` or ``(x, y, sample_weight)`` NumPy arrays with ``batch_size``
  (default 32, as in Keras; any target shape; ``x`` may be a dict of arrays) become a [`tfcustom.data.InputPipeline`][tfcustom.data.InputPipeline]
  (shuffled each epoch for training, as ``fit`` does, with a fixed seed), so
  that resuming from a checkpoint mid-epoch stays exact.
* A ``tf.data.Dataset`` must yield batches; an unbatched one (one example per
  element) or one of unknown or infinite length is refused in one line that
  says what to do.

>>> import numpy as np
>>> pipe = as_pipeline((np.zeros((10, 4), "float32"), np.zeros(10, "int64")), batch_size=None, training=True)
>>> pipe.batch_size, pipe.shuffle
(32, True)
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from tfcustom.data.pipeline import EpochInput, InputPipeline
from tfcustom.data.sources import Split
from tfcustom.errors import check, check_positive_int, config_error

#: ``keras.Model.fit``'s default batch size.
DEFAULT_BATCH_SIZE = 32

_ARRAYS_FIX = "pass (x, y) or (x, y, sample_weight) NumPy arrays with one row per example"


def _array_like(a) -> bool:
    return isinstance(a, np.ndarray) or hasattr(a, "__array__")


def is_arrays(data) -> bool:
    """True for a ``(x, y[, sample_weight])`` tuple/list of array-likes
    (``x`` may be a dict of arrays, one per input of the model)."""
    return isinstance(data, (tuple, list)) and len(data) in (2, 3) and all(
        _array_like(a) or (a is None and i == 2) or (i < 2 and isinstance(a, dict) and a and all(map(_array_like, a.values())))
        for i, a in enumerate(data))


def _class_weights(y: np.ndarray, class_weight: dict) -> np.ndarray:
    """Per-example weights from ``class_weight`` (``{class id: weight}``), as ``fit`` derives them:
    the class of an example is its label (integer ids) or its argmax (one-hot rows)."""
    ids = y.argmax(-1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y), -1)[:, 0]
    ids = np.rint(ids).astype(np.int64)
    table = np.ones(max(int(ids.max()) + 1, max(class_weight) + 1), np.float32)
    for k, v in class_weight.items():
        table[int(k)] = float(v)
    return table[ids]


def as_pipeline(data, batch_size: Optional[int], training: bool, class_weight: Optional[dict] = None):
    """``data`` itself, or NumPy arrays wrapped into an [`InputPipeline`][tfcustom.data.pipeline.InputPipeline].

    Targets may have any shape and dtype (class ids, one-hot rows, regression
    values, per-pixel labels); ``x`` may be a dict of arrays (one per input).
    ``class_weight`` (``{class id: weight}``, training only, as in ``fit``)
    multiplies each example's ``sample_weight`` by its class' weight.
    """
    if not is_arrays(data):
        check(batch_size is None and class_weight is None, "batch_size and class_weight apply only to NumPy arrays",
              type(data).__name__, "set the batch size of your InputPipeline or tf.data.Dataset instead (and weights as "
              "its third element), or drop batch_size/class_weight")
        return data
    x = {k: np.asarray(v) for k, v in data[0].items()} if isinstance(data[0], dict) else np.asarray(data[0])
    weights = None if len(data) == 2 or data[2] is None else np.asarray(data[2], np.float32).reshape(-1)
    sizes = {len(a) if a.ndim else 0 for a in (x.values() if isinstance(x, dict) else [x])}
    if isinstance(data[1], dict):  # one target per output of a multi-output model
        y = {k: np.asarray(v) for k, v in data[1].items()}
        check(len({len(v) for v in y.values()}) == 1 and class_weight is None, "the targets of every output must hold the "
              "same number of examples (and class_weight needs a single output)", {k: v.shape for k, v in y.items()}, _ARRAYS_FIX)
        examples = len(next(iter(y.values())))
        check(sizes == {examples}, "x and y must hold the same number of examples", sorted(sizes), _ARRAYS_FIX)
    else:
        y = np.asarray(data[1])
        check(len(sizes) == 1 and y.ndim >= 1 and len(y) > 0 and sizes == {len(y)}, "x and y must hold the same number (> 0) of examples",
              (sorted(sizes), y.shape), _ARRAYS_FIX)
        if y.ndim == 2 and y.shape[1] == 1 and np.issubdtype(y.dtype, np.integer):
            y = y[:, 0]  # class ids as a column
        if class_weight is not None:
            check(isinstance(class_weight, dict) and all(isinstance(k, (int, np.integer)) for k in class_weight),
                  "class_weight must be a dict {class id: weight}", class_weight, "pass e.g. class_weight={0: 1.0, 1: 5.0}")
            cw = _class_weights(y, class_weight)
            weights = cw if weights is None else weights * cw
        examples = len(y)
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else check_positive_int("batch_size", batch_size)
    return InputPipeline(Split(x, y), min(batch_size, examples), shuffle=training, seed=0, sample_weight=weights)


def check_dataset(data) -> None:
    """Refuse, in one line, a ``tf.data.Dataset`` that does not yield batches."""
    spec = data.element_spec
    label = spec.get("y") if isinstance(spec, dict) else spec[1] if isinstance(spec, tuple) and len(spec) >= 2 else None
    if isinstance(label, tf.TensorSpec) and label.shape.rank == 0:
        raise config_error("the dataset yields single examples, not batches (its labels are scalars)",
                           str(spec), "batch it first, e.g. dataset.batch(32), or pass NumPy arrays (x, y) with batch_size=")


def dataset_steps(data: tf.data.Dataset) -> int:
    """The number of batches of a finite ``tf.data.Dataset``, or a one-line error."""
    check_dataset(data)
    n = int(data.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise config_error("the dataset is infinite (it repeats), so an epoch has no end", n,
                           "pass steps_per_epoch=N (batches per epoch), or drop .repeat()")
    if n == tf.data.UNKNOWN_CARDINALITY:
        raise config_error("cannot tell how many batches the dataset has (e.g. after filter())", n,
                           "pass steps_per_epoch=N (batches per epoch), or declare it with "
                           "dataset.apply(tf.data.experimental.assert_cardinality(N))")
    check(n > 0, "the dataset is empty", n, "pass a dataset with at least one batch")
    return n


def first_batch(data):
    """The first batch of an [`EpochInput`][tfcustom.data.pipeline.EpochInput] (e.g. an [`InputPipeline`][tfcustom.data.pipeline.InputPipeline]) or dataset, eagerly."""
    dataset = data.dataset(0) if isinstance(data, EpochInput) else data
    for batch in dataset.take(1):
        return batch
    return None


def predict_dataset(x, batch_size: Optional[int]) -> tf.data.Dataset:
    """NumPy inputs ``x`` -> batches normalised as [`InputPipeline`][tfcustom.data.pipeline.InputPipeline] does."""
    from tfcustom.data.pipeline import normalize_images

    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else check_positive_int("batch_size", batch_size)
    x = {k: np.asarray(v) for k, v in x.items()} if isinstance(x, dict) else np.asarray(x)
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size).map(normalize_images)


def check_outputs(model, loss, data, metrics, strategy) -> bool:
    """Run ``model`` on (up to 64 examples of) the first batch of ``data``;
    refuse a ``loss`` whose ``from_logits`` does not fit the outputs
    (`tfcustom.losses.loss_inputs.mismatch`), and build the tfcustom metrics
    that were given no ``num_classes`` for the model's number of outputs
    (under ``strategy.scope()``, before any step is traced). Returns whether
    the check is done (False: ``data`` is empty)."""
    from absl import logging

    from tfcustom.errors import ConfigError
    from tfcustom.losses.loss_inputs import mismatch
    from tfcustom.training.steps import unpack_batch

    batch = first_batch(data)
    if batch is None:
        return False
    x = unpack_batch(batch)[0] if isinstance(batch, (tuple, list, dict)) else batch
    try:
        y_pred = model(x[:64] if isinstance(x, (tf.Tensor, np.ndarray)) else x, training=False)
    except Exception as e:  # noqa: BLE001 - e.g. a TPU model cannot run outside strategy.run: the steps will tell
        logging.warning("Could not run the model on one batch before training (%s: %s); the loss' from_logits "
                        "setting is not checked against its outputs", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return True
    pairs = [(l, y_pred[k]) for k, l, _ in loss.items()] if hasattr(loss, "items") and isinstance(y_pred, (dict, list, tuple)) else [(loss, y_pred)]
    for member, pred in pairs:  # a multi-output loss: each output against its own loss
        problem = mismatch(member, pred)
        if problem:
            raise ConfigError(problem)
    if not isinstance(y_pred, (dict, list, tuple)):
        with strategy.scope():
            build_metric_states(metrics, y_pred.shape[-1])
    return True


def output_classes(model) -> Optional[int]:
    """The model's number of outputs when Keras knows it without data
    (Sequential/functional models), else ``None``."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    return shape[-1] if isinstance(shape, tuple) and shape and isinstance(shape[-1], int) else None


def build_metric_states(metrics, num_classes: Optional[int]) -> None:
    """Give the tfcustom metrics built without ``num_classes`` their state
    (call under the strategy's scope; a no-op when ``num_classes`` is None)."""
    for m in metrics:
        if num_classes and hasattr(m, "build_state") and getattr(m, "num_classes", 0) is None:
            m.build_state(int(num_classes))
