"""TensorBoard summaries of a run, laid out as Keras' ``TensorBoard`` callback does.

``<logdir>/train`` and ``<logdir>/validation`` hold the curves (the two runs
overlay in TensorBoard), ``<logdir>/test`` the end-of-run results, and
``<logdir>`` itself the hyperparameters for the HParams dashboard:

* every ``log_every_steps`` steps, in ``train``: ``batch_<name>`` at the global
  step (running loss and metrics of the epoch, ``learning_rate``,
  ``gradient_norm`` before clipping, ``examples_per_second``, and
  ``replica_<i>_loss`` under several replicas);
* every epoch, at step ``epoch - 1`` (Keras' zero-based epoch):
  ``epoch_<name>`` in ``train`` (the history's train values,
  ``learning_rate``, ``time_s``, ``examples_per_second``,
  ``input_wait_share``) and in ``validation`` (its ``val_`` values);
* at the end, in ``test``: ``test_<name>`` and the confusion matrix image;
* ``eval_sidecar``: the sidecar evaluator's points (`tfcustom.experiment.sidecar`,
  ``tfcustom-evaluate --watch``), which it keeps itself: a fresh start and a resume leave them alone;
* at the start of a run: its config as text (``train``) and as hparams;
* optional: ``epoch_weights/<variable>`` histograms every
  ``histograms_every_epochs`` epochs, and a profiler trace of the steps
  ``profile_steps=(start, end)`` in ``train`` (TensorBoard's Profile tab;
  needs the ``tensorboard-plugin-profile`` package to view).

[`Summaries`][tfcustom.callbacks.summaries.Summaries] is the Trainer's built-in callback that writes them.
The writer is built by the caller ([`tfcustom.train_and_evaluate`][tfcustom.train_and_evaluate]; only
the chief of a cluster writes) and passed to the [`tfcustom.Trainer`][tfcustom.Trainer].
A resumed run first calls [`SummaryWriter.start`][tfcustom.callbacks.summaries.SummaryWriter.start] with the restored
position: points written after the checkpoint by the interrupted run are
removed from the event files, so every curve has one value per step.

Examples:
    >>> writer = SummaryWriter("runs/demo/tensorboard", log_every_steps=50)
    >>> writer.start(global_step=0, epochs_done=0, config={"model": "mlp"})
    >>> trainer = tfcustom.Trainer(model, loss, optimizer, summary_writer=writer)

then ``tensorboard --logdir runs``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfcustom.callbacks.loop_callback import LoopCallback, Step, learning_rate
from tfcustom.errors import check, check_positive_int
from tfcustom.disk_errors import writing

TRAIN, VALIDATION, TEST = "train", "validation", "test"
EVAL_SIDECAR = "eval_sidecar"  # written by the sidecar evaluator (tfcustom.experiment.sidecar), which keeps it itself


def _hparam_values(config: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Flatten a config to HParams values (bool/int/float/str), dotted keys for dicts."""
    out: Dict[str, Any] = {}
    for key, value in sorted(config.items()):
        if isinstance(value, dict):
            out.update(_hparam_values(value, f"{prefix}{key}."))
        elif value is None:
            continue
        elif isinstance(value, (bool, int, float, str)):
            out[prefix + key] = value
        else:
            out[prefix + key] = json.dumps(value)
    return out


def _keep(event, global_step: int, epochs_done: int) -> bool:
    """Whether an event written before a restore at (global_step, epochs_done) belongs to the resumed run."""
    if not event.HasField("summary"):
        return True  # file version, etc.
    if any(v.tag.startswith("epoch_") for v in event.summary.value):
        return event.step < epochs_done
    return event.step <= global_step


def _read_records(path: str):
    """The complete records of an event file, and whether its end was cut short
    (a write that failed on a full disk, or a crash): those complete records are kept."""
    records = []
    try:
        for r in tf.data.TFRecordDataset(path):
            records.append(bytes(r.numpy()))
    except tf.errors.DataLossError:
        return records, True
    return records, False


