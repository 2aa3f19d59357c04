"""The sidecar evaluator: evaluate each new checkpoint of a run as it is written.

[`evaluate_continuously`][tfcustom.experiment.sidecar.evaluate_continuously]
(``tfcustom-evaluate --watch=RUN_DIR``, ``python examples/evaluate.py
--watch=RUN_DIR``) runs beside a training run, in another process, on this
machine or any other that sees the run directory, and:

* evaluates every checkpoint the run's checkpoint index lists, oldest first,
  **exactly once**: a checkpoint counts once the index lists it
  (``tf.train.CheckpointManager`` writes the index only after the
  checkpoint's files), so a save still being written, or one killed halfway,
  is never read;
* writes ``<run_dir>/sidecar.json`` (atomically, after each checkpoint):
  ``evaluations`` maps the checkpoint's global step to its metrics, named
  as in the run's history (``val_`` / ``test_`` prefix of the split); plus
  per step its checkpoint, when it was written and evaluated (``lag_s``), the
  best step so far, and the checkpoints the trainer deleted before they
  could be evaluated (``skipped``; see ``--keep_checkpoints``);
* writes TensorBoard scalars to ``<run_dir>/tensorboard/eval_sidecar``:
  ``evaluation_<name>_vs_iterations`` at the checkpoint's global step, as
  Keras' ``TensorBoard`` callback names evaluations;
* keeps the model of the best checkpoint by ``metric`` (``mode`` ``"auto"``:
  min for a loss, max for accuracy-like names, as Keras does) exported in
  ``<run_dir>/sidecar_best/`` (``model.keras`` and ``saved_model/``, see
  [`export_model`][tfcustom.experiment.export.export_model]);
* resumes after its own restart (or SIGKILL) from ``sidecar.json``: what it
  lists is not evaluated again, and the TensorBoard points are written again
  from it;
* stops when the run's ``results.json`` appears (after evaluating the
  checkpoints listed by then, the last one included), or after ``timeout``
  seconds without a new checkpoint.

Its numbers are [`evaluate_run`][tfcustom.experiment.export.evaluate_run]'s
(``tfcustom-evaluate --checkpoint=ckpt-N``) on the same checkpoint.

Examples:
    >>> state = evaluate_continuously("runs/cnn", split="validation", metric="val_accuracy", timeout=600)
    >>> state["best"]["step"], state["evaluations"][str(state["best"]["step"])]["val_accuracy"]
    (1876, 0.9123)

See docs/guides/sidecar.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

from tfcustom.training.checkpoint import check_index, listed_checkpoints
from tfcustom.callbacks.early_stopping import auto_mode
from tfcustom.errors import TfcustomError, check, check_one_of
from tfcustom.run_json import read_json, write_json
from tfcustom.experiment.export import export_model
from tfcustom.experiment.run_dir import RunEvaluation, restore_checkpoint
from tfcustom.experiment.run_files import CHECKPOINT_DIR, CONFIG_FILE, RESULTS_FILE, SPLITS
from tfcustom.callbacks.summaries import EVAL_SIDECAR

__all__ = ["evaluate_continuously", "SIDECAR_FILE", "BEST_MODEL_DIR", "split_prefix"]

SIDECAR_FILE = "sidecar.json"
BEST_MODEL_DIR = "sidecar_best"
TENSORBOARD_DIR = os.path.join("tensorboard", EVAL_SIDECAR)
_PREFIX = {"test": "test_", "validation": "val_", "train": ""}
_GLOBAL_STEP = "global_step/.ATTRIBUTES/VARIABLE_VALUE"
_START_OVER = f"delete {SIDECAR_FILE} (and {BEST_MODEL_DIR}/) to evaluate the run again from its first checkpoint"


def split_prefix(split: str) -> str:
    """The prefix of the sidecar's metric names on a split, as in the run's history.

    Args:
      split: ``"test"``, ``"validation"`` or ``"train"``.

    Returns:
      ``"test_"``, ``"val_"`` or ``""``.

    Examples:
        >>> split_prefix("validation") + "accuracy"
        'val_accuracy'
    """
    check_one_of("split", split, SPLITS)
    return _PREFIX[split]


def _new_state(split: str, metric: str, mode: str) -> Dict[str, Any]:
    return {"split": split, "metric": metric, "mode": mode, "evaluations": {}, "checkpoints": {}, "skipped": [],
            "best": None, "stopped": None}


def _load_state(path: str, split: str, metric: str, mode: str) -> Dict[str, Any]:
    """The state of an earlier sidecar of this run (``sidecar.json``), or a new one."""
    if not os.path.exists(path):
        return _new_state(split, metric, mode)
    state = read_json(path, dict, _START_OVER)
    for key, value in (("split", split), ("metric", metric), ("mode", mode)):
        check(state.get(key) == value, f"{SIDECAR_FILE} was written by a sidecar with another {key} ({state.get(key)!r})", value,
              f"pass the same {key} to resume it, or {_START_OVER}")
    state["stopped"] = None
    return state


def _written_at(path: str) -> float:
    """When the checkpoint at ``path`` was written: the time of its ``.index`` file (its last data file)."""
    try:
        return os.path.getmtime(path + ".index")
    except OSError:
        return time.time()


def _global_step(path: str, name: str) -> int:
    """The checkpoint's global step (tfcustom numbers its checkpoints by it, so ``N`` of ``ckpt-N`` otherwise)."""
    try:
        reader = tf.train.load_checkpoint(path)
        if reader.has_tensor(_GLOBAL_STEP):
            return int(reader.get_tensor(_GLOBAL_STEP))
    except (tf.errors.OpError, ValueError):
        pass
    return int(name.split("-")[1])


