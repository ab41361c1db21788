"""The model card: ``RUN/README.md``, what a reader (or a model hub) needs to know before using a model.

Written by the run folder at the end of training (:meth:`imageclf.training.run.RunDir.finish`)
and beside an ensemble, from ``config.json`` alone, so it never says more than the model file
records. The layout is the one model hubs read: YAML front matter (licence, library, tags,
datasets, a ``model-index`` of validation results), then Markdown sections: intended use,
training data and its fingerprint, recipe, validation figures with 95 % intervals, decision
threshold, out-of-distribution threshold, known limits, and the licence of bundled weights.
``config.json`` stays authoritative; ``imageclf calibrate`` and ``imageclf ood`` write the card
again after changing it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from imageclf.core.io import atomic_write_text
from imageclf.modelfile.artifact import ModelConfig

CARD_FILE = "README.md"
Z95 = 1.959964


def wilson_interval(p: float, n: int) -> tuple[float, float] | None:
    """95 % Wilson score interval of a proportion ``p`` of ``n`` (None without images)."""
    if not n or p is None or math.isnan(p):
        return None
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def auc_interval(auc: float, n_pos: int, n_neg: int) -> tuple[float, float] | None:
    """95 % interval of a ROC-AUC from Hanley & McNeil's (1982) standard error."""
    if not n_pos or not n_neg or auc is None or math.isnan(auc):
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    se = math.sqrt(max(var, 0.0))
    return max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se)


def _front_matter(config: ModelConfig) -> dict[str, Any]:
    m, data = config.metrics, config.data
    results = []
    if m.get("val_accuracy") is not None:
        results.append(
            {"type": "accuracy", "value": round(float(m["val_accuracy"]), 4), "name": "validation accuracy"}
        )
    if m.get("val_auc") is not None and not math.isnan(m["val_auc"]):
        results.append(
            {"type": "roc_auc", "value": round(float(m["val_auc"]), 4), "name": "validation ROC-AUC"}
        )
    front = {
        "license": config.pretrained.get("licence", "other").lower() if config.pretrained else "other",
        "library_name": "imageclf",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "imageclf", config.architecture],
        "datasets": [Path(str(data.get("source", "unknown"))).name],
        "metrics": [r["type"] for r in results],
    }
    if results:
        front["model-index"] = [
            {
                "name": config.name or config.architecture,
                "results": [
                    {
                        "task": {"type": "image-classification"},
                        "dataset": {
                            "name": front["datasets"][0],
                            "type": str(data.get("kind", "")),
                            "split": "validation",
                        },
                        "metrics": results,
                    }
                ],
            }
        ]
    return front


def _figures(config: ModelConfig, val_counts: list[int] | None) -> list[str]:
    m = config.metrics
    n = int(m.get("val_images") or 0)
    lines = ["| figure | value | 95 % interval |", "|---|---|---|"]
    acc = m.get("val_accuracy")
    if acc is not None:
        ci = wilson_interval(acc, n)
        lines.append(f"| accuracy | {acc:.4f} | {_ci(ci)} (Wilson) |")
    auc = m.get("val_auc")
    if auc is not None and not math.isnan(auc):
        binary = val_counts is not None and len(val_counts) == 2
        ci = auc_interval(auc, val_counts[1], val_counts[0]) if binary else None
        lines.append(f"| ROC-AUC | {auc:.4f} | {_ci(ci)}{' (Hanley-McNeil)' if ci else ''} |")
    if m.get("val_loss") is not None:
        lines.append(f"| loss | {m['val_loss']:.4f} | |")
    lines.append(
        f"\nOn {n} validation images, best epoch {m.get('best_epoch', '?')} of "
        f"{m.get('epochs_run', '?')}. For bootstrap intervals, curves and per-class figures on a test "
        "split: `imageclf evaluate RUN DATA --report report.html`."
    )
    return lines


