"""Does weight averaging help? Test accuracy without averaging, with EMA and with SWA: the fast config, 3 seeds.

    python benchmarks/weight_averaging.py --out=benchmarks/weight_averaging.json
    python benchmarks/weight_averaging.py --config=configs/fashion_mnist_best.flags --swa_start_epoch=...  # another config

Per seed, two runs of the config (XLA off, float32 for both, so the only difference is the averaging):

* ``--ema_decay`` (default 0.999): EMA changes nothing in training, so its run's *raw* test accuracy is the
  accuracy **without averaging** (``results.json`` ``weight_averaging.raw``), and ``averaged`` the EMA model's;
* ``--swa_start_epoch`` / ``--swa_lr`` (default: the last 3 epochs of the fast config's 8, at 5e-4, about
  the cosine schedule's rate at epoch 6 of 8 for its peak of 2e-3): ``raw`` is the last epoch's weights
  trained at the SWA rate, ``averaged`` the SWA model's.

With ``--baseline`` each seed also trains once without averaging (a check that it equals EMA's raw accuracy).
Both averaged models have their BatchNorm statistics recomputed (one pass over the training data).
Writes every run and the per-variant means to ``--out``; run it on a quiet machine (the file also records
``train_time_s``).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, seed, variant, workdir):
    out = os.path.join(workdir, f"{variant}-{seed}")
    cmd = [sys.executable, "-m", "tfcustom.cli.train", f"--flagfile={args.config}", f"--seed={seed}", f"--output_dir={out}",
           "--nojit_compile", "--precision=float32", "--verbose=0", "--overwrite", "--notensorboard"]
    if variant == "ema":
        cmd.append(f"--ema_decay={args.ema_decay}")
    elif variant == "swa":
        cmd += [f"--swa_start_epoch={args.swa_start_epoch}", f"--swa_lr={args.swa_lr}"]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    averaging = results.get("weight_averaging") or {}
    return {"seed": seed, "variant": variant, "test_accuracy": results["test"]["accuracy"],
            "raw_test_accuracy": (averaging.get("raw") or results["test"])["accuracy"],
            "averaged_test_accuracy": (averaging.get("averaged") or {}).get("accuracy"),
            "num_averaged": averaging.get("num_averaged"), "train_time_s": results["train_time_s"]}


def summary(rows):
    def mean(values):
        values = [v for v in values if v is not None]
        return {"mean": statistics.mean(values), "per_seed": values} if values else None

    by = lambda variant: [r for r in rows if r["variant"] == variant]  # noqa: E731
    out = {"without_averaging (EMA run's raw weights)": mean([r["raw_test_accuracy"] for r in by("ema")]),
           "ema": mean([r["averaged_test_accuracy"] for r in by("ema")]),
           "swa_raw (last epoch, trained at swa_lr)": mean([r["raw_test_accuracy"] for r in by("swa")]),
           "swa": mean([r["averaged_test_accuracy"] for r in by("swa")])}
    if by("none"):
        out["without_averaging (own run)"] = mean([r["test_accuracy"] for r in by("none")])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fashion_mnist_fast.flags")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ema_decay", type=float, default=0.999)
    parser.add_argument("--swa_start_epoch", type=int, default=6)
    parser.add_argument("--swa_lr", type=float, default=5e-4)
    parser.add_argument("--baseline", action="store_true", help="also train each seed once without averaging")
    parser.add_argument("--out", default="benchmarks/weight_averaging.json")
    args = parser.parse_args()
    variants = ("none", "ema", "swa") if args.baseline else ("ema", "swa")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in range(args.seeds):
            for variant in variants:  # interleaved: a drift of the machine touches every variant alike
                rows.append(run(args, seed, variant, workdir))
                print(json.dumps(rows[-1]), flush=True)
    result = {"config": args.config, "ema_decay": args.ema_decay, "swa_start_epoch": args.swa_start_epoch,
              "swa_lr": args.swa_lr, "runs": rows, "test_accuracy": summary(rows)}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    for name, values in result["test_accuracy"].items():
        if values:
            print(f"{name}: mean {values['mean']:.4f} ({', '.join(f'{a:.4f}' for a in values['per_seed'])})")


if __name__ == "__main__":
    main()