class _Tensorboard:
    """``evaluation_<name>_vs_iterations`` scalars in ``<run_dir>/tensorboard/eval_sidecar``, a view of sidecar.json."""

    def __init__(self, run_dir: str, prefix: str):
        self.logdir, self.prefix = os.path.join(run_dir, TENSORBOARD_DIR), prefix
        self._writer = None

    def rewrite(self, evaluations: Dict[str, Dict[str, float]]) -> None:
        """Start over from ``evaluations`` (a restart drops a point written after the last sidecar.json)."""
        shutil.rmtree(self.logdir, ignore_errors=True)
        for step in sorted(evaluations, key=int):
            self.write(int(step), evaluations[step], flush=False)
        if self._writer is not None:
            self._writer.flush()

    def write(self, step: int, metrics: Dict[str, float], flush: bool = True) -> None:
        if self._writer is None:  # created with the first point, once the run has started its own summaries
            self._writer = tf.summary.create_file_writer(self.logdir)
        with self._writer.as_default(step=step):
            for key, value in metrics.items():
                name = key[len(self.prefix):] if self.prefix and key.startswith(self.prefix) else key
                tf.summary.scalar(f"evaluation_{name}_vs_iterations", float(value))
        if flush:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _check_arguments(run_dir, split, metric, mode, timeout, poll_seconds) -> None:
    check(isinstance(run_dir, (str, os.PathLike)) and os.path.isdir(run_dir), "run directory does not exist", run_dir,
          "pass the --output_dir of a training run (it exists once the run has started)")
    check_one_of("split", split, SPLITS)
    check(metric is None or (isinstance(metric, str) and metric), "metric must be a metric name such as val_accuracy", metric,
          "pass e.g. metric='val_accuracy' (--watch_metric=val_accuracy), or None for the split's loss")
    check_one_of("mode", mode, ("auto", "min", "max"))
    check(timeout is None or (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0),
          "timeout must be a number of seconds > 0, or None to wait for results.json", timeout, "pass e.g. --timeout=600")
    check(isinstance(poll_seconds, (int, float)) and not isinstance(poll_seconds, bool) and poll_seconds > 0,
          "poll_seconds must be a number of seconds > 0", poll_seconds, "pass e.g. poll_seconds=1")