def _ci(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"{ci[0]:.4f} to {ci[1]:.4f}"


def _ood(config: ModelConfig) -> list[str]:
    ood = config.ood
    if not ood:
        return [
            "None recorded (a model folder from before imageclf fitted them): every input is answered "
            "with a class. `imageclf ood RUN DATA` adds them."
        ]
    kept = ood.get("val_kept")
    return [
        f"Method {ood['method']} (penultimate-layer features, and a floor on the pixels' spread); "
        f"threshold {ood['threshold']:.4g}, set to keep {ood.get('keep', 0.99):.0%} of the validation "
        f"images" + (f" (kept {kept:.1%} of {ood.get('val_images')})" if kept is not None else "") + ". "
        'Past it an input is answered "outside what this model was trained on" instead of a class '
        "(`--ood flag` only flags it)."
    ]


def _weights(config: ModelConfig) -> list[str]:
    p = config.pretrained
    if not p:
        return [
            "Trained from scratch: no third-party weights are bundled. The trained weights carry the "
            "licence their owner gives them, and the training data's licence may bind them."
        ]
    return [
        f"Started from {p.get('name') or p.get('file', '?')}"
        + (f" (package {p['package']})" if p.get("package") else "")
        + f", licence {p.get('licence', 'unknown')}, sha256 {p.get('sha256', '?')}."
    ]


def model_card(config: ModelConfig, val_counts: list[int] | None = None) -> str:
    """The card's Markdown (with its YAML front matter) for ``config``; ``val_counts``: validation
    images per class, for the ROC-AUC interval."""
    pre, data, recipe = config.preprocessing, config.data, config.recipe
    name = config.name or config.architecture
    thresholds = (
        f"p({config.classes[1]}) >= {config.threshold:.3g} predicts {config.classes[1]}"
        if len(config.classes) == 2
        else "the most probable class is predicted"
    )
    sections = [
        f"# {name}",
        "",
        recipe.get("description") or f"An imageclf {config.architecture} image classifier.",
        "",
        "## Intended use",
        "",
        f"Sorting images like its training images into {', '.join(config.classes)}: research, teaching and "
        "triage experiments. It is not a medical device and not a diagnosis; a person decides.",
        "",
        "## Training data",
        "",
        f"- source: `{data.get('source', '?')}` ({data.get('kind', '?')})",
        f"- images per split: {data.get('split_sizes', '?')}",
        f"- fingerprint (sha256 of names, sizes and labels): `{data.get('sha256', '?')}`",
        "",
        "## Recipe",
        "",
        f"`{recipe.get('name', name)}`: architecture {config.architecture}, "
        f"input {pre.size[0]}x{pre.size[1]}x"
        f"{pre.channels} (resize {pre.resize}), {recipe.get('epochs', '?')} epochs, optimizer "
        f"{recipe.get('optimizer', '?')} at lr {recipe.get('lr', '?')}, seed {recipe.get('seed', '?')}. The "
        "full recipe is `recipe.yaml` (train it again with `--recipe RUN/recipe.yaml`).",
        "",
        "## Validation figures",
        "",
        *_figures(config, val_counts),
        "",
        "## Decision threshold and operating point",
        "",
        f"{thresholds}; temperature {config.temperature:g}; "
        f"test-time flips: {', '.join(config.tta) or 'none'}. "
        "`imageclf calibrate RUN DATA --target sensitivity=0.95` chooses another operating point "
        "(config.json then holds it).",
        "",
        "## Out-of-distribution threshold",
        "",
        *_ood(config),
        "",
        "## Known limits",
        "",
        f"- It has only seen {data.get('source', 'its training data')}: other scanners, sites, "
        "populations or "
        "image sizes may score lower without any warning; the OOD threshold catches far-off inputs (other "
        "kinds of image, blank or noise), not a subtle shift.",
        f"- Every input is resized to {pre.size[0]}x{pre.size[1]} and read as {pre.channels} channel(s).",
        "- Validation figures come from the split that chose the kept epoch: a held-out test set scores "
        "somewhat lower.",
        "",
        "## Licence of bundled weights",
        "",
        *_weights(config),
        "",
        "## Files",
        "",
        f"`model.safetensors` (sha256 `{config.weights_sha256}`), `config.json`"
        + (", `ood.safetensors`" if config.ood else "")
        + f"; written {config.created} by imageclf "
        f"{config.versions.get('imageclf', '?')}.",
    ]
    front = yaml.safe_dump(_front_matter(config), sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(sections) + "\n"


def write_card(run_dir: str | Path, config: ModelConfig, val_counts: list[int] | None = None) -> Path:
    """Write ``RUN/README.md`` atomically from ``config``."""
    path = Path(run_dir) / CARD_FILE
    atomic_write_text(path, model_card(config, val_counts))
    return path
