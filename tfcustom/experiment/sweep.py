"""A sweep: one [`tfcustom.train_and_evaluate`][tfcustom.train_and_evaluate] run per combination of settings.

The grid maps config fields to lists of values. Dotted keys reach into dict
fields, e.g. ``"model_kwargs.dropout"``. A dict grid is expanded to every
combination (in key order); a list of dicts gives the runs one by one. Each
run trains in its own subdirectory of ``output_dir``, named after its
settings, so the sweep is resumable: finished runs (``results.json``) are
skipped, an interrupted one resumes from its checkpoint. At the end the sweep
writes ``sweep.csv`` (one row per run) and ``sweep.png`` (validation curves of
every run; test accuracy against training time with the Pareto front).
Every run's TensorBoard summaries are under ``output_dir``:
``tensorboard --logdir <output_dir>`` compares them.

Examples:
    >>> base = TrainConfig(model="mlp", epochs=2)
    >>> rows = run_sweep(base, {"model_kwargs.hidden_units": [[64], [128, 64]], "learning_rate": [1e-3, 3e-3]}, "runs/sweep")
    >>> [r["test_accuracy"] for r in rows]
    [0.84, 0.85, 0.83, 0.85]
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Union

from absl import logging

from tfcustom.experiment.config import TrainConfig
from tfcustom.errors import check, config_error
from tfcustom.experiment.export import CONFIG_FILE, RESULTS_FILE
from tfcustom.experiment.train import train_and_evaluate
from tfcustom.run_json import read_json

CSV_FILE = "sweep.csv"
PLOT_FILE = "sweep.png"

Grid = Union[Dict[str, Sequence[Any]], Sequence[Dict[str, Any]]]


def expand_grid(grid: Grid) -> List[Dict[str, Any]]:
    """The runs' settings: every combination of a dict of lists, or a list of dicts as given.

    Args:
      grid: ``{field: [values]}`` (every combination, in key order) or ``[{field: value}, ...]`` (one run each).

    Returns:
      One ``{field: value}`` dict per run.

    Examples:
        >>> expand_grid({"model": ["mlp", "cnn"], "learning_rate": [1e-3, 3e-3]})   # doctest: +NORMALIZE_WHITESPACE
        [{'model': 'mlp', 'learning_rate': 0.001}, {'model': 'mlp', 'learning_rate': 0.003},
         {'model': 'cnn', 'learning_rate': 0.001}, {'model': 'cnn', 'learning_rate': 0.003}]
        >>> expand_grid([{"model": "mlp"}, {"model": "cnn", "epochs": 3}])
        [{'model': 'mlp'}, {'model': 'cnn', 'epochs': 3}]
    """
    if isinstance(grid, dict):
        check(grid, "the grid is empty", grid, 'pass e.g. {"learning_rate": [1e-3, 3e-3]}')
        for key, values in grid.items():
            check(isinstance(values, list) and values, "each grid entry must be a non-empty list of values", {key: values},
                  f'pass e.g. {{"{key}": [value1, value2]}}')
        return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    check(isinstance(grid, (list, tuple)) and grid and all(isinstance(g, dict) for g in grid),
          "the grid must be a JSON object of lists or a non-empty list of objects", grid, 'pass e.g. {"model": ["mlp", "cnn"]}')
    return [dict(g) for g in grid]


def apply_settings(base: TrainConfig, settings: Dict[str, Any]) -> TrainConfig:
    """``base`` with ``settings`` applied (dotted keys set entries of dict fields); validated.

    Args:
      base: the sweep's base config.
      settings: one run's ``{field or "field.key": value}``.

    Returns:
      A new, validated `tfcustom.TrainConfig`; ``base`` is unchanged.

    Examples:
        >>> base = TrainConfig(model="mlp", model_kwargs={"dropout": 0.1})
        >>> config = apply_settings(base, {"model_kwargs.hidden_units": [64], "learning_rate": 0.01})
        >>> config.model_kwargs, config.learning_rate, base.model_kwargs
        ({'dropout': 0.1, 'hidden_units': [64]}, 0.01, {'dropout': 0.1})
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    changes: Dict[str, Any] = {}
    for key, value in settings.items():
        name, _, sub = key.partition(".")
        check(name in fields, "unknown config field in the grid", key, f"use TrainConfig fields ({', '.join(sorted(fields))}), dotted for model_kwargs")
        if sub:
            current = changes.get(name, getattr(base, name))
            check(isinstance(current, dict), "a dotted grid key needs a dict field", key, "use e.g. model_kwargs.dropout")
            changes[name] = {**current, sub: value}
        else:
            changes[name] = tuple(value) if name == "metrics" else value
    return base.replace(**changes).validate()


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_format(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run_name(settings: Dict[str, Any]) -> str:
    """A directory name from the settings, e.g. ``model=mlp,hidden_units=128x64,learning_rate=0.001``.

    Args:
      settings: one run's settings; a dotted key is shortened to its last part when that is unique.

    Returns:
      ``key=value`` pairs joined by commas, characters unsafe in a file name replaced by ``_``.

    Examples:
        >>> run_name({"model": "mlp", "model_kwargs.hidden_units": [128, 64], "learning_rate": 1e-3})
        'model=mlp,hidden_units=128x64,learning_rate=0.001'
        >>> run_name({"dataset": "tfds:cifar10"})
        'dataset=tfds_cifar10'
    """
    shorts = [k.rsplit(".", 1)[-1] for k in settings]
    keys = [s if shorts.count(s) == 1 else k for s, k in zip(shorts, settings)]
    name = ",".join(f"{k}={_format(v)}" for k, v in zip(keys, settings.values()))
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name) or "run"