def _clear(logdir: str) -> None:
    """Delete ``logdir``'s content but the sidecar evaluator's (it may be watching this run from its start)."""
    for name in os.listdir(logdir) if os.path.isdir(logdir) else []:
        if name != EVAL_SIDECAR:
            path = os.path.join(logdir, name)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def discard_after(logdir: str, global_step: int, epochs_done: int) -> int:
    """Remove the summaries written after a checkpoint from ``logdir``'s event files.

    Keeps the step summaries up to ``global_step``, the epoch summaries of the
    ``epochs_done`` finished epochs, and deletes the ``test`` directory
    (end-of-run summaries are written again). Each file is rewritten to a
    temporary sibling and renamed over the original; a file whose last record
    was cut short (a full disk) keeps its complete records.

    Args:
      logdir: the run's TensorBoard directory.
      global_step: the checkpoint's global step: step summaries after it go.
      epochs_done: the checkpoint's finished epochs: epoch summaries of later epochs go.

    Returns:
      The number of events removed.

    Examples:
        >>> import tempfile
        >>> writer = SummaryWriter(os.path.join(tempfile.mkdtemp(), "tensorboard"), log_every_steps=1)
        >>> writer.start(global_step=0, epochs_done=0)
        >>> for step in range(1, 5):
        ...     writer.write_step(step, {"loss": 1.0 / step})
        >>> writer.write_epoch(1, {"epoch": 1, "loss": 0.6, "val_loss": 0.7})
        >>> writer.write_epoch(2, {"epoch": 2, "loss": 0.3, "val_loss": 0.4})
        >>> writer.close()
        >>> discard_after(writer.logdir, global_step=2, epochs_done=1)   # steps 3 and 4, epoch 2's train and val
        4
        >>> discard_after(writer.logdir, global_step=2, epochs_done=1)
        0
    """
    from tensorboard.compat.proto import event_pb2

    shutil.rmtree(os.path.join(logdir, TEST), ignore_errors=True)
    removed = 0
    for path in sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)):
        if os.path.relpath(path, logdir).split(os.sep)[0] == EVAL_SIDECAR:
            continue  # the sidecar's own (rewritten from its sidecar.json when it restarts)
        if path.endswith(".tmp"):
            os.remove(path)
            continue
        records, truncated = _read_records(path)
        kept = [r for r in records if _keep(event_pb2.Event.FromString(r), global_step, epochs_done)]
        if len(kept) == len(records) and not truncated:
            continue
        removed += len(records) - len(kept)
        with tf.io.TFRecordWriter(path + ".tmp") as writer:
            for r in kept:
                writer.write(r)
        os.replace(path + ".tmp", path)
    return removed


