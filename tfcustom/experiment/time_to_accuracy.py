"""Time to accuracy: when a run's validation (or test) accuracy first reached a target.

Computed from the run's history (one record per epoch, with ``time_s``, the
epoch's training-plus-validation time), so it survives a resume: the resumed
run's history holds the earlier epochs' records. Accuracy is checked at epoch
ends, as the history records it; the time is the training time up to the end
of that epoch (per-epoch test evaluations, ``test_accuracy`` in the history
with ``--target_accuracy_test``, are not counted in ``time_s``).

Examples:
    >>> records = [{"epoch": 1, "time_s": 10.0, "val_accuracy": 0.85},
    ...            {"epoch": 2, "time_s": 11.0, "val_accuracy": 0.91}]
    >>> first_reached(records, "val_accuracy", 0.9, steps_per_epoch=100)
    {'target': 0.9, 'reached': True, 'epoch': 2, 'step': 200, 'time_s': 21.0, 'accuracy': 0.91}
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence


def first_reached(records: Sequence[Dict[str, float]], key: str, target: float,
                  steps_per_epoch: Optional[int] = None) -> Dict[str, object]:
    """The first epoch whose ``key`` is >= ``target``: its epoch, global step
    (``epoch * steps_per_epoch``), cumulative ``time_s`` and value; or
    ``{"reached": False, ...}`` with the best value seen."""
    elapsed = 0.0
    best = None
    for record in records:
        elapsed += float(record.get("time_s", 0.0))
        value = record.get(key)
        if value is None:
            continue
        best = value if best is None else max(best, value)
        if value >= target:
            return {"target": target, "reached": True, "epoch": int(record["epoch"]),
                    "step": None if steps_per_epoch is None else int(record["epoch"]) * steps_per_epoch,
                    "time_s": elapsed, "accuracy": float(value)}
    return {"target": target, "reached": False, "best_accuracy": best, "time_s_total": elapsed}


def describe(name: str, result: Dict[str, object]) -> str:
    """One log line."""
    if result["reached"]:
        return (f"{name} accuracy first reached {result['target']:g} at epoch {result['epoch']}"
                + (f" (step {result['step']})" if result.get("step") is not None else "")
                + f" after {result['time_s']:.1f} s of training ({result['accuracy']:.4f})")
    best = result.get("best_accuracy")
    return f"{name} accuracy never reached {result['target']:g} (best {'n/a' if best is None else f'{best:.4f}'})"
