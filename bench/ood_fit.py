"""How many training images a model's OOD statistics need: refit them on fewer, score far-off kinds.

    python -m bench.ood_fit RUN DATA --fit-images 20000,2048,1024 [--draws 3] [--kinds ...] [--json F]

For each number of training images (a random subset of the training split, drawn ``--draws``
times with seeds 0, 1, ...; all of them where there are fewer), the default statistics are fitted
in memory as ``imageclf train`` fits them (``fit_ood`` with ``fit_images`` in place of its
``fit_limit``; RUN is only read), and the OOD ROC-AUC of the validation images against each
far-off kind of :mod:`bench.ood` is reported with the seconds the fit took. The rule it chose
(``FIT_PER_FEATURE`` in ``imageclf/inference/ood.py``) is in BENCHMARKS.md, Out of distribution.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from .ood import far_inputs, far_off_args, in_distribution, report, study_rows


def refit_rows(run: str, data: str, kinds: list[str], n: int, sizes: list[int], draws: int) -> dict:
    """One row per (training images, draw): images fitted on, seconds, AUC per far-off kind."""
    import imageclf
    from imageclf.evaluation.metrics import binary_roc_auc
    from imageclf.inference import ood
    from imageclf.modelfile.ood import largest_part

    model = imageclf.load(run, device="cpu")
    val_x, _, train_x, train_y = in_distribution(model, data)
    net, pre, device = model.model, model.preprocessing, model.device
    sets = {"val": val_x, **{k: far_inputs(k, model, n, 0) for k in kinds}}
    inputs = {k: ood.head_inputs(net, x, pre, device)[:2] for k, x in sets.items()}
    rows = []
    for size in sizes:
        for draw in range(draws):
            start = time.perf_counter()
            stats = ood.fit_ood(net, train_x, train_y, val_x, pre, device, seed=draw, fit_images=size)
            seconds = time.perf_counter() - start
            parts = stats.members[0]

            def score(kind: str, parts=parts) -> np.ndarray:
                feats, pixels = (torch.from_numpy(a).float() for a in inputs[kind])
                with torch.no_grad():
                    raw = [p.scorer.score_pooled(feats) if p.source == "features" else p.scorer(pixels)
                           for p in parts]
                return largest_part(parts, raw).numpy()

            per_kind = study_rows({k: score(k) for k in inputs}, stats.threshold, binary_roc_auc)
            aucs = {k: float(r["auc"]) for k, r in per_kind.items()}
            rows.append({"asked": size, "fit_images": int(stats.info["train_images"]), "draw": draw,
                         "fit_s": round(seconds, 2), "auc": aucs})
    return {"run": run, "data": data, "train_images": len(train_x), "val_images": len(val_x),
            "features": int(inputs["val"][0].shape[1]), "far_images": n, "rows": rows,
            "date": time.strftime("%Y-%m-%d")}


def markdown(result: dict) -> str:
    kinds = list(result["rows"][0]["auc"])
    lines = [f"{result['run']}: {result['features']} pooled features, {result['train_images']} training "
             f"and {result['val_images']} validation images, {result['far_images']} per far-off kind",
             "", "| fit images | draw | fit s | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 3) + "|"]
    lines += [f"| {r['fit_images']} | {r['draw']} | {r['fit_s']:.2f} | "
              + " | ".join(f"{r['auc'][k]:.4f}" for k in kinds) + " |" for r in result["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = far_off_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    ap.add_argument("--fit-images", default="20000,2048,1024",
                    help="training images to fit on, comma-separated")
    ap.add_argument("--draws", type=int, default=3, help="subsets drawn per number")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.fit_images.split(",")]
    result = refit_rows(args.run, args.data, args.kinds.split(","), args.n, sizes, args.draws)
    return report(result, markdown(result), args.json)


if __name__ == "__main__":
    main()
