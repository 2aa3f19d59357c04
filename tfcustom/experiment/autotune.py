"""Choose ``jit_compile`` and the precision by timing the actual model on the actual device.

No fixed choice is right: on a 2-core CPU, XLA speeds up a dropout-free MLP
1.6-2x and halves a small CNN (docs/guides/performance.md). [`tune`][tfcustom.experiment.autotune.tune] builds
throw-away copies of the model (``build(policy)`` returns a fresh
``(model, loss, optimizer)`` each call), runs a few training steps of each
candidate on real batches, and keeps the fastest:

* ``jit_compile``: ``False`` vs ``True``. Compile time (the first call) is
  excluded from the comparison and reported.
* precision (CPU only, and only when the CPU has bfloat16 instructions:
  ``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``): ``float32`` vs
  ``mixed_bfloat16``. bfloat16 is kept only if it is faster *and* the losses
  of the first steps, from the same initial weights and batches, agree with
  float32's to ``loss_rtol`` (relative). On GPU/TPU ``auto`` keeps
  [`tfcustom.distribute.strategy.resolve_precision`][tfcustom.distribute.strategy.resolve_precision]'s rule (mixed_float16 / mixed_bfloat16).

A candidate must be faster by more than ``margin`` (default 5 %) to replace
the default (no XLA, float32): within noise the simpler setting stays.
Timing runs interleaved rounds (best of ``rounds``), a few seconds in all.

The decision changes numerics, so a run must keep it: ``train_and_evaluate``
writes it to ``<run>/autotune.json`` and a resumed run reads it back instead
of measuring again.

Examples:
    >>> def build(policy):
    ...     keras.mixed_precision.set_global_policy(policy)
    ...     model = tfcustom.models.get("mlp", num_classes=10); model.build((None, 28, 28, 1))
    ...     return model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.Adam()
    >>> result = tune(build, lambda: iter(pipeline.dataset()))
    >>> result.jit_compile, result.precision
    (False, 'float32')
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcustom.distribute.strategy import device_type, resolve_precision
from tfcustom.errors import check
from tfcustom.training import steps as steps_lib
from tfcustom.run_json import damaged, read_json, write_json

AUTOTUNE_FILE = "autotune.json"
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: Shorter trainings are not measured (see `tune`).
MIN_TRAIN_STEPS = 1000


@dataclasses.dataclass
class Measurement:
    """One candidate's timing: ``step_s`` (best round, seconds per step),
    ``compile_s`` (first call, excluded), ``losses`` (its first steps'),
    ``rounds`` (every round's seconds per step: the spread of the timing)."""

    step_s: float
    compile_s: float
    losses: Sequence[float] = ()
    rounds: Sequence[float] = ()


@dataclasses.dataclass
class AutotuneResult:
    """The settings chosen and why; ``to_dict()`` goes into results.json."""

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


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True if the CPU lists bfloat16 instructions (``avx512_bf16``/``amx_bf16``)."""
    try:
        with open(cpuinfo) as f:
            flags = set(" ".join(line.split(":", 1)[1] for line in f if line.startswith("flags")).split())
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def pick_faster(default: str, candidate: str, times: Dict[str, Measurement], margin: float = 0.05) -> str:
    """``candidate`` if its step time is below ``default``'s by more than
    ``margin`` (a fraction), else ``default``."""
    return candidate if times[candidate].step_s < (1.0 - margin) * times[default].step_s else default


def losses_agree(reference: Sequence[float], other: Sequence[float], rtol: float) -> bool:
    """Every step's loss within ``rtol`` (relative) of the reference's, all finite."""
    ref, oth = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    return bool(ref.shape == oth.shape and np.all(np.isfinite(oth)) and np.all(np.abs(oth - ref) <= rtol * np.abs(ref)))


def measure(train_step, make_iterator: Callable[[], Iterable], *, steps: int, loss_steps: int = 1,
            timer: Callable[[], float] = time.perf_counter):
    """Returns ``(compile_s, losses, run)``: the first call's time (tracing
    and compilation, one step), the losses of the first ``loss_steps`` steps,
    and ``run()`` timing ``steps`` more steps (seconds per step)."""
    iterator = iter(make_iterator())
    start = timer()
    losses = [float(train_step(iterator, tf.constant(1))["loss"])]
    compile_s = timer() - start
    while len(losses) < loss_steps:
        losses.append(float(train_step(iterator, tf.constant(1))["loss"]))

    def run() -> float:
        begin = timer()
        float(train_step(iterator, tf.constant(steps))["loss"])  # waits for the result
        return (timer() - begin) / steps

    return compile_s, losses, run


def _measure_candidates(build, make_iterator, strategy, settings, steps, rounds, loss_steps, timer):
    """Build and time each ``name -> (policy, jit)`` candidate in interleaved rounds."""
    runs, first = {}, {}
    previous = keras.mixed_precision.global_policy()
    for name, (policy, jit) in settings.items():
        keras.utils.set_random_seed(0)  # same initial weights for every candidate
        try:
            with strategy.scope():
                model, loss, optimizer = build(policy)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        step = steps_lib.make_train_step(model, loss, optimizer, strategy=strategy, jit_compile=jit)
        compile_s, losses, runs[name] = measure(step, make_iterator, steps=steps, loss_steps=loss_steps, timer=timer)
        first[name] = (compile_s, losses)
    timed = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            timed[name].append(run())
    return {name: Measurement(min(timed[name]), first[name][0], first[name][1], timed[name]) for name in runs}


def candidates(jit_compile="auto", precision="auto") -> Dict[str, tuple]:
    """``name -> (policy, jit)`` to measure, the default (no XLA, float32) first.
    ``precision`` is ``"auto"`` only where bfloat16 is to be tried (see [`tune`][tfcustom.experiment.autotune.tune])."""
    jits = [False, True] if jit_compile == "auto" else [bool(jit_compile)]
    policies = ["float32", "mixed_bfloat16"] if precision == "auto" else [precision]
    return {f"{policy}/jit={jit}": (policy, jit) for policy in policies for jit in jits}


def decide(times: Dict[str, Measurement], jit_compile="auto", precision="auto", *, loss_rtol: float = 0.05,
           margin: float = 0.05, reasons: Optional[Dict[str, str]] = None) -> AutotuneResult:
    """The decision from the measurements of [`candidates`][tfcustom.experiment.autotune.candidates]' settings (a pure function).

    The fastest candidate wins if it beats the default by more than
    ``margin``; a bfloat16 candidate takes part only if its first losses agree
    with float32's (same ``jit``) to ``loss_rtol``.
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


def tune(
    build: Callable[[str], tuple],
    make_iterator: Callable[[], Iterable],
    *,
    strategy: Optional[tf.distribute.Strategy] = None,
    jit_compile="auto",
    precision: str = "auto",
    steps: int = 10,
    rounds: int = 3,
    loss_steps: int = 5,
    loss_rtol: float = 0.05,
    margin: float = 0.05,
    timer: Callable[[], float] = time.perf_counter,
    has_bf16: Optional[bool] = None,
    train_steps: Optional[int] = None,
    min_train_steps: int = MIN_TRAIN_STEPS,
    deterministic: bool = False,
) -> AutotuneResult:
    """Decide ``jit_compile`` and the precision; explicit values are kept unmeasured.

    Args:
      build: ``build(policy_name) -> (model, loss, optimizer)``, fresh objects
        each call with that dtype policy, built under the strategy's scope
        (the caller's global dtype policy is put back afterwards).
      make_iterator: returns an iterator (or a dataset) of training batches,
        distributed for ``strategy`` when it has several replicas.
      jit_compile: ``"auto"``, True or False.
      precision: ``"auto"`` or a Keras policy name.
      steps: each timed call runs ``steps`` steps.
      rounds: the candidates are timed in ``rounds`` interleaved rounds; the best counts.
      loss_steps: first steps whose losses float32 and bfloat16 must agree on.
      loss_rtol: that agreement, relative.
      margin: how much faster a candidate must be to replace the default.
      timer: a clock (tests pass a fake one).
      has_bf16: override of [`cpu_has_bf16`][tfcustom.experiment.autotune.cpu_has_bf16].
      train_steps: the training's length in steps; below ``min_train_steps``
        nothing is measured (measuring costs about ``4 * (loss_steps + steps *
        rounds)`` steps plus the compilations, which a short run would not
        repay) and "auto" means no XLA and [`tfcustom.distribute.strategy.resolve_precision`][tfcustom.distribute.strategy.resolve_precision]'s rule.
      deterministic: nothing is measured either ("auto" as for a short
        training): a timing-based choice of XLA or bfloat16 changes the
        numerics, so two runs of one command could train different models.
    """
    check(jit_compile in ("auto", True, False), "jit_compile must be 'auto', True or False", jit_compile,
          "pass jit_compile='auto' to measure, or a bool")
    check(precision == "auto" or precision in ("float32", "mixed_float16", "mixed_bfloat16"), "unknown precision", precision,
          "pass auto, float32, mixed_float16 or mixed_bfloat16")
    strategy = strategy or tf.distribute.get_strategy()
    device = device_type(strategy)
    reasons = {}
    short = train_steps is not None and train_steps < min_train_steps
    if (deterministic or short) and "auto" in (jit_compile, precision):
        why = (f"not measured: {train_steps} training steps < {min_train_steps}" if short else
               "not measured: deterministic run (a timing-based choice could change its numerics)")
        reasons = {"jit_compile": why if jit_compile == "auto" else f"given: {jit_compile}",
                   "precision": why if precision == "auto" else f"given: {precision}"}
        jit_compile = False if jit_compile == "auto" else jit_compile
        precision = resolve_precision(precision, strategy)
    if precision == "auto" and device != "CPU":
        precision = resolve_precision("auto", strategy)
        reasons["precision"] = f"rule for {device}: {precision}"
    elif precision == "auto" and not (cpu_has_bf16() if has_bf16 is None else has_bf16):
        precision = "float32"
        reasons["precision"] = "CPU without bfloat16 instructions: float32"
    elif precision != "auto":
        reasons.setdefault("precision", f"given: {precision}")
    if jit_compile == "auto" and device == "TPU":
        jit_compile = True  # a TPU runs compiled code only
        reasons["jit_compile"] = "TPU: always compiled"
    if jit_compile != "auto":
        reasons.setdefault("jit_compile", f"given: {jit_compile}")
    settings = candidates(jit_compile, precision)
    if len(settings) == 1:
        (policy, jit), = settings.values()
        result = AutotuneResult(bool(jit), policy, {}, reasons)
        log(result)
        return result
    times = _measure_candidates(build, make_iterator, strategy, settings, steps, rounds, loss_steps, timer)
    result = decide(times, jit_compile, precision, loss_rtol=loss_rtol, margin=margin, reasons=reasons)
    log(result)
    logging.info("Autotune: a measured choice can differ between runs of one command; --deterministic keeps "
                 "float32 without XLA unless --precision/--jit_compile name them")
    return result


def log(result: AutotuneResult) -> None:
    """One log line: the choice and why."""
    why = sorted(set(result.reasons.values()))
    logging.info("Autotune: jit_compile=%s, precision=%s (%s)", result.jit_compile, result.precision, "; ".join(why))


def load(workdir: Optional[str]) -> Optional[AutotuneResult]:
    """The decision recorded in ``workdir/autotune.json`` (a resumed run keeps
    its numerics), or None."""
    path = os.path.join(workdir, AUTOTUNE_FILE) if workdir else None
    if not path or not os.path.exists(path):
        return None
    result = _from_file(path, read_json(path, dict), "restore the file, or pass --overwrite to start the run over")
    logging.info("Autotune: reusing the run's decision jit_compile=%s, precision=%s (%s)", result.jit_compile, result.precision, path)
    return result


def load_from(path: str) -> AutotuneResult:
    """Another run's decision, to replay exactly (``--autotune_from``): ``path``
    is a run directory, its ``autotune.json``, or its ``results.json``."""
    if os.path.isdir(path):
        path = os.path.join(path, AUTOTUNE_FILE)
    check(os.path.isfile(path), "no autotune decision to replay", path,
          "pass a run directory that has autotune.json, or that file (or the run's results.json)")
    data = read_json(path, dict, "pass the run directory or its autotune.json")
    result = _from_file(path, data.get("autotune", data), "pass the run directory or its autotune.json")
    reason = f"replayed from {path}"
    result.reasons = {"jit_compile": reason, "precision": reason}
    logging.info("Autotune: replaying jit_compile=%s, precision=%s (%s)", result.jit_compile, result.precision, path)
    return result


def _from_file(path: str, data: dict, fix: str) -> AutotuneResult:
    try:
        result = AutotuneResult.from_dict(data)
    except TypeError:
        raise damaged(path, f"not an autotune decision: fields {sorted(data)[:6]}", fix) from None
    check(isinstance(result.jit_compile, bool) and isinstance(result.precision, str), f"{os.path.basename(path)} is damaged "
          "(jit_compile must be true/false and precision a string)", (result.jit_compile, result.precision), fix)
    return result


def save(result: AutotuneResult, workdir: str) -> None:
    write_json(os.path.join(workdir, AUTOTUNE_FILE), result.to_dict())
