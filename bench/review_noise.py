"""How well ``imageclf review`` finds labels flipped on purpose, and what excluding its findings gives.

    python -m bench.review_noise [--data ../shared/data/mnist_digits_trainval.npz] [--out /tmp/review_bench]
        [--epochs 3] [--train-epochs 10] [--seeds 0,1,2] [--final-epoch]
        [--exclude-top 0.10 | --exclude-flipped] [--reuse-review] [--reuse-runs]

Flips ``--noise`` (5 %) of the training labels of an MNIST-style npz to another class (seeded by
``--seed``), reviews the noisy training split (``imageclf review``, ``--recipe``, K folds of
``--epochs`` each), and reports the share of the flipped images in the review's top 10 %, the
precision / recall of its ``exclude`` column, its wall time, and the validation accuracy against
the clean validation labels of three models per seed of ``--seeds``: trained on the noisy labels,
on the noisy labels with ``--exclude review.csv``, and on the clean labels (``--train-epochs``
each), with the fraction of the noise's cost that the exclusion recovers. ``--final-epoch`` keeps
each model's last epoch instead of ``imageclf train``'s default of restoring its best-val_loss
epoch (which, validated on clean labels, is an early stop against memorising the flipped ones).
``--exclude-top F`` leaves out the review's top F by rank instead of its ``exclude`` column;
``--exclude-flipped`` leaves out exactly the flipped images (an oracle: the most excluding can give).
``--reuse-review`` / ``--reuse-runs`` keep OUT's review.csv and any model folder made by the same
``imageclf train`` command, so that a variant trains only its excluded models.
Every step is an ``imageclf`` command, printed as it runs (``# reusing`` for one kept); the figures
go to ``OUT/review_bench.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("noisy", "noisy_excluded", "clean")


def run(cmd: list[str]) -> float:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def recovered(noisy: float, excluded: float, clean: float) -> float | None:
    """Share of the accuracy the noise cost (clean - noisy) that excluding gives back; None if no cost."""
    cost = clean - noisy
    return None if cost <= 0 else (excluded - noisy) / cost


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max of ``values``."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def index_of(path: str) -> int:
    """The training index in an npz item path such as ``train[42]``."""
    if not (path.startswith("train[") and path.endswith("]")):
        raise ValueError(f"not an npz training item: {path!r}")
    return int(path[len("train["):-1])


def detection(ranked: list[int], flagged: set[int], truth: set[int]) -> dict:
    """How well a ranking (most suspect first) and a flagged set find the ``truth`` indices."""
    top = set(ranked[: len(ranked) // 10])
    hits = len(flagged & truth)
    return {"images": len(ranked), "flipped": len(truth), "top10_share": len(top & truth) / len(truth),
            "flagged": len(flagged), "flagged_flipped": hits,
            "precision": hits / len(flagged) if flagged else None, "recall": hits / len(truth)}


def best_val_loss_row(rows: list[dict]) -> dict:
    """The history row of the lowest val_loss, the first on ties: the epoch ``imageclf train`` restores."""
    return min(rows, key=lambda r: float(r["val_loss"]))


def history_figures(folder: Path) -> dict:
    """From OUT/history.csv: the last epoch's training accuracy (on the labels it was given) and
    val accuracy, and the val accuracy of the lowest-val_loss epoch (the weights imageclf train
    restores by default; exact for recipes without EMA or TTA, such as mnist-basic), and the mean
    val accuracy of the second half of the epochs (a steadier view of the same regime)."""
    rows = list(csv.DictReader((folder / "history.csv").open()))
    best = best_val_loss_row(rows)
    late = rows[len(rows) // 2:]  # the second half of the epochs: less noisy than the last one alone
    return {"late_mean_val_accuracy": statistics.fmean(float(r["val_accuracy"]) for r in late),
            "late_epochs": f"{late[0]['epoch']}-{late[-1]['epoch']}",
            "epochs_run": len(rows), "last_train_accuracy": float(rows[-1]["accuracy"]),
            "last_val_accuracy": float(rows[-1]["val_accuracy"]), "best_val_loss_epoch": int(best["epoch"]),
            "best_val_loss_val_accuracy": float(best["val_accuracy"])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    ap.add_argument("--data", default=str(shared / "mnist_digits_trainval.npz"))
    ap.add_argument("--out", default="/tmp/review_bench")
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0, help="seed of the label flips")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each review fold")
    ap.add_argument("--train-epochs", type=int, default=None, help="epochs of the three models (--epochs)")
    ap.add_argument("--seeds", default="0", help="comma-separated imageclf train --seed values")
    ap.add_argument("--recipe", default="mnist-basic")
    ap.add_argument("--train-recipe", default=None, help="recipe of the three models (--recipe)")
    ap.add_argument("--final-epoch", action="store_true",
                    help="models keep their last epoch (no restore of the best-val_loss epoch)")
    ap.add_argument("--exclude-top", type=float, default=None,
                    help="exclude the review's top FRACTION by rank instead of its exclude column")
    ap.add_argument("--exclude-flipped", action="store_true",
                    help="oracle: exclude exactly the flipped images (the most excluding can give)")
    ap.add_argument("--reuse-review", action="store_true", help="keep OUT/review/review.csv if present")
    ap.add_argument("--reuse-runs", action="store_true",
                    help="skip a model whose folder holds the result of the same imageclf train command")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    train_epochs = args.train_epochs or args.epochs
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
    common = ["--device", "cpu", "-q", "--force"]
    review_csv = out / "review" / "review.csv"
    review_s = None
    if not (args.reuse_review and review_csv.is_file()):
        review_s = run([imageclf, "review", str(out / "mnist_noisy_train.npz"), "--folds", str(args.folds),
                        "--out", str(out / "review"), "--recipe", args.recipe, "--epochs", str(args.epochs),
                        *common])
    rows = list(csv.DictReader(review_csv.open()))
    ranked = [index_of(r["path"]) for r in rows]
    truth = set(flipped.tolist())
    flagged = {index_of(r["path"]) for r in rows if r["exclude"] == "true"}
    exclude_csv, tag = review_csv, ""
    if args.exclude_top is not None:
        # A CSV without an exclude column: imageclf train --exclude leaves out every path it lists.
        n = int(round(args.exclude_top * len(rows)))
        exclude_csv, tag = out / f"exclude_top_{n}.csv", f"_top{n}"
        exclude_csv.write_text("path\n" + "".join(r["path"] + "\n" for r in rows[:n]))
    excluded = set(ranked[: int(round(args.exclude_top * len(rows)))]) if args.exclude_top else flagged
    how = f"top {args.exclude_top:.0%} by rank" if args.exclude_top else "review.csv exclude column"
    if args.exclude_flipped:
        exclude_csv, tag, excluded = out / "exclude_flipped.csv", "_oracle", truth
        how = "exactly the flipped (oracle)"
        exclude_csv.write_text("path\n" + "".join(f"train[{i}]\n" for i in sorted(truth)))
    figures = {"data": args.data, "noise": args.noise, "flip_seed": args.seed,
               "review": {**detection(ranked, flagged, truth), "recipe": args.recipe, "folds": args.folds,
                          "epochs": args.epochs, "wall_s": None if review_s is None else round(review_s, 1)},
               "excluded": {"how": how, "images": len(excluded),
                            "flipped": len(excluded & truth)},
               "train": {"recipe": args.train_recipe or args.recipe, "epochs": train_epochs, "seeds": seeds,
                         "weights": "last epoch" if args.final_epoch else "best val_loss epoch (default)"},
               "threads": os.environ.get("OMP_NUM_THREADS", "default"), "models": {}}
    train_opts = ["--recipe", args.train_recipe or args.recipe, "--epochs", str(train_epochs), *common]
    if args.final_epoch:
        train_opts += ["--set", f"early_stopping.patience={train_epochs + 1}",
                       "--set", "early_stopping.restore_best=false"]
    per_seed = {m: [] for m in MODELS}
    for seed in seeds:
        for name in MODELS:
            data = args.data if name == "clean" else str(out / "mnist_noisy_trainval.npz")
            extra = ["--exclude", str(exclude_csv)] if name == "noisy_excluded" else []
            folder = out / f"s{seed}-{name}{tag if name == 'noisy_excluded' else ''}"
            cmd = [imageclf, "train", data, "--out", str(folder), *train_opts, "--seed", str(seed), *extra]
            done = folder / "bench_command.json"
            if args.reuse_runs and done.is_file() and json.loads(done.read_text())["command"] == cmd[1:]:
                print("# reusing " + " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
                seconds = json.loads(done.read_text())["wall_s"]
            else:
                seconds = run(cmd)
                done.write_text(json.dumps({"command": cmd[1:], "wall_s": seconds}) + "\n")
            metrics = json.loads((folder / "metrics.json").read_text())
            row = {"seed": seed, "val_accuracy": metrics["val_accuracy"],
                   "train_images": metrics["train_images"], "wall_s": round(seconds, 1),
                   **history_figures(folder)}
            per_seed[name].append(row)
        accs = {m: per_seed[m][-1]["val_accuracy"] for m in MODELS}
        print(f"seed {seed}: " + ", ".join(f"{m} {a:.4f}" for m, a in accs.items()), flush=True)
    for name in MODELS:
        figures["models"][name] = {"runs": per_seed[name],
                                   "val_accuracy": spread([r["val_accuracy"] for r in per_seed[name]])}
    for key in ("val_accuracy", "best_val_loss_val_accuracy", "last_val_accuracy", "late_mean_val_accuracy"):
        # val_accuracy: the saved model's (metrics.json); the others from history.csv.
        mean = {m: statistics.fmean(r[key] for r in per_seed[m]) for m in MODELS}
        label = "recovered" if key == "val_accuracy" else f"recovered_{key.removesuffix('_val_accuracy')}"
        figures[label] = {
            "means": mean,
            "of_means": recovered(mean["noisy"], mean["noisy_excluded"], mean["clean"]),
            "per_seed": [recovered(*(per_seed[m][i][key] for m in MODELS)) for i in range(len(seeds))],
            "noise_cost_points": 100 * (mean["clean"] - mean["noisy"]),
            "gain_points": 100 * (mean["noisy_excluded"] - mean["noisy"])}
    (out / "review_bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
