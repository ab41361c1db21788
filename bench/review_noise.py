"""How well ``imageclf review`` finds labels flipped on purpose, and what excluding its findings gives.

    python -m bench.review_noise [--data ../shared/data/mnist_digits_trainval.npz] [--out /tmp/review_bench]

Flips ``--noise`` (5 %) of the training labels of an MNIST-style npz to another class (seeded),
reviews the noisy training split (``imageclf review``, mnist-basic, K folds), and reports the
share of the flipped images in the review's top 10 %, its wall time, and the validation
accuracy against the clean validation labels of three models: trained on the noisy labels,
on the noisy labels with ``--exclude review.csv``, and on the clean labels. Every step is an
``imageclf`` command, printed as it runs; the figures go to ``OUT/review_bench.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def run(cmd: list[str]) -> float:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    ap.add_argument("--data", default=str(shared / "mnist_digits_trainval.npz"))
    ap.add_argument("--out", default="/tmp/review_bench")
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--recipe", default="mnist-basic")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = np.load(args.data)
    x, y = src["train_images"], src["train_labels"].reshape(-1).astype(np.int64)
    rng = np.random.default_rng(args.seed)
    flipped = np.sort(rng.choice(len(y), int(round(args.noise * len(y))), replace=False))
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10  # always another digit
    # Named mnist_* so that the digits are the class names; the review sees the training split only.
    np.savez(out / "mnist_noisy_train.npz", train_images=x, train_labels=noisy)
    np.savez(out / "mnist_noisy_trainval.npz", train_images=x, train_labels=noisy,
             val_images=src["val_images"], val_labels=src["val_labels"])
    imageclf = str(Path(sys.executable).with_name("imageclf"))
    fast = ["--recipe", args.recipe, "--epochs", str(args.epochs), "--device", "cpu", "-q", "--force"]
    review_s = run([imageclf, "review", str(out / "mnist_noisy_train.npz"), "--folds", str(args.folds),
                    "--out", str(out / "review"), *fast])
    rows = list(csv.DictReader((out / "review" / "review.csv").open()))
    ranked = [int(r["path"][len("train["):-1]) for r in rows]
    top = set(ranked[: len(ranked) // 10])
    flagged = {int(r["path"][len("train["):-1]) for r in rows if r["exclude"] == "true"}
    truth = set(flipped.tolist())
    figures = {"images": len(rows), "flipped": len(truth), "top10_share": len(top & truth) / len(truth),
               "flagged": len(flagged), "flagged_flipped": len(flagged & truth),
               "review_wall_s": round(review_s, 1), "folds": args.folds, "epochs": args.epochs,
               "recipe": args.recipe, "threads": os.environ.get("OMP_NUM_THREADS", "default")}
    for name, data, extra in (("noisy", "mnist_noisy_trainval.npz", []),
                              ("noisy_excluded", "mnist_noisy_trainval.npz",
                               ["--exclude", str(out / "review" / "review.csv")]),
                              ("clean", args.data, [])):
        seconds = run([imageclf, "train", data if name == "clean" else str(out / data), "--out",
                       str(out / name), *fast, *extra])
        metrics = json.loads((out / name / "metrics.json").read_text())
        figures[name] = {"val_accuracy": metrics["val_accuracy"], "train_images": metrics["train_images"],
                         "wall_s": round(seconds, 1)}
    (out / "review_bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
