"""Evaluate a training run's model on a split, without training (``tfcustom-evaluate``).

    python examples/evaluate.py --run_dir=runs/cnn                      # model.keras, test split
    python examples/evaluate.py --run_dir=runs/cnn --checkpoint=best   # <run_dir>/checkpoints/best
    python examples/evaluate.py --run_dir=runs/cnn --checkpoint=latest --split=validation
    python examples/evaluate.py --run_dir=runs/cnn --pictures          # redraw the run's pictures
    python examples/evaluate.py --watch=runs/cnn --timeout=600         # the sidecar: each new checkpoint once

``--checkpoint``: ``final`` (the run's ``model.keras``), ``latest`` (the newest
checkpoint in ``<run_dir>/checkpoints``), ``best`` (``<run_dir>/checkpoints/best``)
or ``ckpt-N``; for checkpoints the model is rebuilt from ``<run_dir>/config.json``.
The flags are in tfcustom/cli/evaluate.py; the logic is
:func:`tfcustom.experiment.export.evaluate_run` and, with ``--watch``,
:func:`tfcustom.experiment.sidecar.evaluate_continuously`.

Prints the loss and metrics. Exit codes: 0 done, 2 bad flags / run directory /
checkpoint / data (one ``error:`` line on stderr).
"""

from tfcustom.cli.evaluate import run

if __name__ == "__main__":
    run()