def _row(name: str, settings: Dict[str, Any], results: Dict[str, Any]) -> Dict[str, Any]:
    history = results["history"]
    val = [r["val_accuracy"] for r in history if "val_accuracy" in r]
    return {
        "run": name,
        **{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in settings.items()},
        "parameters": results.get("parameters"),
        "best_val_accuracy": max(val) if val else None,
        "test_accuracy": results["test"].get("accuracy"),
        "test_loss": results["test"]["loss"],
        "epochs_run": results["epochs_run"],
        "train_time_s": sum(r.get("time_s", 0.0) for r in history),  # survives a resume, unlike one process' clock
    }


def _read_finished(run_dir: str, config: TrainConfig) -> Optional[Dict[str, Any]]:
    if not os.path.exists(os.path.join(run_dir, RESULTS_FILE)):
        return None
    diff = TrainConfig.read(os.path.join(run_dir, CONFIG_FILE)).differences(config)
    if diff:
        raise config_error(f"a finished run in the sweep directory has other settings ({', '.join(diff)})", run_dir,
                           "use a new --output_dir for a changed sweep, or delete that run")
    return read_json(os.path.join(run_dir, RESULTS_FILE), dict, "delete that run's results.json to test and export it again, or delete the run")


def run_sweep(base_config: TrainConfig, grid: Grid, output_dir: str, *, strategy=None, dataset=None) -> List[Dict[str, Any]]:
    """Train every run of ``grid`` (settings over ``base_config``) under
    ``output_dir``; skip finished runs; write ``sweep.csv`` and ``sweep.png``.

    Every combination is validated before the first run trains. An
    interruption ([`tfcustom.distribute.preemption.TrainingInterrupted`][tfcustom.distribute.preemption.TrainingInterrupted]) leaves
    the finished runs and the interrupted run's checkpoint: call again to
    finish.

    Args:
      base_config: the settings every run starts from.
      grid: the runs (see `expand_grid`; dotted keys as in `apply_settings`).
      output_dir: one subdirectory per run (named by `run_name`), and ``sweep.csv``, ``sweep.png``.
      strategy: passed to each run's `tfcustom.train_and_evaluate`.
      dataset: passed to each run's `tfcustom.train_and_evaluate` (default: the config's).

    Returns:
      The rows of ``sweep.csv``: one dict per run (its name, settings, parameters,
      best validation and test accuracy, test loss, epochs run, training time).

    Examples:
        >>> import tempfile
        >>> out, base = tempfile.mkdtemp(), TrainConfig(model="mlp", epochs=1)
        >>> run = os.path.join(out, run_name({"learning_rate": 0.01}))   # a run finished before:
        >>> os.makedirs(run)
        >>> _ = open(os.path.join(run, CONFIG_FILE), "w").write(apply_settings(base, {"learning_rate": 0.01}).to_json())
        >>> results = {"history": [{"epoch": 1, "val_accuracy": 0.8, "time_s": 2.0}], "test": {"loss": 0.5, "accuracy": 0.79},
        ...            "epochs_run": 1}
        >>> _ = open(os.path.join(run, RESULTS_FILE), "w").write(json.dumps(results))
        >>> rows = run_sweep(base, {"learning_rate": [0.01]}, out)   # read back, not trained again
        >>> rows[0]["run"], rows[0]["best_val_accuracy"], rows[0]["test_accuracy"], rows[0]["train_time_s"]
        ('learning_rate=0.01', 0.8, 0.79, 2.0)
        >>> sorted(os.listdir(out))
        ['learning_rate=0.01', 'sweep.csv', 'sweep.png']
    """
    runs = [(run_name(s), s, apply_settings(base_config, s)) for s in expand_grid(grid)]
    names = [name for name, _, _ in runs]
    check(len(set(names)) == len(names), "the grid has repeated runs", [n for n in names if names.count(n) > 1], "list each combination once")
    os.makedirs(output_dir, exist_ok=True)
    rows = []
    for i, (name, settings, config) in enumerate(runs):
        run_dir = os.path.join(output_dir, name)
        results = _read_finished(run_dir, config)
        if results is not None:
            logging.info("sweep run %d/%d %s: finished before, skipped", i + 1, len(runs), name)
        else:
            logging.info("sweep run %d/%d %s", i + 1, len(runs), name)
            results = train_and_evaluate(config, run_dir, strategy=strategy, dataset=dataset)
        rows.append(_row(name, settings, results))
        rows[-1]["history"] = results["history"]
    write_csv([{k: v for k, v in r.items() if k != "history"} for r in rows], os.path.join(output_dir, CSV_FILE))
    plot_sweep(rows, os.path.join(output_dir, PLOT_FILE))
    for r in rows:
        r.pop("history")
    return rows


