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

    python -m bench.ood RUN DATA --caps 2048,1024,512,256 --banks 4096,2048,1024,512 [--json F]

is the cost study (``--pooling runs``: a flattened map pooled in runs of consecutive values, as
models before block pooling were): for every (feature cap, knn bank) pair, the default
``mahalanobis+knn`` (+ flat) statistics are refitted in memory on the training split's features
as ``imageclf ood`` would (RUN is only read), the threshold set on validation to keep the stored
share, and each variant reports the OOD ROC-AUC and share refused per far-off kind, the
validation share answered, the time of :meth:`~imageclf.modelfile.ood.OodStats.score` alone on
128 images on one thread (median of ``--repeats``) and the multiply-adds per image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .machine import cpu_model

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


def variant_stats(feats: dict, pixels: dict, labels: np.ndarray, pool: int, bank: int, seed: int,
                  fixed: list[tuple]) -> tuple:
    """The default method's statistics for one (pool, bank), its parts scaled on validation as
    fit_ood scales them, and the combined score of every image set (the largest scaled part).
    ``fixed``: the parts that do not depend on the bank, (source, scorer, scores per image set)."""
    from imageclf.modelfile.ood import OodPart, OodStats, fit_scorer, part_scale

    knn = fit_scorer("knn", feats["train"], labels, seed, pooled_by=pool, bank=bank)
    with torch.no_grad():
        knn_raw = {k: knn.score_pooled(torch.from_numpy(f).float()).numpy() for k, f in feats.items()
                   if k != "train"}
    parts = [fixed[0][:2], ("features", knn), *(f[:2] for f in fixed[1:])]
    by_part = [fixed[0][2], knn_raw, *(f[2] for f in fixed[1:])]
    raw = {k: [r[k] for r in by_part] for k in feats if k != "train"}
    scales = [part_scale(r) for r in raw["val"]]
    stats = OodStats("mahalanobis+knn", [[OodPart(src, s, c) for (src, s), c in zip(parts, scales)]],
                     threshold=float("inf"))
    return stats, {k: np.max([r / c for r, c in zip(rs, scales)], 0) for k, rs in raw.items()}


