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

Candidates are timed in ``rounds`` interleaved rounds (each round times every
candidate once, ``steps`` steps each) and compared by the median of the
*paired* per-round ratios candidate / default (round ``i`` against round
``i``, so a slowdown of the machine common to one round cancels), the first
round dropped when there are at least 3: it is a warm-up, 2-3x slower than
the others. XLA must reach a ratio below ``1 - margin`` (default 0.95) to
replace no XLA; bfloat16 changes the numerics, so it must reach ``1 -
precision_margin`` (default 0.8) of the float32 choice: a difference within
the round-to-round noise keeps the simpler setting, run after run.

``rounds=5`` by default: 4 paired ratios after the warm-up, so one disturbed
round shifts the median little. A round costs ``4 * steps`` (40) steps: on the
default CNN on a 2-core CPU 1.3-1.6 s, the warm-up round about 2.2 s, and a
whole measurement with 3 rounds, compilations included, 10-12 s (the 10 runs recorded in
``benchmarks/autotune_stability.json``, 2026-12-04), so 5 rounds instead of 3
add about 3 s, once per run of at least ``MIN_TRAIN_STEPS`` steps.

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

import os
import time
from typing import Callable, Iterable, Optional

import keras
import tensorflow as tf
from absl import logging

from tfcustom.distribute.strategy import device_type, resolve_precision
from tfcustom.errors import check
from tfcustom.training import steps as steps_lib
from tfcustom.run_json import damaged, read_json, write_json
from tfcustom.experiment.autotune_decision import (  # the decision from the measurements, re-exported
    AutotuneResult, Measurement, candidates, decide, losses_agree, paired_ratio, paired_ratios, pick_faster,
)

__all__ = [
    "AUTOTUNE_FILE", "BF16_CPU_FLAGS", "MIN_TRAIN_STEPS", "Measurement", "AutotuneResult", "cpu_has_bf16", "pick_faster",
    "paired_ratio", "paired_ratios", "losses_agree", "measure", "candidates", "decide", "tune", "log", "load", "load_from", "save",
]

