"""How well a model's out-of-distribution score tells its own kind of image from far-off ones.

    python -m bench.ood RUN DATA [--kinds catsdogs,fashion,mnist,noise,blank,text] [--compare] [--json F]

RUN is a trained model folder (its OOD statistics fitted at the end of ``imageclf train``),
DATA the data it trained on. In-distribution images are the validation split the model's
training used (the one its OOD threshold was set on); far-off ones are drawn from
../shared/data (cats/dogs photos, Fashion-MNIST, MNIST digits, PneumoniaMNIST X-rays) or
made here (uniform and Gaussian noise, blank images of every gray level, words rendered as
images), each turned into the model's input by its own preprocessing (a photo becomes gray
for a gray model). For each kind: the OOD ROC-AUC (in-distribution validation images against
that kind), and the share of that kind refused at the stored threshold; for the validation
images: the share still answered at that threshold and the accuracy, which the score leaves
as it was. ``--compare`` also refits every scorer (Mahalanobis, kNN) on the training split's
features and scores the max-logit and energy baselines, to choose the method by measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WORDS = (
    "patient",
    "chest",
    "radiograph",
    "hello",
    "invoice",
    "the quick brown fox",
    "imageclf",
    "2026-11-30",
    "lorem ipsum dolor",
    "PA view",
    "total 42.00",
    "meeting at noon",
    "x = y + 1",
)


def photos(n: int, seed: int) -> list[Path]:
    files = sorted((SHARED / "catsdogs").rglob("*.jpg"))
    rng = np.random.default_rng(seed)
    return [files[i] for i in np.sort(rng.choice(len(files), min(n, len(files)), replace=False))]


def npz_images(name: str, n: int, seed: int) -> np.ndarray:
    with np.load(SHARED / name) as d:
        images = d["val_images"] if "val_images" in d.files else d["x_test"]
    rng = np.random.default_rng(seed)
    return images[np.sort(rng.choice(len(images), min(n, len(images)), replace=False))]


def noise(n: int, seed: int) -> list[np.ndarray]:
    """Half uniform, half Gaussian pixel noise, gray and RGB, at several sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        side = int(rng.choice([28, 64, 128]))
        shape = (side, side) if i % 4 < 2 else (side, side, 3)
        img = rng.integers(0, 256, shape) if i % 2 == 0 else rng.normal(128, 50, shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def blank(n: int, seed: int) -> list[np.ndarray]:
    """One constant image per gray level, evenly over 0..255."""
    return [np.full((64, 64), int(v), np.uint8) for v in np.linspace(0, 255, n)]


def text(n: int, seed: int) -> list[np.ndarray]:
    """Words drawn in dark on light or light on dark, at several font sizes and places."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        dark = i % 2 == 0
        img = Image.new("L", (128, 128), 235 if dark else 20)
        draw = ImageDraw.Draw(img)
        size = int(rng.choice([12, 16, 22, 30]))
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType sizes
            font = ImageFont.load_default()
        for line in range(int(rng.integers(1, 5))):
            word = WORDS[int(rng.integers(len(WORDS)))]
            xy = (int(rng.integers(0, 40)), int(rng.integers(0, 90)) if line == 0 else 10 + line * (size + 6))
            draw.text(xy, word, fill=20 if dark else 235, font=font)
        out.append(np.asarray(img))
    return out


def far_inputs(kind: str, model, n: int, seed: int) -> np.ndarray:
    """``n`` images of ``kind`` as the model's (N, H, W, C) uint8 input."""
    pre = model.preprocessing
    if kind == "catsdogs":
        return np.stack([model.prepare(str(p)) for p in photos(n, seed)])
    sources = {
        "fashion": "fashion_mnist_trainval.npz",
        "mnist": "mnist_digits_trainval.npz",
        "xray": "pneumoniamnist_trainval.npz",
    }
    if kind in sources:
        return np.stack([model.prepare(a) for a in npz_images(sources[kind], n, seed)])
    made = {"noise": noise, "blank": blank, "text": text}[kind](n, seed)
    arrays = [
        model.prepare(a if a.ndim == 3 or pre.channels == 1 else np.repeat(a[..., None], 3, 2)) for a in made
    ]
    return np.stack(arrays)


def in_distribution(model, data: str):
    """The validation split the model's training carved (or read), decoded with its preprocessing."""
    from imageclf.data.cache import cache_split
    from imageclf.data.sources import carve_of, training_splits
    from imageclf.evaluation.evaluate import open_for_model

    ds = open_for_model(model, data)
    train_split, val_split = training_splits(ds, *carve_of(model.config.recipe))
    val = cache_split(val_split, model.preprocessing, storage="memory")
    train = cache_split(train_split, model.preprocessing, storage="memory")
    remap = np.array([model.classes.index(c) for c in ds.classes])
    return val.images, remap[val.labels], train.images, remap[train.labels]


def compare_methods(model, train_x, train_y, val_x, far: dict[str, np.ndarray], keep: float) -> dict:
    """Per far kind, AUC and share refused of every scorer refitted on the training split, and of
    two baselines from the logits (the less confident, the further out). The network runs once
    per image set; each variant combines its parts as :class:`~imageclf.modelfile.ood.OodStats` does
    (the largest distance, each divided by its validation quantile)."""
    from imageclf.evaluation.metrics import binary_roc_auc
    from imageclf.inference.ood import head_inputs
    from imageclf.modelfile.ood import PIXEL_METHOD, SCALE_QUANTILE, fit_scorer

    net, pre, dev = model.model, model.preprocessing, model.device
    sets = {"train": train_x, "val": val_x, **far}
    inputs = {k: head_inputs(net, x, pre, dev) for k, x in sets.items()}  # (features, pixels, pool, width)
    variants = {"mahalanobis + knn + flat": (("mahalanobis", "knn"), True),
                "mahalanobis + flat": (("mahalanobis",), True), "knn + flat": (("knn",), True),
                "mahalanobis": (("mahalanobis",), False), "knn": (("knn",), False), "flat": ((), True)}
    out = {}
    for name, (methods, flat) in variants.items():
        pool = inputs["train"][2]  # the features come pooled (head_inputs)
        parts = [(0, fit_scorer(m, inputs["train"][0], train_y, pooled_by=pool)) for m in methods]
        if flat:
            parts.append((1, fit_scorer(PIXEL_METHOD, inputs["train"][1], train_y)))
        with torch.no_grad():
            raw = {k: [(s.score_pooled if i == 0 else s)(torch.from_numpy(v[i]).float()).numpy()
                       for i, s in parts]
                   for k, v in inputs.items() if k != "train"}
        scales = [np.quantile(r, SCALE_QUANTILE) for r in raw["val"]]
        score = {k: np.max([r / s for r, s in zip(rs, scales)], 0) for k, rs in raw.items()}
        out[name] = _row(score, keep, binary_roc_auc)

    def max_logit(z):
        return -np.abs(z[:, 0]) if z.shape[1] == 1 else -z.max(1)

    def energy(z):  # -logsumexp of the logits ([0, z] for one sigmoid logit)
        z = np.concatenate([np.zeros_like(z), z], 1) if z.shape[1] == 1 else z
        top = z.max(1)
        return -(top + np.log(np.exp(z - top[:, None]).sum(1)))

    logits = {k: model.view_logits(x)[0] for k, x in {"val": val_x, **far}.items()}
    for name, fn in (("max-logit", max_logit), ("energy", energy)):
        out[name] = _row({k: fn(z) for k, z in logits.items()}, keep, binary_roc_auc)
    return out


def _row(score: dict[str, np.ndarray], keep: float, auc) -> dict:
    """AUC (validation against each kind) and share refused at the threshold keeping ``keep``."""
    from imageclf.modelfile.ood import threshold_for

    t = threshold_for(score["val"], keep)
    return {
        k: {
            "auc": auc(np.r_[np.zeros(len(score["val"])), np.ones(len(v))], np.r_[score["val"], v]),
            "refused": float(np.mean(v > t)),
        }
        for k, v in score.items()
        if k != "val"
    }


def measure(run: str, data: str, kinds: list[str], n: int, seed: int, compare: bool) -> dict:
    import imageclf
    from imageclf.core.decision import decide
    from imageclf.evaluation.metrics import binary_roc_auc

    model = imageclf.load(run, device="cpu")
    if model.config.ood is None or not model.config.ood:
        sys.exit(f"{run}: this model has no OOD statistics (train it with this imageclf)")
    threshold = model.config.ood["threshold"]
    val_x, val_y, train_x, train_y = in_distribution(model, data)
    t0 = time.perf_counter()
    probs, val_s = model.predict_scored(val_x)
    seconds = time.perf_counter() - t0
    far = {k: far_inputs(k, model, n, seed) for k in kinds}
    rows = {}
    for kind, x in far.items():
        _, s = model.predict_scored(x)
        rows[kind] = {
            "n": len(x),
            "auc": binary_roc_auc(np.r_[np.zeros(len(val_s)), np.ones(len(s))], np.r_[val_s, s]),
            "refused": float(np.mean(s > threshold)),
        }
    result = {
        "run": run,
        "data": data,
        "method": model.config.ood["method"],
        "threshold": threshold,
        "val_images": len(val_x),
        "val_kept": float(np.mean(val_s <= threshold)),
        "val_accuracy": float(np.mean(decide(probs, model.threshold) == val_y)),
        "val_accuracy_answered": float(
            np.mean((decide(probs, model.threshold) == val_y)[val_s <= threshold])
        ),
        "scored_images_per_s": round(len(val_x) / seconds, 1),
        "kinds": rows,
        "date": time.strftime("%Y-%m-%d"),
    }
    if compare:
        result["compare"] = compare_methods(model, train_x, train_y, val_x, far, model.config.ood["keep"])
    return result


def markdown(result: dict) -> str:
    lines = [
        f"{result['run']} ({result['method']}, threshold {result['threshold']:.4g}): "
        f"{result['val_kept']:.1%} of {result['val_images']} validation images answered; validation "
        f"accuracy {result['val_accuracy']:.4f} (on those answered {result['val_accuracy_answered']:.4f})",
        "",
        "| far-off kind | images | OOD ROC-AUC | refused at the threshold |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {r['n']} | {r['auc']:.4f} | {r['refused']:.1%} |" for k, r in result["kinds"].items()]
    if "compare" in result:
        kinds = list(result["kinds"])
        lines += ["", "| scorer | " + " | ".join(kinds) + " | min |", "|---" * (len(kinds) + 2) + "|"]
        for method, per in result["compare"].items():
            aucs = [per[k]["auc"] for k in kinds]
            lines.append(f"| {method} | " + " | ".join(f"{a:.4f}" for a in aucs) + f" | {min(aucs):.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--kinds", default="catsdogs,fashion,mnist,noise,blank,text")
    ap.add_argument("--n", type=int, default=500, help="images of each far-off kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="also refit and score every method")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    result = measure(args.run, args.data, args.kinds.split(","), args.n, args.seed, args.compare)
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
