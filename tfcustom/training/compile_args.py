"""What ``keras.Model.compile`` accepts, for the [`tfcustom.Trainer`][tfcustom.Trainer].

* loss: a ``keras.losses.Loss``; a name (Keras' names first, with Keras'
  meaning, e.g. ``"sparse_categorical_crossentropy"`` is Keras' loss on
  probabilities; then [`tfcustom.losses.get`][tfcustom.losses.get]'s names such as
  ``"focal"``); or a function ``fn(y_true, y_pred)`` returning per-example
  values (wrapped into a ``Loss``, as ``compile`` does).
* optimizer: a Keras optimizer or a name (``"adam"``, ``"sgd"``, ... with
  Keras' default arguments, built under the strategy's scope).
* metrics: names resolved as ``compile`` resolves them
  (`tfcustom.training.compile_metrics`: ``"accuracy"`` is binary, sparse or
  categorical from the shapes; ``"mae"``, ``"auc"``... keyed by the name
  written; tfcustom's names such as ``"f1"``/``"f1_score"``) or metric objects. The
  objects passed are the ones training updates (they hold the result, as
  after ``compile``/``fit``); evaluation updates copies made here by
  `eval_copy`.

>>> import tfcustom
>>> type(resolve_loss("sparse_categorical_crossentropy")).__name__
'LossFunctionWrapper'
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from tfcustom.errors import check, config_error


def _wrap_loss_fn(fn, name: Optional[str] = None) -> keras.losses.Loss:
    from keras.src.losses.losses import LossFunctionWrapper  # what compile() wraps functions in

    return LossFunctionWrapper(fn, name=name or getattr(fn, "__name__", None))


def resolve_loss(loss, loss_weights=None) -> keras.losses.Loss:
    """A ``keras.losses.Loss`` from whatever ``compile(loss=..., loss_weights=...)`` takes
    (a dict or list of losses, one per output: `tfcustom.training.compile_loss.MultiOutputLoss`)."""
    if isinstance(loss, (dict, list, tuple)):
        from tfcustom.training.compile_loss import MultiOutputLoss

        members = {k: resolve_loss(v) for k, v in loss.items()} if isinstance(loss, dict) else [resolve_loss(v) for v in loss]
        return MultiOutputLoss(members, loss_weights)
    check(loss_weights is None, "loss_weights applies to a dict or list of losses (one per output)", loss_weights,
          "pass loss={'output': loss, ...} with loss_weights={'output': weight, ...}, or drop loss_weights")
    if isinstance(loss, keras.losses.Loss):
        return loss
    fix = ("pass a keras.losses.Loss (e.g. tfcustom.losses.SparseCategoricalCrossentropy(from_logits=True)), "
           "a loss name such as 'sparse_categorical_crossentropy' or 'focal', or a function fn(y_true, y_pred)")
    if isinstance(loss, str):
        try:
            found = keras.losses.get(loss)
        except ValueError:
            from tfcustom import losses as losses_lib

            if loss not in losses_lib.names():
                raise config_error("unknown loss name (neither Keras nor tfcustom.losses knows it)", loss, fix) from None
            return losses_lib.get(loss)
        return found if isinstance(found, keras.losses.Loss) else _wrap_loss_fn(found, loss)
    if callable(loss) and not isinstance(loss, type):
        return _wrap_loss_fn(loss)
    raise config_error("loss must be a keras.losses.Loss, a loss name or a function", type(loss).__name__, fix)


def resolve_optimizer(optimizer) -> keras.optimizers.Optimizer:
    """A Keras optimizer from an instance or a name (call under ``strategy.scope()``)."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    fix = "pass a Keras optimizer (e.g. keras.optimizers.Adam(1e-3)) or a name such as 'adam' or 'sgd'"
    if isinstance(optimizer, str):
        try:
            return keras.optimizers.get(optimizer)
        except ValueError:
            raise config_error("unknown optimizer name", optimizer, fix) from None
    raise config_error("optimizer must be a Keras optimizer or its name", type(optimizer).__name__, fix)


def metric_from_spec(spec, num_classes: Optional[int], output_columns: Optional[int] = None) -> keras.metrics.Metric:
    """A metric name -> a new metric, as ``compile`` resolves it; a metric object -> that object
    (see `tfcustom.training.compile_metrics.resolve_metric`)."""
    from tfcustom.training.compile_metrics import resolve_metric

    return resolve_metric(spec, num_classes, output_columns)


def eval_copy(metric: keras.metrics.Metric) -> keras.metrics.Metric:
    """A new, empty metric computing the same as ``metric`` (for evaluation).

    Made by ``from_config(get_config())``, Keras' convention; a
    ``keras.metrics.MeanMetricWrapper`` around a function is rebuilt from the
    same function (its config names the function, which need not be
    registered). A metric that cannot be rebuilt so raises a one-line error.
    """
    fn = getattr(metric, "_fn", None)
    try:
        if type(metric) is keras.metrics.MeanMetricWrapper and fn is not None:
            copy = keras.metrics.MeanMetricWrapper(fn, name=metric.name, dtype=metric.dtype, **getattr(metric, "_fn_kwargs", {}))
        else:
            copy = type(metric).from_config(metric.get_config())
    except Exception as e:  # noqa: BLE001 - any failure here means the same thing to the user
        raise config_error(
            f"cannot make an evaluation copy of metric {metric.name!r} ({type(metric).__name__}.from_config(get_config()) "
            f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            type(metric).__name__,
            "give the metric class a get_config() that returns its constructor arguments (Keras' convention), "
            "or pass the metric by name",
        ) from None
    if getattr(metric, "num_classes", None) is not None and getattr(copy, "num_classes", None) is None and hasattr(copy, "build_state"):
        copy.build_state(metric.num_classes)
    return copy


def resolve_optimizer_under(optimizer, strategy: tf.distribute.Strategy) -> keras.optimizers.Optimizer:
    """[`resolve_optimizer`][tfcustom.training.compile_args.resolve_optimizer], a name's optimizer created under ``strategy.scope()``.

    Args:
      optimizer: a Keras optimizer or its name.
      strategy: the Trainer's strategy.

    Returns:
      The optimizer.

    Examples:
        >>> type(resolve_optimizer_under("sgd", tf.distribute.get_strategy())).__name__
        'SGD'
    """
    if isinstance(optimizer, str):
        with strategy.scope():
            return resolve_optimizer(optimizer)
    return resolve_optimizer(optimizer)


def copy_state(source: keras.metrics.Metric, target: keras.metrics.Metric) -> None:
    """Give ``target`` (a metric of the same kind) ``source``'s current state."""
    for src, dst in zip(source.variables, target.variables):
        dst.assign(src)