def one_thread_us(run, images: int, repeats: int) -> float:
    """Microseconds per image of ``run()`` over a batch of ``images``: one thread, no grad, three
    warm-up calls, the median of ``repeats``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for _ in range(3):
                run()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return float(np.median(times)) / images * 1e6


def score_macs(stats, width: int, pixel_values: int) -> dict:
    """Multiply-adds per image of the score's parts: the pooling product, the whitening blocks,
    the class ranking and the candidates, the knn product (and norm), the pixel spread."""
    from imageclf.modelfile.ood import CANDIDATES

    out = {"pool": 0, "mahalanobis": 0, "knn": 0, "flat": 2 * pixel_values}
    for p in stats.members[0]:
        s = p.scorer
        if s.method == "mahalanobis":
            blocks = [getattr(s, f"whiten_{j}").shape for j in range(len(s.row_ends))]
            classes = s.means.shape[0]
            ranked = (classes + min(CANDIDATES, classes)) * s.feature_dim
            out["mahalanobis"] = sum(r * c for r, c in blocks) + ranked
            out["pool"] = width if s.pool > 1 else 0
        elif s.method == "knn":
            out["knn"] = (s.bank.shape[0] + 1) * s.feature_dim
    out["total"] = sum(out.values())
    return out


def study_rows(score: dict, threshold: float, auc) -> dict:
    """Per far kind, the AUC against validation and the share refused at ``threshold``."""
    zeros = np.zeros(len(score["val"]))
    return {k: {"auc": auc(np.r_[zeros, np.ones(len(v))], np.r_[score["val"], v]),
                "refused": float(np.mean(v > threshold))}
            for k, v in score.items() if k != "val"}


def study_cap(model, sets: dict, labels: np.ndarray, cap: int, banks: list[int], seed: int,
              batch: tuple, repeats: int, draws: int = 1, blocks: bool = True) -> list[dict]:
    """Every bank's variant at one feature cap (at most ``cap`` values, in blocks of a flattened
    map where ``blocks`` and the head has one, else in runs): the network runs once per image
    set. With ``draws`` > 1 the knn bank is drawn that many times (seeds ``seed``, ``seed + 1``,
    ...): the row holds the mean AUC and share refused, ``auc_sd`` the spread over the draws."""
    from imageclf.evaluation.metrics import binary_roc_auc
    from imageclf.inference.ood import head_inputs
    from imageclf.modelfile.ood import PIXEL_METHOD, fit_scorer, threshold_for

    net, pre, dev = model.model, model.preprocessing, model.device
    inputs = {k: head_inputs(net, x, pre, dev, cap=cap, grid_cap=cap, grid=blocks) for k, x in sets.items()}
    feats, pixels = {k: v[0] for k, v in inputs.items()}, {k: v[1] for k, v in inputs.items()}
    pool, width = inputs["train"][2], inputs["train"][3]
    maha = fit_scorer("mahalanobis", feats["train"], labels, seed, pooled_by=pool)
    flat = fit_scorer(PIXEL_METHOD, pixels["train"], labels)
    with torch.no_grad():
        fixed = [("features", maha, {k: maha.score_pooled(torch.from_numpy(f).float()).numpy()
                                     for k, f in feats.items() if k != "train"}),
                 ("pixels", flat, {k: flat(torch.from_numpy(f).float()).numpy()
                                   for k, f in pixels.items() if k != "train"})]
    out = []
    for bank in banks:
        fitted = []
        for s in range(seed, seed + draws):
            stats, score = variant_stats(feats, pixels, labels, pool, bank, s, fixed)
            stats.threshold = threshold_for(score["val"], model.config.ood["keep"])
            fitted.append((stats, {"seed": s, "threshold": stats.threshold,
                                   "val_kept": float(np.mean(score["val"] <= stats.threshold)),
                                   "kinds": study_rows(score, stats.threshold, binary_roc_auc)}))
        stats = fitted[0][0]
        out.append({
            "cap": cap, "pool": pool.label(), "features": int(feats["train"].shape[1]), "width": width,
            "bank": int(stats.members[0][1].scorer.bank.shape[0]), "bank_asked": bank,
            **mean_of_draws([d for _, d in fitted]),
            "us_per_image": round(one_thread_us(partial(stats.score, [batch[0]], batch[1]), len(batch[1]),
                                                repeats), 2),
            "macs": score_macs(stats, width, int(np.prod(batch[1].shape[1:]))),
        })
    return out


def mean_of_draws(draws: list[dict]) -> dict:
    """The draws' threshold, share answered, per kind AUC and share refused, averaged; the AUC's
    standard deviation over the draws per kind; the draws themselves."""
    kinds = list(draws[0]["kinds"])
    return {
        "threshold": float(np.mean([d["threshold"] for d in draws])),
        "val_kept": float(np.mean([d["val_kept"] for d in draws])),
        "kinds": {k: {m: float(np.mean([d["kinds"][k][m] for d in draws])) for m in ("auc", "refused")}
                  for k in kinds},
        "auc_sd": {k: float(np.std([d["kinds"][k]["auc"] for d in draws])) for k in kinds},
        "draws": draws,
    }


def study(run: str, data: str, kinds: list[str], n: int, seed: int, caps: list[int], banks: list[int],
          repeats: int = 15, draws: int = 1, blocks: bool = True) -> dict:
    """The cost study (module docstring): one row per (cap, bank); RUN is only read. ``blocks``
    False: a flattened map is pooled in runs, as models before block pooling were."""
    import os

    import imageclf
    from imageclf.data.transforms import batch_input
    from imageclf.inference.ood import fit_index, head_inputs

    model = imageclf.load(run, device="cpu")
    if not model.config.ood:
        sys.exit(f"{run}: this model has no OOD statistics (train it with this imageclf)")
    fit_seed = int(model.config.recipe.get("seed", 0))  # what training's own fit drew with
    val_x, _, train_x, train_y = in_distribution(model, data)
    # the images training's own fit used
    index = fit_index(model.model, train_x, model.preprocessing, model.device, fit_seed, grid=blocks)
    sets = {"train": train_x[index], "val": val_x, **{k: far_inputs(k, model, n, seed) for k in kinds}}
    labels = np.asarray(train_y)[index]
    probe = val_x[:128]
    x = batch_input(probe, model.preprocessing, model.device)
    raw = torch.from_numpy(head_inputs(model.model, probe, model.preprocessing, model.device,
                                       cap=1 << 30)[0]).float()  # unpooled, as a graph sees them
    rows, done = [], {}
    for cap in caps:  # caps that pool alike give the same statistics: fitted once
        pool = head_inputs(model.model, probe[:1], model.preprocessing, model.device, cap=cap, grid_cap=cap,
                           grid=blocks)[2]
        if pool not in done:
            done[pool] = study_cap(model, sets, labels, cap, banks, fit_seed, (raw, x), repeats, draws,
                                   blocks)
        rows += [{**r, "cap": cap} for r in done[pool]]
    # what training fits now (its default caps), the row the others are compared with
    default_features = head_inputs(model.model, probe[:1], model.preprocessing, model.device)[0].shape[1]
    return {
        "default_features": int(default_features), "pooling": "blocks" if blocks else "runs",
        "run": run, "data": data, "stored_threshold": model.config.ood["threshold"],
        "keep": model.config.ood["keep"], "val_images": len(val_x), "bank_draws": draws,
        "train_fit_images": len(index),
        "far_images": {k: len(v) for k, v in sets.items() if k not in ("train", "val")},
        "network_us_per_image": round(one_thread_us(lambda: model.model(x), len(x), repeats), 2),
        "variants": rows, "cpu": cpu_model(),
        "loadavg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def study_markdown(result: dict) -> str:
    """One row per variant: validation answered, AUC (refused) per kind, the worst AUC's drop
    from the default (the features training fits now, bank KNN_BANK; else the first row), cost
    per image."""
    from imageclf.modelfile.ood import KNN_BANK

    rows = result["variants"]
    kinds = list(rows[0]["kinds"])
    default = (result.get("default_features"), KNN_BANK)
    ref = next((r for r in rows if (r["features"], r["bank_asked"]) == default), rows[0])
    lines = [
        f"{result['run']}: {result['val_images']} validation images, fitted on {result['train_fit_images']} "
        f"training images, {result['bank_draws']} knn bank draw(s) per row; far images "
        f"{result['far_images']}; stored threshold {result['stored_threshold']:.4g}; "
        f"network alone {result['network_us_per_image']} µs/img "
        f"(torch, 1 thread); load {', '.join(f'{v:.2f}' for v in result['loadavg'])}",
        "",
        "| cap | D (pool) | bank | val answered | " + " | ".join(f"{k} AUC (refused)" for k in kinds)
        + " | max AUC drop | AUC sd over draws | OOD µs/img | OOD MACs/img |",
        "|---" * (len(kinds) + 8) + "|",
    ]
    for r in rows:
        drop = max(ref["kinds"][k]["auc"] - r["kinds"][k]["auc"] for k in kinds)
        cells = [f"{r['kinds'][k]['auc']:.4f} ({r['kinds'][k]['refused']:.1%})" for k in kinds]
        cost = f"{r['us_per_image']:.1f} | {r['macs']['total'] / 1e6:.2f} M"
        lines.append(f"| {r['cap']} | {r['features']} ({r['pool']}) | {r['bank']} | {r['val_kept']:.2%} | "
                     + " | ".join(cells) + f" | {drop:+.4f} | {max(r['auc_sd'].values()):.4f} | {cost} |")
    return "\n".join(lines)


def far_off_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments every OOD study takes: the run, its data, the far-off kinds and their count,
    the JSON file (also bench.ood_fit's)."""
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--kinds", default="catsdogs,fashion,mnist,noise,blank,text")
    ap.add_argument("--n", type=int, default=500, help="images of each far-off kind")
    ap.add_argument("--json", help="write the figures here")
    return ap