class _Sidecar:
    """One sidecar's run: its evaluation, model, state and outputs (see the module docstring)."""

    def __init__(self, run_dir: str, evaluation, state: Dict[str, Any], export_best: bool, say: Callable[[str], None]):
        self.run_dir, self.evaluation, self.state, self.export_best, self.say = run_dir, evaluation, state, export_best, say
        self.prefix = split_prefix(state["split"])
        self.model = evaluation.build_model()
        evaluation.evaluate(self.model)  # traces the evaluation now, not when the first checkpoint is waiting
        self.done = {c["checkpoint"] for c in state["checkpoints"].values()} | set(state["skipped"])
        self.tensorboard = _Tensorboard(run_dir, self.prefix)
        self.tensorboard.rewrite(state["evaluations"])

    def pending(self, directory: str) -> list:
        check_index(directory)
        return [n for n in listed_checkpoints(directory) if n not in self.done]

    def _improves(self, value: float) -> bool:
        best = self.state["best"]
        if best is None:
            return True
        return value < best["value"] if self.state["mode"] == "min" else value > best["value"]

    def _restore(self, path: str, name: str) -> bool:
        """Restore ``path`` into the model; False when the trainer deleted it first (then it is skipped)."""
        try:
            restore_checkpoint(self.model, path)
            return True
        except TfcustomError:
            if os.path.exists(path + ".index") and name in listed_checkpoints(os.path.dirname(path)):
                raise
        print(f"warning: {name} was deleted by the trainer (--keep_checkpoints) before the sidecar could evaluate it; "
              "pass a larger --keep_checkpoints to the trainer to evaluate every checkpoint", file=sys.stderr, flush=True)
        self.state["skipped"].append(name)
        self.done.add(name)
        write_json(os.path.join(self.run_dir, SIDECAR_FILE), self.state)
        return False

    def evaluate(self, directory: str, name: str) -> None:
        """Evaluate checkpoint ``name`` once; then sidecar.json, TensorBoard and (a new best) the export."""
        path = os.path.join(directory, name)
        written, started = _written_at(path), time.time()
        step = _global_step(path, name)
        if not self._restore(path, name):
            return
        logs = self.evaluation.evaluate(self.model)
        examples = logs.pop("examples")
        metrics = {self.prefix + k: v for k, v in logs.items()}
        value = metrics[self.state["metric"]]
        best = self._improves(value)
        if best and self.export_best:  # before sidecar.json: a restart re-evaluates this checkpoint and exports it again
            export_model(self.model, os.path.join(self.run_dir, BEST_MODEL_DIR), overwrite=True, input_shape=self.evaluation.dataset.input_shape)
        evaluated = time.time()
        self.state["evaluations"][str(step)] = metrics
        self.state["checkpoints"][str(step)] = {"checkpoint": name, "examples": examples, "written_at": written, "evaluated_at": evaluated,
                                                "lag_s": round(evaluated - written, 3), "eval_s": round(evaluated - started, 3)}
        if best:
            self.state["best"] = {"step": step, "checkpoint": name, "value": value,
                                  "export_dir": BEST_MODEL_DIR if self.export_best else None}
        write_json(os.path.join(self.run_dir, SIDECAR_FILE), self.state)  # the commit point: evaluated once
        self.done.add(name)
        self.tensorboard.write(step, metrics)
        values = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        self.say(f"step {step} ({name}): {values}  lag {evaluated - written:.1f} s{'  (best)' if best else ''}")


def _wait_for_config(run_dir: str, timeout: Optional[float], poll_seconds: float) -> bool:
    """Wait until the run has written its config.json; False after ``timeout`` s."""
    start = time.monotonic()
    while not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
        if timeout is not None and time.monotonic() - start > timeout:
            return False
        time.sleep(poll_seconds)
    return True


