"""The autotune decision from its measurements, a pure function: the candidates, the margin, the loss agreement.

[`tfcustom.experiment.autotune.tune`][tfcustom.experiment.autotune.tune] measures the
[`candidates`][tfcustom.experiment.autotune.candidates] and [`decide`][tfcustom.experiment.autotune.decide] chooses: the default
(no XLA, float32) unless a candidate is faster by more than the margin
([`pick_faster`][tfcustom.experiment.autotune.pick_faster]), bfloat16 only if its first losses agree with float32's
([`losses_agree`][tfcustom.experiment.autotune.losses_agree]). Re-exported by
[`tfcustom.experiment.autotune`][tfcustom.experiment.autotune].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

import numpy as np


@dataclasses.dataclass
class Measurement:
    """One candidate's timing.

    Attributes:
      step_s: the best round's seconds per step.
      compile_s: the first call's seconds (tracing and compilation; not compared).
      losses: the losses of its first steps.
      rounds: every round's seconds per step (the spread of the timing).

    Examples:
        >>> m = Measurement(step_s=0.010, compile_s=2.0, losses=[2.30, 2.10], rounds=[0.011, 0.010, 0.012])
        >>> m.step_s == min(m.rounds)
        True
    """

    step_s: float
    compile_s: float
    losses: Sequence[float] = ()
    rounds: Sequence[float] = ()


@dataclasses.dataclass
class AutotuneResult:
    """The settings chosen and why; ``to_dict()`` goes into results.json (and ``autotune.json``).

    Attributes:
      jit_compile: whether the step is XLA-compiled.
      precision: the Keras dtype policy name, e.g. ``"float32"``.
      measurements: ``candidate name -> {"step_s", "compile_s", ...}`` (empty when nothing was measured).
      reasons: ``{"jit_compile": why, "precision": why}``.
      finders: the batch-size and learning-rate finders' values and curves.

    Examples:
        >>> result = AutotuneResult(True, "float32", reasons={"jit_compile": "TPU: always compiled"})
        >>> result.to_dict()
        {'jit_compile': True, 'precision': 'float32', 'measurements': {}, 'reasons': {'jit_compile': 'TPU: always compiled'}, 'finders': {}}
        >>> AutotuneResult.from_dict(result.to_dict()) == result
        True
    """

    jit_compile: bool
    precision: str
    measurements: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
    reasons: Dict[str, str] = dataclasses.field(default_factory=dict)
    #: ``--batch_size=find`` / ``--learning_rate=find`` (tfcustom.experiment.finders): the values found and their curves.
    finders: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AutotuneResult":
        return cls(**d)


def pick_faster(default: str, candidate: str, times: Dict[str, Measurement], margin: float = 0.05) -> str:
    """``candidate`` if its step time is below ``default``'s by more than
    ``margin`` (a fraction), else ``default``.

    Args:
      default: the name of the setting kept unless beaten.
      candidate: the name of the challenger.
      times: ``name -> Measurement`` for both.
      margin: the fraction of ``default``'s step time to beat it by.

    Returns:
      ``candidate`` or ``default``.

    Examples:
        >>> times = {"plain": Measurement(1.00, 0.0), "xla": Measurement(0.97, 9.0), "fast": Measurement(0.80, 9.0)}
        >>> pick_faster("plain", "xla", times), pick_faster("plain", "fast", times)   # 3 % is within the noise
        ('plain', 'fast')
    """
    return candidate if times[candidate].step_s < (1.0 - margin) * times[default].step_s else default


def losses_agree(reference: Sequence[float], other: Sequence[float], rtol: float) -> bool:
    """Every step's loss within ``rtol`` (relative) of the reference's, all finite.

    Args:
      reference: the float32 run's losses, step by step.
      other: the candidate's losses, as many.
      rtol: the relative tolerance.

    Returns:
      True if as many losses, all finite, each within ``rtol * |reference|``.

    Examples:
        >>> losses_agree([2.0, 1.5], [2.05, 1.52], rtol=0.05), losses_agree([2.0, 1.5], [2.0, 1.7], rtol=0.05)
        (True, False)
        >>> losses_agree([2.0, 1.5], [2.0, float("nan")], rtol=0.05), losses_agree([2.0, 1.5], [2.0], rtol=0.05)
        (False, False)
    """
    ref, oth = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    return bool(ref.shape == oth.shape and np.all(np.isfinite(oth)) and np.all(np.abs(oth - ref) <= rtol * np.abs(ref)))


def candidates(jit_compile="auto", precision="auto") -> Dict[str, tuple]:
    """``name -> (policy, jit)`` to measure, the default (no XLA, float32) first.
    ``precision`` is ``"auto"`` only where bfloat16 is to be tried (see [`tune`][tfcustom.experiment.autotune.tune]).

    Args:
      jit_compile: ``"auto"`` (both), True or False.
      precision: ``"auto"`` (float32 and mixed_bfloat16) or one policy name.

    Returns:
      ``{"<policy>/jit=<bool>": (policy, jit)}``, in measuring order.

    Examples:
        >>> list(candidates())
        ['float32/jit=False', 'float32/jit=True', 'mixed_bfloat16/jit=False', 'mixed_bfloat16/jit=True']
        >>> candidates(True, "float32")
        {'float32/jit=True': ('float32', True)}
    """
    jits = [False, True] if jit_compile == "auto" else [bool(jit_compile)]
    policies = ["float32", "mixed_bfloat16"] if precision == "auto" else [precision]
    return {f"{policy}/jit={jit}": (policy, jit) for policy in policies for jit in jits}


def decide(times: Dict[str, Measurement], jit_compile="auto", precision="auto", *, loss_rtol: float = 0.05,
           margin: float = 0.05, reasons: Optional[Dict[str, str]] = None) -> AutotuneResult:
    """The decision from the measurements of [`candidates`][tfcustom.experiment.autotune.candidates]' settings (a pure function).

    The fastest candidate wins if it beats the default by more than
    ``margin``; a bfloat16 candidate takes part only if its first losses agree
    with float32's (same ``jit``) to ``loss_rtol``.

    Args:
      times: ``candidate name -> Measurement`` for every candidate of ``candidates(jit_compile, precision)``.
      jit_compile: as given to [`candidates`][tfcustom.experiment.autotune.candidates].
      precision: as given to [`candidates`][tfcustom.experiment.autotune.candidates].
      loss_rtol: the relative agreement of bfloat16's first losses with float32's.
      margin: how much faster (a fraction) a candidate must be than the default.
      reasons: reasons decided before (kept); the others say what was measured and chosen.

    Returns:
      The [`AutotuneResult`][tfcustom.experiment.autotune.AutotuneResult], with the measurements.

    Examples:
        >>> times = {"float32/jit=False": Measurement(0.010, 1.0, [2.3]), "float32/jit=True": Measurement(0.006, 5.0, [2.3]),
        ...          "mixed_bfloat16/jit=False": Measurement(0.004, 1.0, [2.9]),     # fastest, but its loss is off
        ...          "mixed_bfloat16/jit=True": Measurement(0.005, 5.0, [2.31])}    # agrees within 5 %: fastest left
        >>> result = decide(times)
        >>> result.jit_compile, result.precision, result.measurements["mixed_bfloat16/jit=False"]["losses_agree"]
        (True, 'mixed_bfloat16', False)
        >>> decide(times, precision="float32").reasons["jit_compile"]   # doctest: +NORMALIZE_WHITESPACE
        'measured: float32/jit=False 10.00 ms/step (compile 1.0 s), float32/jit=True 6.00 ms/step (compile 5.0 s);
         chose float32/jit=True (a candidate must beat float32/jit=False by 5%)'
    """
    settings = candidates(jit_compile, precision)
    default = next(iter(settings))
    reasons = dict(reasons or {})
    measured, eligible = {}, []
    for name, (policy, jit) in settings.items():
        measured[name] = {"step_s": times[name].step_s, "compile_s": times[name].compile_s}
        if times[name].rounds:  # spread of the rounds, relative to the best: how far to trust the margin
            measured[name]["step_s_rounds"] = [float(t) for t in times[name].rounds]
            measured[name]["spread"] = float(max(times[name].rounds) / times[name].step_s - 1.0)
        if policy == "mixed_bfloat16" and precision == "auto":
            ref = np.asarray(times[f"float32/jit={jit}"].losses, np.float64)
            oth = np.asarray(times[name].losses, np.float64)
            measured[name]["losses_agree"] = losses_agree(ref, oth, loss_rtol)
            if ref.shape == oth.shape and ref.size:
                measured[name]["max_loss_rel_diff"] = float(np.max(np.abs(oth - ref) / np.abs(ref)))
            if not measured[name]["losses_agree"]:
                continue
        eligible.append(name)
    fastest = min(eligible, key=lambda name: times[name].step_s)
    chosen = pick_faster(default, fastest, times, margin)
    policy, jit = settings[chosen]
    summary = ", ".join(f"{name} {times[name].step_s * 1e3:.2f} ms/step (compile {times[name].compile_s:.1f} s)"
                        + ("" if measured[name].get("losses_agree", True) else " [losses differ]") for name in settings)
    summary = f"measured: {summary}; chose {chosen} (a candidate must beat {default} by {margin:.0%}"
    if precision == "auto":
        summary += f"; bfloat16 only if its first losses agree within {loss_rtol:g})"
    else:
        summary += ")"
    for key in ("jit_compile", "precision"):
        reasons.setdefault(key, summary)
    return AutotuneResult(bool(jit), policy, measured, reasons)