class SummaryWriter:
    """A run's TensorBoard event files (see the module docstring for the layout).

    Args:
      logdir: the run's TensorBoard directory (``<output_dir>/tensorboard``).
      log_every_steps: write the step summaries every this many train steps.
      histograms_every_epochs: weight histograms every this many epochs (0: never).
      profile_steps: ``(start, end)``: trace global steps start..end (1-based,
        inclusive) with the TensorFlow profiler; None: no trace.
      chief: False on the other workers of a cluster: they write nothing, but
        pass a writer to their Trainer all the same, so that every worker
        reads the (cross-worker) metric values at the same steps.

    Examples:
        >>> import tempfile
        >>> writer = SummaryWriter(os.path.join(tempfile.mkdtemp(), "tensorboard"), log_every_steps=2)
        >>> writer.start(global_step=0, epochs_done=0, config={"model": "mlp"})
        >>> [step for step in range(1, 6) if writer.due(step, steps_ran=1)]
        [2, 4]
        >>> writer.write_step(2, {"loss": 0.5})
        >>> writer.write_epoch(1, {"epoch": 1, "loss": 0.4, "val_loss": 0.45})
        >>> writer.close()
        >>> sorted(os.listdir(writer.logdir))[-2:]   # the hparams' events at the top, then the curves
        ['train', 'validation']
    """

    def __init__(self, logdir: str, log_every_steps: int = 100, *, histograms_every_epochs: int = 0,
                 profile_steps: Optional[Tuple[int, int]] = None, chief: bool = True):
        check(isinstance(logdir, str) and logdir, "logdir must be a non-empty path", logdir, "pass e.g. runs/demo/tensorboard")
        self.logdir = logdir
        self.log_every_steps = check_positive_int("log_every_steps", log_every_steps)
        check(isinstance(histograms_every_epochs, int) and histograms_every_epochs >= 0, "histograms_every_epochs must be an integer >= 0",
              histograms_every_epochs, "pass e.g. 1, or 0 for no histograms")
        self.histograms_every_epochs = histograms_every_epochs
        check(profile_steps is None or (len(profile_steps) == 2 and 1 <= profile_steps[0] <= profile_steps[1]),
              "profile_steps must be (start, end) with 1 <= start <= end", profile_steps, "pass e.g. (10, 20)")
        self.profile_steps = tuple(profile_steps) if profile_steps is not None else None
        self._profiling = False
        self.chief = bool(chief)
        self._writers: Dict[str, Any] = {}

    def _writer(self, name: str):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.logdir, name)) if self.chief else tf.summary.create_noop_writer()
        return self._writers[name]

    def _guard(self):
        """A full disk or an I/O error while writing events: one DiskError line, rewritten files' temporaries removed."""
        here = glob.escape(self.logdir)
        return writing("TensorBoard events", self.logdir, cleanup=lambda: glob.glob(os.path.join(here, "**", "*.tmp"), recursive=True))

    def _scalars(self, name: str, prefix: str, values: Dict[str, float], step: int) -> None:
        with self._guard(), self._writer(name).as_default(step=step):
            for key, value in values.items():
                tf.summary.scalar(prefix + key, float(value))

    def start(self, global_step: int, epochs_done: int, config: Optional[Dict[str, Any]] = None) -> None:
        """Begin writing: a new run (``global_step == 0``) clears ``logdir`` and
        writes ``config`` as text and hparams; a resumed run drops what was
        written after its checkpoint ([`discard_after`][tfcustom.callbacks.summaries.discard_after])."""
        self.close()
        if not self.chief:
            return
        if global_step == 0 and epochs_done == 0:
            _clear(self.logdir)
            if config is not None:
                self.write_config(config)
        else:
            with self._guard():
                discard_after(self.logdir, global_step, epochs_done)

    def write_config(self, config: Dict[str, Any]) -> None:
        from tensorboard.plugins.hparams import api as hp

        if not self.chief:
            return
        text = "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```"
        with self._guard(), self._writer(TRAIN).as_default(step=0):
            tf.summary.text("config", text)
        with self._guard(), self._writer("").as_default(step=0):
            hp.hparams(_hparam_values(config), trial_id=os.path.basename(os.path.dirname(os.path.abspath(self.logdir))))
        self.flush()

    def due(self, step: int, steps_ran: int) -> bool:
        """True when a multiple of ``log_every_steps`` lies in (step - steps_ran, step]."""
        return step // self.log_every_steps > (step - steps_ran) // self.log_every_steps

    def write_step(self, step: int, values: Dict[str, float]) -> None:
        """``batch_<name>`` scalars at the global ``step`` (in ``train``)."""
        self._scalars(TRAIN, "batch_", values, step)

    def write_epoch(self, epoch: int, logs: Dict[str, float], extra: Optional[Dict[str, float]] = None) -> None:
        """An epoch's history record (``epoch`` is 1-based, as in the history;
        written at step ``epoch - 1``): ``val_*`` values to ``validation``,
        the rest and ``extra`` to ``train``, as ``epoch_<name>``."""
        train = {k: v for k, v in logs.items() if k != "epoch" and not k.startswith("val_")}
        train.update(extra or {})
        self._scalars(TRAIN, "epoch_", train, epoch - 1)
        self._scalars(VALIDATION, "epoch_", {k[len("val_"):]: v for k, v in logs.items() if k.startswith("val_")}, epoch - 1)
        self.flush()

    def write_test(self, step: int, logs: Dict[str, float], confusion_png: Optional[bytes] = None) -> None:
        """End-of-run ``test_<name>`` scalars and the confusion matrix image (PNG bytes)."""
        self._scalars(TEST, "test_", logs, step)
        if confusion_png is not None:
            image = tf.io.decode_png(confusion_png, channels=4)[tf.newaxis]
            with self._guard(), self._writer(TEST).as_default(step=step):
                tf.summary.image("confusion_matrix", image)
        self.flush()

    def write_histograms(self, epoch: int, model) -> None:
        """``epoch_weights/<variable path>`` histograms at step ``epoch - 1``, every ``histograms_every_epochs`` epochs."""
        if not self.histograms_every_epochs or epoch % self.histograms_every_epochs or not self.chief:
            return
        with self._guard(), self._writer(TRAIN).as_default(step=epoch - 1):
            for v in model.weights:
                tf.summary.histogram("epoch_weights/" + (v.path if hasattr(v, "path") else v.name), tf.convert_to_tensor(v))

    def profile(self, steps_done: int, steps_next: int) -> None:
        """Called before each train-step call (``steps_done`` global steps done,
        ``steps_next`` about to run) and with ``steps_next=0`` after it: starts
        and stops the profiler around ``profile_steps`` (whole calls of
        ``steps_per_execution`` steps are traced)."""
        if self.profile_steps is None or not self.chief:
            return
        start, end = self.profile_steps
        if not self._profiling and steps_next and steps_done < start <= steps_done + steps_next:
            tf.profiler.experimental.start(os.path.join(self.logdir, TRAIN))
            self._profiling = True
        elif self._profiling and steps_done >= end:
            tf.profiler.experimental.stop()
            self._profiling = False
            self.profile_steps = None  # once per run

    def flush(self) -> None:
        with self._guard():
            for w in self._writers.values():
                w.flush()

    def close(self) -> None:
        if self._profiling:  # training ended inside profile_steps
            tf.profiler.experimental.stop()
            self._profiling = False
        writers, self._writers = self._writers, {}
        with self._guard():
            for w in writers.values():
                w.close()