AUTOTUNE_FILE = "autotune.json"
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: Shorter trainings are not measured (see `tune`).
MIN_TRAIN_STEPS = 1000


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True if the CPU lists bfloat16 instructions (``avx512_bf16``/``amx_bf16``).

    Args:
      cpuinfo: a file in ``/proc/cpuinfo``'s format (its ``flags`` lines are read).

    Returns:
      Whether a ``flags`` line names one of `BF16_CPU_FLAGS`; False if the file cannot be read.

    Examples:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "cpuinfo")
        >>> _ = open(path, "w").write("processor\\t: 0\\nflags\\t\\t: fpu sse2 avx512f avx512_bf16\\n")
        >>> cpu_has_bf16(path), cpu_has_bf16("/no/such/file")
        (True, False)
    """
    try:
        with open(cpuinfo) as f:
            flags = set(" ".join(line.split(":", 1)[1] for line in f if line.startswith("flags")).split())
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def measure(train_step, make_iterator: Callable[[], Iterable], *, steps: int, loss_steps: int = 1,
            timer: Callable[[], float] = time.perf_counter):
    """Time a train step: its first call, its first losses, and a timer of later calls.

    Args:
      train_step: ``train_step(iterator, num_steps) -> {"loss": ...}``, e.g. from `make_train_step`.
      make_iterator: returns the batches' iterator (or an iterable).
      steps: the steps each ``run()`` call times.
      loss_steps: the first steps whose losses are recorded (at least the first call's).
      timer: a clock in seconds.

    Returns:
      ``(compile_s, losses, run)``: the first call's time (tracing
      and compilation, one step), the losses of the first ``loss_steps`` steps,
      and ``run()`` timing ``steps`` more steps (seconds per step).

    Examples:
        >>> step = lambda iterator, num_steps: {"loss": next(iterator)}   # a fake step: the "batches" are losses
        >>> clock = iter([0.0, 2.5, 10.0, 10.4]).__next__                  # a fake clock
        >>> compile_s, losses, run = measure(step, lambda: [3.0, 2.0, 1.0], steps=4, loss_steps=2, timer=clock)
        >>> compile_s, losses, round(run(), 6)   # 2.5 s for the first call; 0.4 s for 4 steps
        (2.5, [3.0, 2.0], 0.1)
    """
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


def tune(
    build: Callable[[str], tuple],
    make_iterator: Callable[[], Iterable],
    *,
    strategy: Optional[tf.distribute.Strategy] = None,
    jit_compile="auto",
    precision: str = "auto",
    steps: int = 10,
    rounds: int = 5,
    loss_steps: int = 5,
    loss_rtol: float = 0.05,
    margin: float = 0.05,
    precision_margin: float = 0.2,
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
      rounds: the candidates are timed in ``rounds`` interleaved rounds; the median of
        the paired per-round ratios counts, the first (warm-up) round dropped when >= 3.
      loss_steps: first steps whose losses float32 and bfloat16 must agree on.
      loss_rtol: that agreement, relative.
      margin: how much faster (a fraction) XLA must be to replace no XLA.
      precision_margin: how much faster (a fraction) bfloat16 must be than the float32 choice.
      timer: a clock (tests pass a fake one).
      has_bf16: override of [`cpu_has_bf16`][tfcustom.experiment.autotune.cpu_has_bf16].
      train_steps: the training's length in steps; below ``min_train_steps``
        nothing is measured (measuring costs about ``4 * (loss_steps + steps *
        rounds)`` steps plus the compilations, which a short run would not
        repay) and "auto" means no XLA and [`tfcustom.distribute.strategy.resolve_precision`][tfcustom.distribute.strategy.resolve_precision]'s rule.
      deterministic: nothing is measured either ("auto" as for a short
        training): a timing-based choice of XLA or bfloat16 changes the
        numerics, so two runs of one command could train different models.

    Returns:
      The [`AutotuneResult`][tfcustom.experiment.autotune.AutotuneResult] (logged in one line).

    Examples:
        >>> result = tune(None, None, jit_compile=False, precision="float32")   # both given: nothing built or measured
        >>> result.jit_compile, result.precision, result.reasons
        (False, 'float32', {'precision': 'given: float32', 'jit_compile': 'given: False'})
        >>> tune(None, None, precision="float32", train_steps=100).reasons["jit_compile"]   # too short to repay it
        'not measured: 100 training steps < 1000'
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
    result = decide(times, jit_compile, precision, loss_rtol=loss_rtol, margin=margin, precision_margin=precision_margin,
                    reasons=reasons)
    log(result)  # its reason says that a measured choice can differ between runs, and the margins
    return result


def log(result: AutotuneResult) -> None:
    """One log line (absl INFO): the choice and why.

    Args:
      result: the [`AutotuneResult`][tfcustom.experiment.autotune.AutotuneResult].

    Examples:
        >>> import logging as py_logging
        >>> records, handler = [], py_logging.Handler()
        >>> handler.emit = records.append
        >>> py_logging.getLogger("absl").addHandler(handler)
        >>> was = logging.get_verbosity(); logging.set_verbosity(logging.INFO)
        >>> log(AutotuneResult(True, "float32", reasons={"jit_compile": "TPU: always compiled", "precision": "given: float32"}))
        >>> logging.set_verbosity(was); py_logging.getLogger("absl").removeHandler(handler)
        >>> [r.getMessage() for r in records]
        ['Autotune: jit_compile=True, precision=float32 (TPU: always compiled; given: float32)']
    """
    why = sorted(set(result.reasons.values()))
    logging.info("Autotune: jit_compile=%s, precision=%s (%s)", result.jit_compile, result.precision, "; ".join(why))


def load(workdir: Optional[str]) -> Optional[AutotuneResult]:
    """The decision recorded in ``workdir/autotune.json`` (a resumed run keeps its numerics).

    Args:
      workdir: the run directory (None: nothing recorded).

    Returns:
      The recorded [`AutotuneResult`][tfcustom.experiment.autotune.AutotuneResult], or None when there is no file;
      a damaged file is one clear error.

    Examples:
        >>> import tempfile
        >>> workdir = tempfile.mkdtemp()
        >>> load(workdir), load(None)
        (None, None)
        >>> save(AutotuneResult(False, "mixed_bfloat16"), workdir)
        >>> load(workdir).precision
        'mixed_bfloat16'
    """
    path = os.path.join(workdir, AUTOTUNE_FILE) if workdir else None
    if not path or not os.path.exists(path):
        return None
    result = _from_file(path, read_json(path, dict), "restore the file, or pass --overwrite to start the run over")
    logging.info("Autotune: reusing the run's decision jit_compile=%s, precision=%s (%s)", result.jit_compile, result.precision, path)
    return result


def load_from(path: str) -> AutotuneResult:
    """Another run's decision, to replay exactly (``--autotune_from``).

    Args:
      path: a run directory, its ``autotune.json``, or its ``results.json`` (its ``"autotune"`` entry).

    Returns:
      The [`AutotuneResult`][tfcustom.experiment.autotune.AutotuneResult], its reasons saying where it was replayed from.

    Examples:
        >>> import tempfile
        >>> run = tempfile.mkdtemp()
        >>> save(AutotuneResult(True, "float32", reasons={"jit_compile": "measured: ..."}), run)
        >>> replayed = load_from(run)
        >>> replayed.jit_compile, replayed.reasons["jit_compile"] == f"replayed from {os.path.join(run, AUTOTUNE_FILE)}"
        (True, True)
    """
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
    """Write ``result`` to ``workdir/autotune.json``, for a resumed run to read back with `load`.

    Args:
      result: the [`AutotuneResult`][tfcustom.experiment.autotune.AutotuneResult].
      workdir: the run directory.

    Examples:
        >>> import json, tempfile
        >>> workdir = tempfile.mkdtemp()
        >>> save(AutotuneResult(False, "float32"), workdir)
        >>> json.load(open(os.path.join(workdir, AUTOTUNE_FILE)))["precision"]
        'float32'
    """
    write_json(os.path.join(workdir, AUTOTUNE_FILE), result.to_dict())
