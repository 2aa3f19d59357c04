"""--learning_rate=find against the configs' hand-tuned learning rate: final test accuracy, 3 seeds.

    python benchmarks/lr_finder.py --epochs=4 --out=benchmarks/lr_finder.json

Each (config, seed) trains twice, interleaved: with the config's own
``--learning_rate`` and with ``--learning_rate=find``. XLA off and float32 for
both (autotune's timing-based choice would otherwise differ between the two),
so accuracy differences come from the learning rate alone.
"""

import argparse
import json
import os
import tempfile

from train_runs import train

CONFIGS = ("configs/fashion_mnist_cnn.flags", "configs/fashion_mnist_fast.flags")


def run(flagfile, seed, learning_rate, epochs, workdir):
    out = os.path.join(workdir, f"{os.path.basename(flagfile)}-{seed}-{learning_rate}")
    flags = [f"--flagfile={flagfile}", f"--seed={seed}", f"--epochs={epochs}", "--nojit_compile", "--precision=float32"]
    results = train(out, *flags, *(["--learning_rate=find"] if learning_rate == "find" else []))["results"]
    found = results["autotune"].get("finders", {}).get("learning_rate")
    return {"config": flagfile, "seed": seed, "variant": learning_rate, "learning_rate": found,
            "test_accuracy": results["test"]["accuracy"], "train_time_s": results["train_time_s"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/lr_finder.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for flagfile in CONFIGS:
            for seed in range(args.seeds):
                for variant in ("given", "find"):
                    rows.append(run(flagfile, seed, variant, args.epochs, workdir))
                    print(json.dumps(rows[-1]), flush=True)
    with open(args.out, "w") as f:
        json.dump({"epochs": args.epochs, "runs": rows}, f, indent=2)
    for flagfile in CONFIGS:
        for variant in ("given", "find"):
            acc = [r["test_accuracy"] for r in rows if r["config"] == flagfile and r["variant"] == variant]
            print(f"{flagfile} {variant}: mean {sum(acc) / len(acc):.4f} ({', '.join(f'{a:.4f}' for a in acc)})")


if __name__ == "__main__":
    main()