def report(result: dict, table: str, json_path: str | None) -> dict:
    """Print a study's table and write its figures to ``json_path`` (when given)."""
    print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = far_off_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="also refit and score every method")
    ap.add_argument("--caps", help="cost study: feature caps, comma-separated (with --banks)")
    ap.add_argument("--banks", help="cost study: knn bank sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=15, help="cost study: timed repeats of the score")
    ap.add_argument("--draws", type=int, default=1, help="cost study: knn banks drawn per variant")
    ap.add_argument("--pooling", choices=("blocks", "runs"), default="blocks",
                    help="cost study: a flattened map's pooling (runs: as models before block pooling)")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    if args.caps or args.banks:
        from imageclf.modelfile.ood import FEATURE_CAP, KNN_BANK

        caps = [int(c) for c in (args.caps or str(FEATURE_CAP)).split(",")]
        banks = [int(b) for b in (args.banks or str(KNN_BANK)).split(",")]
        result = study(args.run, args.data, kinds, args.n, args.seed, caps, banks, args.repeats, args.draws,
                       args.pooling == "blocks")
        return report(result, study_markdown(result), args.json)
    result = measure(args.run, args.data, kinds, args.n, args.seed, args.compare)
    return report(result, markdown(result), args.json)


if __name__ == "__main__":
    main()