def evaluate_continuously(run_dir: str, *, split: str = "test", metric: Optional[str] = None, mode: str = "auto",
                          data_dir: Optional[str] = None, timeout: Optional[float] = None, poll_seconds: float = 1.0,
                          export_best: bool = True, dataset=None, verbose: int = 1) -> Dict[str, Any]:
    """Evaluate each new checkpoint of ``run_dir`` once, until the run finishes (see the module docstring).

    Args:
      run_dir: a training run's ``--output_dir`` (running or finished; it must exist).
      split: ``"test"``, ``"validation"`` or ``"train"``, as [`evaluate_run`][tfcustom.experiment.export.evaluate_run].
      metric: the metric that picks the best checkpoint, named with the
        split's prefix (``"val_accuracy"`` on ``"validation"``,
        ``"test_loss"`` on ``"test"``); default: the split's loss.
      mode: ``"min"``, ``"max"`` or ``"auto"`` (from the name, as Keras).
      data_dir: the data directory (default: the run's).
      timeout: stop after this many seconds without a new checkpoint (or
        before the run's config.json appears); None: wait for results.json.
      poll_seconds: how often to look at the checkpoint index.
      export_best: keep the best checkpoint's model in ``<run_dir>/sidecar_best/``.
      dataset: an in-memory [`tfcustom.data.Dataset`][tfcustom.data.Dataset] instead of the run's.
      verbose: 1 prints one line per evaluated checkpoint, 0 nothing.

    Returns:
      The state written to ``<run_dir>/sidecar.json``; ``"stopped"`` says why
      it ended (``"results.json"`` or ``"timeout"``).

    Raises:
      ConfigError: a bad argument, a missing run directory, a metric the run
        does not compute, or a sidecar.json of another split / metric.

    Examples:
        >>> evaluate_continuously("runs/no_such_run", timeout=60)
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: run directory does not exist (received: 'runs/no_such_run'). Pass the --output_dir of a training run ...

    A sidecar beside a run, keeping its best checkpoint by validation accuracy
    (``tfcustom-evaluate --watch=runs/cnn --split=validation --watch_metric=val_accuracy``)::

        state = evaluate_continuously("runs/cnn", split="validation", metric="val_accuracy")
        state["best"]  # {"step": ..., "checkpoint": "ckpt-...", "value": ..., "export_dir": "sidecar_best"}
    """
    _check_arguments(run_dir, split, metric, mode, timeout, poll_seconds)
    run_dir = os.fspath(run_dir)
    metric = metric or split_prefix(split) + "loss"
    mode = auto_mode(metric) if mode == "auto" else mode
    state_path = os.path.join(run_dir, SIDECAR_FILE)
    state = _load_state(state_path, split, metric, mode)
    if not _wait_for_config(run_dir, timeout, poll_seconds):
        state["stopped"] = "timeout"
        return state
    evaluation = RunEvaluation(run_dir, data_dir, split, dataset=dataset)
    names = [split_prefix(split) + n for n in evaluation.metric_names()]
    check(metric in names, f"the run computes no metric {metric!r} on the {split} split", metric,
          f"pass one of {names}" + ("" if split == "validation" else " (val_ names need split='validation', --split=validation)"))
    sidecar = _Sidecar(run_dir, evaluation, state, export_best, (lambda line: print(line, flush=True)) if verbose else (lambda line: None))
    directory, last_new = os.path.join(run_dir, CHECKPOINT_DIR), time.monotonic()
    try:
        while True:
            finished = os.path.exists(os.path.join(run_dir, RESULTS_FILE))  # before listing: the index then holds the last checkpoint
            pending = sidecar.pending(directory)
            for name in pending:
                sidecar.evaluate(directory, name)
            if pending:
                last_new = time.monotonic()
            if finished or (timeout is not None and time.monotonic() - last_new > timeout):
                state["stopped"] = "results.json" if finished else "timeout"
                write_json(state_path, state)
                return state
            time.sleep(poll_seconds)
    finally:
        sidecar.tensorboard.close()