def write_csv(rows: List[Dict[str, Any]], path: str) -> None:
    """Write ``rows`` as a CSV file (atomically: a ``.tmp`` file, then renamed).

    Args:
      rows: one dict per row; the columns are every key, in order of first appearance.
      path: the file to write (replaced if it exists).

    Examples:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), CSV_FILE)
        >>> write_csv([{"run": "a", "test_accuracy": 0.9}, {"run": "b", "epochs_run": 2}], path)
        >>> open(path).read().splitlines()
        ['run,test_accuracy,epochs_run', 'a,0.9,', 'b,,2']
    """
    keys: List[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)


def pareto_front(points: Sequence[tuple]) -> List[int]:
    """Indices of the (time, accuracy) points no other point beats: none is at
    least as fast and as accurate, and better in one. Sorted by time.

    Args:
      points: ``(training time, accuracy)`` pairs.

    Returns:
      The indices of the points on the front, fastest first.

    Examples:
        >>> pareto_front([(10, 0.90), (5, 0.85), (12, 0.89), (20, 0.93), (5, 0.80)])   # 2 and 4 are beaten
        [1, 0, 3]
    """
    front = [i for i, (t, a) in enumerate(points)
             if not any(t2 <= t and a2 >= a and (t2 < t or a2 > a) for t2, a2 in points)]
    return sorted(front, key=lambda i: points[i][0])


def plot_sweep(rows: List[Dict[str, Any]], path: Optional[str] = None):
    """Validation accuracy per epoch of every run (left), and test accuracy
    against training time with the Pareto front (right).

    Args:
      rows: `run_sweep`'s rows, each with its ``history`` (the epochs' logs) too.
      path: where to write the PNG too (None: nowhere).

    Returns:
      The ``matplotlib.figure.Figure``.

    Examples:
        >>> rows = [{"run": f"lr={lr}", "train_time_s": t, "test_accuracy": a,
        ...          "history": [{"epoch": 1, "val_accuracy": a - 0.05}, {"epoch": 2, "val_accuracy": a}]}
        ...         for lr, t, a in ((0.1, 10.0, 0.9), (0.01, 12.0, 0.85))]
        >>> fig = plot_sweep(rows)
        >>> [ax.get_title() for ax in fig.axes]
        ['val accuracy of every run', 'accuracy vs training time']
    """
    from tfcustom.experiment.plots import _figure, _save

    fig = _figure(13, 5)
    curves, scatter = fig.subplots(1, 2)
    key = "val_accuracy" if any("val_accuracy" in r for row in rows for r in row["history"]) else "accuracy"
    for row in rows:
        h = row["history"]
        curves.plot([r["epoch"] for r in h], [r.get(key) for r in h], "o-", ms=3, label=row["run"])
    curves.set_xlabel("epoch")
    curves.xaxis.get_major_locator().set_params(integer=True)
    curves.set_ylabel(key.replace("_", " "))
    curves.set_title(f"{key.replace('_', ' ')} of every run")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=6, loc="lower right")
    points = [(r["train_time_s"], r["test_accuracy"] if r["test_accuracy"] is not None else float("nan")) for r in rows]
    scatter.scatter([p[0] for p in points], [p[1] for p in points], c="tab:blue")
    front = pareto_front(points)
    scatter.plot([points[i][0] for i in front], [points[i][1] for i in front], "r-o", label="Pareto front (faster or better)")
    for i, row in enumerate(rows):
        scatter.annotate(row["run"], points[i], fontsize=6, xytext=(3, 3), textcoords="offset points", color="red" if i in front else "black")
    scatter.set_xlabel("training time (s)")
    scatter.set_ylabel("test accuracy")
    scatter.set_title("accuracy vs training time")
    scatter.grid(alpha=0.3)
    scatter.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path)