class Summaries(LoopCallback):
    """Write a [`SummaryWriter`][tfcustom.callbacks.summaries.SummaryWriter]'s step and epoch summaries in the Trainer's loop.

    Built from ``Trainer(summary_writer=...)``: ``batch_<name>`` every
    ``writer.log_every_steps`` global steps (the running loss and metrics,
    ``learning_rate``, ``examples_per_second``, ``gradient_norm`` with
    clipping, ``replica_<i>_loss`` under several replicas), and the epoch's
    record, timing and weight histograms at each epoch's end. The profiler
    trace is `tfcustom.callbacks.profiling.Profiler`'s.

    To write other values, subclass it and pass an instance (with the writer) in ``fit(callbacks=[...])``: it
    replaces this one.

    Args:
      writer: the started ``SummaryWriter`` (None: nothing is written).
      timing: the loop's [`StepTiming`][tfcustom.callbacks.timing.StepTiming], whose timer gives the rates (None: none written).

    Examples:
        >>> Summaries(None).writer is None
        True
    """

    def __init__(self, writer: Optional[SummaryWriter] = None, timing=None):
        self.writer = writer
        self.timing = timing

    def on_step_end(self, step: Step) -> None:
        if self.writer is None or not self.writer.due(step.global_step, step.ran):
            return
        values = dict(step.logs)
        values["learning_rate"] = learning_rate(self.run.trainer.optimizer)
        if self.timing is not None and self.timing.timer is not None:
            values["examples_per_second"] = self.timing.timer.interval_rate()
        if "grad_norm" in step.out:
            values["gradient_norm"] = float(step.out["grad_norm"])
        shares = np.asarray(step.out["replica_losses"])
        if len(shares) > 1:
            values.update({f"replica_{i}_loss": float(v) for i, v in enumerate(shares)})
        self.writer.write_step(step.global_step, values)

    def on_epoch_end(self, epoch: int, record: Dict[str, float]) -> None:
        if self.writer is None:
            return
        timing = self.timing.timer.epoch_summary() if self.timing is not None and self.timing.timer is not None else {}
        self.writer.write_epoch(epoch + 1, record, {k: timing[k] for k in ("examples_per_second", "input_wait_share") if k in timing})
        self.writer.write_histograms(epoch + 1, self.run.trainer.model)
