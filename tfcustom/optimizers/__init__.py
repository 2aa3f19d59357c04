"""Optimizers: tfcustom's ``SGD``, optimizers and learning-rate schedules by name, two learning rates.

- `by_name`: ``SGD`` (momentum, Nesterov, weight decay), ``get(name, ...)``, ``names()``,
  ``make_schedule(name, ...)``, ``schedule_names()``;
- `backbone_head`: ``BackboneHeadOptimizer``, one learning rate for the backbone and one for the head.
"""

from tfcustom.optimizers.by_name import SGD, get, make_schedule, names, schedule_names

__all__ = ["SGD", "get", "make_schedule", "names", "schedule_names"]
