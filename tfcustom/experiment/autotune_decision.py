"""The autotune decision from its measurements, a pure function: the candidates, the margins, the loss agreement.

[`tfcustom.experiment.autotune.tune`][tfcustom.experiment.autotune.tune] measures the
[`candidates`][tfcustom.experiment.autotune.candidates] in interleaved rounds and
[`decide`][tfcustom.experiment.autotune.decide] chooses on the median of the paired per-round
ratios candidate / default ([`paired_ratio`][tfcustom.experiment.autotune.paired_ratio]; the
first, warm-up round dropped): the default (no XLA, float32) unless XLA reaches
``1 - margin`` (0.95) ([`pick_faster`][tfcustom.experiment.autotune.pick_faster]); bfloat16 only
if it reaches ``1 - precision_margin`` (0.8) of the float32 choice and its first losses agree with
float32's ([`losses_agree`][tfcustom.experiment.autotune.losses_agree]). Re-exported by
[`tfcustom.experiment.autotune`][tfcustom.experiment.autotune].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

import numpy as np


@dataclasses.dataclass
class Measurement:
    """One candidate's timing.

    Attributes:
      step_s: the best round's seconds per step (recorded; the decision uses the paired ``rounds``).
      compile_s: the first call's seconds (tracing and compilation; not compared).
      losses: the losses of its first steps.
      rounds: every round's seconds per step, in the order timed (the first is a warm-up).

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


def _kept_rounds(rounds: Sequence[float]) -> List[float]:
    """The rounds the decision uses: the first (a warm-up) dropped when there are at least 3."""
    return [float(t) for t in (rounds[1:] if len(rounds) >= 3 else rounds)]


def paired_ratios(candidate: Measurement, default: Measurement) -> List[float]:
    """Round ``i`` of ``candidate`` over round ``i`` of ``default``: the rounds are
    interleaved, so a slowdown common to one round (the machine's load) cancels.

    Args:
      candidate: the challenger's measurement.
      default: the measurement it is compared with.

    Returns:
      One ratio per round; ``[candidate.step_s / default.step_s]`` when the two
      have no rounds of the same length (measurements made without rounds).

    Examples:
        >>> paired_ratios(Measurement(0.9, 0.0, rounds=[2.0, 0.9, 1.8]), Measurement(1.0, 0.0, rounds=[2.0, 1.0, 2.0]))
        [1.0, 0.9, 0.9]
        >>> paired_ratios(Measurement(0.9, 0.0), Measurement(1.0, 0.0))
        [0.9]
    """
    if candidate.rounds and len(candidate.rounds) == len(default.rounds):
        return [float(c) / float(d) for c, d in zip(candidate.rounds, default.rounds)]
    return [float(candidate.step_s) / float(default.step_s)]


def paired_ratio(candidate: Measurement, default: Measurement) -> float:
    """The median of [`paired_ratios`][tfcustom.experiment.autotune.paired_ratios],
    the first round dropped (a warm-up, 2-3x slower) when there are at least 3.

    Args:
      candidate: the challenger's measurement.
      default: the measurement it is compared with.

    Returns:
      Below 1 when ``candidate`` is faster.

    Examples:
        >>> warm = Measurement(0.9, 0.0, rounds=[5.0, 0.9, 0.8, 0.9])    # a slow first round does not count
        >>> paired_ratio(warm, Measurement(1.0, 0.0, rounds=[2.0, 1.0, 1.0, 1.0]))
        0.9
    """
    return float(np.median(_kept_rounds(paired_ratios(candidate, default))))


