"""Step timing of the fit loop and the retracing check: moved to `tfcustom.callbacks.timing` (importable from here too)."""

from tfcustom.callbacks.timing import StepTimer, check_retracing, tracing_count

__all__ = ["StepTimer", "check_retracing", "tracing_count"]
