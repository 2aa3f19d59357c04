"""Metric names resolved as ``keras.Model.compile`` resolves them.

Keras' ``compile`` (``keras/src/trainers/compile_utils.get_metric``) turns a
metric name into a metric once it has seen the labels and the predictions:

* ``"accuracy"`` / ``"acc"``: binary accuracy when the prediction has one
  column, sparse categorical accuracy when the labels have a lower rank than
  the predictions (or one column against several), categorical accuracy
  otherwise (one-hot labels);
* any other name Keras knows (``"mae"``, ``"mse"``, ``"auc"``, ``"precision"``
  ...): ``keras.metrics.get(name)``, renamed to the name written, so that the
  result is keyed ``mae`` (not ``mean_absolute_error``) and ``auc`` (not
  ``auc_1``).

The Trainer creates its metrics before it sees a batch (a checkpoint must
find their variables), so ``"accuracy"`` becomes `auto_accuracy` in a
``keras.metrics.MeanMetricWrapper``: the same rule applied to the static
shapes of each update, with the same per-example values as Keras' three
accuracy metrics (all three are mean wrappers of these functions).

tfcustom's own names (``"f1"``, ``"confusion_matrix"``, ``"ece"``, ...) keep
tfcustom's exact metrics; ``"precision"``/``"recall"`` are tfcustom's
multi-class ones, except for a model with one output column (binary
classification), where Keras' are the ones ``compile`` would use.

>>> resolve_metric("mae", num_classes=None).name
'mae'
"""

from __future__ import annotations

from typing import Optional

import keras

from tfcustom.errors import config_error

#: The names ``compile`` maps to binary / sparse / categorical accuracy.
ACCURACY_NAMES = ("accuracy", "acc")


def _is_binary_or_sparse(y_true, y_pred):
    """Keras' rule (``compile_utils.is_binary_or_sparse_categorical``) on static shapes."""
    t_rank, p_rank = len(y_true.shape), len(y_pred.shape)
    t_last = y_true.shape[-1] if t_rank else None
    p_last = y_pred.shape[-1] if p_rank else None
    is_binary = p_last == 1
    is_sparse = t_rank < p_rank or (t_last == 1 and p_last is not None and p_last > 1)
    return is_binary, is_sparse


@keras.saving.register_keras_serializable(package="tfcustom")
def auto_accuracy(y_true, y_pred):
    """Per-example accuracy as ``compile``'s ``"accuracy"`` computes it:
    binary, sparse categorical or categorical, chosen from the shapes."""
    is_binary, is_sparse = _is_binary_or_sparse(y_true, y_pred)
    if is_binary:
        return keras.metrics.binary_accuracy(y_true, y_pred)
    if is_sparse:
        return keras.metrics.sparse_categorical_accuracy(y_true, y_pred)
    return keras.metrics.categorical_accuracy(y_true, y_pred)


def accuracy(name: str = "accuracy") -> keras.metrics.Metric:
    """``compile``'s ``"accuracy"``: a mean of `auto_accuracy` (higher is better, as
    Keras' accuracies say to ``mode="auto"`` of ``EarlyStopping``/``ModelCheckpoint``)."""
    metric = keras.metrics.MeanMetricWrapper(auto_accuracy, name=name)
    metric._direction = "up"  # Keras' own accuracy metrics set it so
    return metric


def _keras_metric(name: str) -> Optional[keras.metrics.Metric]:
    """``keras.metrics.get(name)`` renamed to ``name`` (as ``compile`` does), or None."""
    try:
        found = keras.metrics.get(name)
    except ValueError:
        return None
    if not isinstance(found, keras.metrics.Metric):
        return keras.metrics.MeanMetricWrapper(found, name=name) if callable(found) else None
    return type(found).from_config({**found.get_config(), "name": name})  # a fresh object, named as written