def pick_faster(default: str, candidate: str, times: Dict[str, Measurement], margin: float = 0.05) -> str:
    """``candidate`` if its [`paired_ratio`][tfcustom.experiment.autotune.paired_ratio] to
    ``default`` is below ``1 - margin``, else ``default``.

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
    return candidate if paired_ratio(times[candidate], times[default]) < 1.0 - margin else default


def _pick_fastest(baseline: str, challengers: Sequence[str], times: Dict[str, Measurement], margin: float) -> str:
    """The challenger with the lowest paired ratio to ``baseline`` if it beats it by ``margin``, else ``baseline``."""
    if not challengers:
        return baseline
    best = min(challengers, key=lambda name: paired_ratio(times[name], times[baseline]))
    return pick_faster(baseline, best, times, margin)


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


def _record(times, settings, default, precision, loss_rtol):
    """``(measured, eligible)``: what autotune.json records per candidate, and the candidates allowed to win."""
    measured, eligible = {}, []
    for name, (policy, jit) in settings.items():
        m = times[name]
        measured[name] = {"step_s": m.step_s, "compile_s": m.compile_s}
        if m.rounds:  # every round, and their spread relative to the best (the first round is a warm-up)
            measured[name]["step_s_rounds"] = [float(t) for t in m.rounds]
            measured[name]["spread"] = float(max(m.rounds) / m.step_s - 1.0)
        if name != default:
            measured[name]["ratio_rounds"] = paired_ratios(m, times[default])
            measured[name]["ratio"] = paired_ratio(m, times[default])
        if policy == "mixed_bfloat16" and precision == "auto":
            ref = np.asarray(times[f"float32/jit={jit}"].losses, np.float64)
            oth = np.asarray(m.losses, np.float64)
            measured[name]["losses_agree"] = losses_agree(ref, oth, loss_rtol)
            if ref.shape == oth.shape and ref.size:
                measured[name]["max_loss_rel_diff"] = float(np.max(np.abs(oth - ref) / np.abs(ref)))
            if not measured[name]["losses_agree"]:
                continue
        eligible.append(name)
    return measured, eligible


def _summary(times, measured, default, chosen, base_choice, margin, precision_margin, loss_rtol, two_policies,
             versus: str = "") -> str:
    """The reason logged and recorded: the median paired ratios, the margins, the choice."""
    parts = []
    for name, m in measured.items():
        kept = _kept_rounds(times[name].rounds) or [times[name].step_s]
        ratio = "" if name == default else f" x{m['ratio']:.2f}"
        bad = "" if m.get("losses_agree", True) else " [losses differ]"
        parts.append(f"{name} {float(np.median(kept)) * 1e3:.2f} ms/step{ratio} (compile {times[name].compile_s:.1f} s){bad}")
    rule = f"XLA must reach x{1.0 - margin:.2f}"
    if two_policies:
        rule += (f", bfloat16 x{1.0 - precision_margin:.2f} of the float32 choice ({base_choice}) "
                 f"with its first losses within {loss_rtol:g}")
    return (f"measured: {', '.join(parts)}{versus}; x = median of the paired per-round step-time ratios to {default}, "
            f"the first round dropped as warm-up when >= 3 rounds; {rule}; chose {chosen}; "
            f"timing can differ between runs of one command, --deterministic does not measure")


def decide(times: Dict[str, Measurement], jit_compile="auto", precision="auto", *, loss_rtol: float = 0.05,
           margin: float = 0.05, precision_margin: float = 0.2, reasons: Optional[Dict[str, str]] = None) -> AutotuneResult:
    """The decision from the measurements of [`candidates`][tfcustom.experiment.autotune.candidates]' settings (a pure function).

    Candidates are compared by [`paired_ratio`][tfcustom.experiment.autotune.paired_ratio]
    (the median of round-by-round step-time ratios, the warm-up round
    dropped). First the default policy's settings: XLA replaces the default
    if its ratio is below ``1 - margin``. Then the other precision (bfloat16,
    when ``precision="auto"``), only its candidates whose first losses agree
    with float32's (same ``jit``) to ``loss_rtol``: its best setting (XLA by
    ``margin`` again) replaces the float32 choice only if its ratio to that
    choice is below ``1 - precision_margin``: it changes the numerics, so it
    must be clearly faster, not within the noise.

    Args:
      times: ``candidate name -> Measurement`` for every candidate of ``candidates(jit_compile, precision)``.
      jit_compile: as given to [`candidates`][tfcustom.experiment.autotune.candidates].
      precision: as given to [`candidates`][tfcustom.experiment.autotune.candidates].
      loss_rtol: the relative agreement of bfloat16's first losses with float32's.
      margin: how much faster (a fraction) XLA must be than no XLA.
      precision_margin: how much faster (a fraction) bfloat16 must be than the float32 choice.
      reasons: reasons decided before (kept); the others say what was measured and chosen.

    Returns:
      The [`AutotuneResult`][tfcustom.experiment.autotune.AutotuneResult], with the measurements
      (per candidate also ``ratio`` and ``ratio_rounds``, to the default).

    Examples:
        >>> times = {"float32/jit=False": Measurement(0.010, 1.0, [2.3]), "float32/jit=True": Measurement(0.006, 5.0, [2.3]),
        ...          "mixed_bfloat16/jit=False": Measurement(0.003, 1.0, [2.9]),     # fastest, but its loss is off
        ...          "mixed_bfloat16/jit=True": Measurement(0.0045, 5.0, [2.31])}   # agrees within 5 %: x0.75 of XLA's
        >>> result = decide(times)
        >>> result.jit_compile, result.precision, result.measurements["mixed_bfloat16/jit=False"]["losses_agree"]
        (True, 'mixed_bfloat16', False)
        >>> decide(times, precision="float32").reasons["jit_compile"]   # doctest: +NORMALIZE_WHITESPACE
        'measured: float32/jit=False 10.00 ms/step (compile 1.0 s), float32/jit=True 6.00 ms/step x0.60 (compile 5.0 s);
         x = median of the paired per-round step-time ratios to float32/jit=False, the first round dropped as warm-up
         when >= 3 rounds; XLA must reach x0.95; chose float32/jit=True; timing can differ between runs of one
         command, --deterministic does not measure'
    """
    settings = candidates(jit_compile, precision)
    default = next(iter(settings))
    measured, eligible = _record(times, settings, default, precision, loss_rtol)
    same = [name for name in eligible if settings[name][0] == settings[default][0]]
    other = [name for name in eligible if settings[name][0] != settings[default][0]]
    base_choice = chosen = _pick_fastest(default, [name for name in same if name != default], times, margin)
    versus = ""
    if other:
        other_choice = _pick_fastest(other[0], other[1:], times, margin)
        chosen = pick_faster(base_choice, other_choice, times, precision_margin)
        if base_choice != default:  # the ratio the precision margin was applied to
            versus = f"; {other_choice} x{paired_ratio(times[other_choice], times[base_choice]):.2f} of {base_choice}"
    policy, jit = settings[chosen]
    two_policies = len({policy for policy, _ in settings.values()}) > 1
    summary = _summary(times, measured, default, chosen, base_choice, margin, precision_margin, loss_rtol, two_policies,
                       versus)
    reasons = dict(reasons or {})
    for key in ("jit_compile", "precision"):
        reasons.setdefault(key, summary)
    return AutotuneResult(bool(jit), policy, measured, reasons)
