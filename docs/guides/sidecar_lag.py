"""Measure the sidecar's lag: seconds from a checkpoint written to its evaluation recorded.

    python docs/guides/sidecar_lag.py                         # mlp, full Fashion-MNIST, 2 epochs
    python docs/guides/sidecar_lag.py --model=cnn --epochs=1 --checkpoint_every_steps=100

Starts the trainer (examples/train.py) and the sidecar (examples/evaluate.py --watch)
at the same moment, as two terminals would, on a new run directory; when both have
stopped, prints each checkpoint's lag_s and eval_s from the run's sidecar.json, then
their median and maximum. lag_s = time the evaluation (and, for a new best, the export)
was done - mtime of the checkpoint's .index file; it includes up to --poll_seconds of
waiting. The trainer and the sidecar share the machine's cores: the figure is for this
machine as it was, not a benchmark.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint_every_steps", type=int, default=100)
    parser.add_argument("--poll_seconds", type=float, default=1.0)
    parser.add_argument("--output_dir", default=None, help="default: a new temporary directory")
    args = parser.parse_args()
    out = args.output_dir or os.path.join(tempfile.mkdtemp(prefix="sidecar_lag_"), "run")
    os.makedirs(out, exist_ok=True)  # the sidecar needs the directory; the trainer starts a fresh run in an empty one
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), CUDA_VISIBLE_DEVICES="")
    train = [sys.executable, os.path.join(ROOT, "examples", "train.py"), f"--model={args.model}", f"--epochs={args.epochs}",
             f"--checkpoint_every_steps={args.checkpoint_every_steps}", "--keep_checkpoints=1000", f"--output_dir={out}", "--verbose=0"]
    watch = [sys.executable, os.path.join(ROOT, "examples", "evaluate.py"), f"--watch={out}", "--split=validation",
             "--watch_metric=val_accuracy", f"--poll_seconds={args.poll_seconds}"]
    trainer = subprocess.Popen(train, env=env, stderr=subprocess.DEVNULL)
    sidecar = subprocess.Popen(watch, env=env)
    if trainer.wait() != 0 or sidecar.wait() != 0:
        sys.exit(f"error: the trainer or the sidecar failed (exit codes {trainer.returncode}, {sidecar.returncode})")
    with open(os.path.join(out, "sidecar.json")) as f:
        state = json.load(f)
    checkpoints, best, top = state["checkpoints"], set(), None
    for step in sorted(checkpoints, key=int):  # the steps that were a new best when evaluated (exported too)
        value = state["evaluations"][step]["val_accuracy"]
        if top is None or value > top:
            best.add(step)
            top = value
    lags = [checkpoints[s]["lag_s"] for s in sorted(checkpoints, key=int)]
    evals = [checkpoints[s]["eval_s"] for s in sorted(checkpoints, key=int)]
    for step in sorted(checkpoints, key=int):
        c = checkpoints[step]
        print(f"step {step}: lag_s={c['lag_s']:.2f} (waiting {c['lag_s'] - c['eval_s']:.2f}, evaluating{' and exporting' if step in best else ''} "
              f"{c['eval_s']:.2f})")
    print(f"{len(lags)} checkpoints ({args.model}, every {args.checkpoint_every_steps} steps, poll {args.poll_seconds:g} s, "
          f"{os.cpu_count()} CPUs): lag median {statistics.median(lags):.2f} s, max {max(lags):.2f} s; "
          f"evaluation median {statistics.median(evals):.2f} s; run in {out}")


if __name__ == "__main__":
    main()
