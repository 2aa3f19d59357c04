"""Checks that the objects the Trainer uses were created under its strategy's
scope (a variable created outside it is not mirrored: training would fail
late, or silently update one replica's copy)."""

from __future__ import annotations

from tfcustom.errors import check


def _in_scope(strategy, variable) -> bool:
    return strategy.extended.variable_created_in_scope(variable.value if hasattr(variable, "value") else variable)


def check_model_in_scope(model, strategy) -> None:
    """Every trainable variable of ``model`` was created under ``strategy.scope()``."""
    for v in model.trainable_variables:
        check(
            _in_scope(strategy, v),
            "model variables were not created under the strategy's scope",
            v.path if hasattr(v, "path") else v.name,
            "create and build the model inside `with strategy.scope():`",
        )


def check_optimizer_in_scope(optimizer, strategy) -> None:
    """``optimizer`` (and its inner optimizer, if any) was created under ``strategy.scope()``."""
    for opt in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        created_under = getattr(opt, "_distribution_strategy", strategy)  # Keras' TF optimizers record it
        check(
            opt is None or created_under is strategy,
            "the optimizer was created outside the strategy's scope",
            f"{type(opt).__name__} created under {type(created_under).__name__}, training under {type(strategy).__name__}",
            "create the optimizer inside `with strategy.scope():`, like the model",
        )


def check_metrics_in_scope(metrics, strategy) -> None:
    """Every variable of the metric objects was created under ``strategy.scope()``."""
    for m in metrics:
        for v in m.variables:
            check(
                _in_scope(strategy, v),
                "a metric object was created outside the strategy's scope",
                m.name,
                "create the metric inside `with strategy.scope():`, or pass it by name (e.g. 'accuracy')",
            )