def resolve_metric(spec, num_classes: Optional[int], output_columns: Optional[int] = None) -> keras.metrics.Metric:
    """A metric from what ``compile(metrics=[...])`` takes.

    ``spec``: a metric object (returned as it is), a name or a function
    ``fn(y_true, y_pred)``. ``num_classes`` goes to tfcustom's metrics that
    need it; ``output_columns`` is the model's last output dimension when
    known (1: binary classification or one regression target).
    """
    from tfcustom import metrics as metrics_lib

    if isinstance(spec, keras.metrics.Metric):
        return spec
    if isinstance(spec, str):
        if spec.lower() in ACCURACY_NAMES:
            return accuracy(spec)
        # One output column (binary): Keras' metric where it has one; else tfcustom's exact one.
        found = _keras_metric(spec) if output_columns == 1 or spec not in metrics_lib.names() else None
        if found is not None:
            return found
        if spec in metrics_lib.names():
            return metrics_lib.get(spec, num_classes=num_classes)
        raise config_error("unknown metric name", spec,
                           f"use one of: accuracy, {', '.join(metrics_lib.names())}, or a Keras metric name (mae, auc, ...)")
    if callable(spec) and not isinstance(spec, type):
        return keras.metrics.MeanMetricWrapper(spec, name=getattr(spec, "__name__", "metric"))
    raise config_error("a metric must be a name, a function or a keras.metrics.Metric", spec,
                       "pass e.g. 'accuracy', 'f1', 'mae', 'auc', or a keras.metrics.Metric object")


@keras.saving.register_keras_serializable(package="tfcustom")
class OutputMetric(keras.metrics.Metric):
    """A metric of one output of a multi-output model, named ``<output>_<metric>`` as ``compile`` names it."""

    def __init__(self, metric, output, name=None, **kwargs):
        if isinstance(metric, dict):
            metric = keras.saving.deserialize_keras_object(metric)
        super().__init__(name=name or f"{output}_{metric.name}", dtype=metric.dtype)
        self.metric, self.output = metric, output

    @property
    def variables(self):
        return self.metric.variables

    def update_state(self, y_true, y_pred, sample_weight=None):
        return self.metric.update_state(y_true[self.output], y_pred[self.output], sample_weight=sample_weight)

    def result(self):
        return self.metric.result()

    def reset_state(self):
        self.metric.reset_state()

    def get_config(self):
        return {"metric": keras.saving.serialize_keras_object(self.metric), "output": self.output, "name": self.name}


def resolve_metrics(metrics, num_classes: Optional[int], output_columns: Optional[int] = None, loss=None) -> list:
    """A flat list of metrics from ``compile(metrics=...)``: a list for a single output, or per
    output a dict ``{output: [specs]}`` / a list of lists by position. With a multi-output
    loss (`tfcustom.training.compile_loss.MultiOutputLoss`) the per-output losses come first,
    logged ``<output>_loss`` as ``fit`` does."""
    from tfcustom.training.compile_loss import MultiOutputLoss, OutputLoss

    out = []
    if isinstance(loss, MultiOutputLoss) and len(loss.items()) > 1:
        out = [OutputLoss(l, k, name=f"{k}_loss" if isinstance(k, str) else f"output_{k}_loss") for k, l, _ in loss.items()]
    if isinstance(metrics, dict):
        for key, specs in metrics.items():
            specs = specs if isinstance(specs, (list, tuple)) else [specs]
            out += [OutputMetric(resolve_metric(s, num_classes), key) for s in specs]
        return out
    if isinstance(loss, MultiOutputLoss) and isinstance(metrics, (list, tuple)) and metrics and all(
            isinstance(s, (list, tuple)) or s is None for s in metrics):
        keys = [k for k, _, _ in loss.items()]
        for key, specs in zip(keys, metrics):
            out += [OutputMetric(resolve_metric(s, num_classes), key) for s in (specs or [])]
        return out
    return out + [resolve_metric(m, num_classes, output_columns) for m in metrics]


__all__ = ["ACCURACY_NAMES", "OutputMetric", "accuracy", "auto_accuracy", "resolve_metric", "resolve_metrics"]
