"""``--backend auto``: the fastest backend measured equal to torch on the model's own validation
images, read from ``RUN/backends.json`` (torch-free).

``imageclf export RUN`` measures every installed backend (:mod:`imageclf.inference.measure`) and
writes the file: per backend its images per second and how it agrees with torch (the largest
probability difference and the share of equal decisions for fp32 graphs; accuracy and ROC-AUC
against fp32 for int8). A backend counts as equal when it is within :data:`TOLERANCE`. The file
records the config and weights it was measured with; for another one (retrained, recalibrated)
it is ignored and auto is torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from imageclf.modelfile.config import ModelConfig, read_config

BACKENDS_FILE = "backends.json"
# What "measured equal" means: an fp32 graph gives torch's probabilities to PROBS and all its
# decisions; an int8 graph loses at most ACCURACY of accuracy and AUC of ROC-AUC (the issue's
# 0.5 points and 0.005) on the validation images.
TOLERANCE = {"probs": 1e-4, "accuracy": 0.005, "auc": 0.005, "ood": 0.995}
# How much faster than the best equal graph backend torch must measure to be auto's choice.
TORCH_MARGIN = 1.25


def config_digest(config: ModelConfig) -> str:
    """SHA-256 of a config's canonical JSON: what a measurement was made for."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()


def agrees(entry: dict[str, Any], tolerance: dict[str, float] = TOLERANCE) -> bool:
    """Whether one measured backend counts as equal to torch (see the module docstring)."""
    # And either way the out-of-distribution answers: the same side of the threshold as torch's
    # for all but 0.5 % of the images (an int8 graph on OpenVINO was measured scoring every
    # Fashion-MNIST image far outside while its accuracy check alone could pass on another model).
    if entry.get("same_ood_answers", 1.0) < tolerance.get("ood", 0.995):
        return False
    if entry.get("variant") == "int8":
        return (entry.get("accuracy_drop", 1.0) <= tolerance["accuracy"] + 1e-12
                and entry.get("auc_drop", 1.0) <= tolerance["auc"] + 1e-12)
    return entry.get("max_abs_diff", 1.0) <= tolerance["probs"] and entry.get("same_decisions", 0.0) == 1.0


def read_measurement(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/backends.json when it was measured for RUN's current config.json; else None."""
    path = Path(run_dir) / BACKENDS_FILE
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        current = config_digest(read_config(run_dir))
    except (ValueError, OSError):
        return None
    if not isinstance(d, dict) or d.get("config_sha256") != current:
        return None
    if not isinstance(d.get("backends"), dict):
        return None
    return d


def pick(backends: dict[str, Any], installed: list[str], images: int | None = None) -> str:
    """The backend ``auto`` runs, from a measurement's ``backends``: the fastest installed one
    that agrees with torch, where torch itself must beat the best graph backend by
    :data:`TORCH_MARGIN` (a graph backend also spares a process torch's import and warm-up,
    which an in-process measurement does not see).

    ``images``: how many the caller is about to predict in a fresh process. Then "fastest" is
    the least start (``load_s``: the graph compiled for the CPU and its first image, as export
    measured it) plus ``images`` at its speed: one image on ONNX Runtime, which started in
    0.01 s, rather than on OpenVINO int8 at 1.8 times its images per second after 0.17 s
    (xray-5block, 2-core EPYC)."""
    ok = {name: e for name, e in backends.items()
          if name in installed and name != "torch" and isinstance(e, dict) and agrees(e)}

    def seconds(name: str) -> float:
        speed = max(float(ok[name].get("img_per_s", 0.0)), 1e-9)
        return (float(ok[name].get("load_s", 0.0)) if images is not None else 0.0) + (images or 1) / speed

    best = min(ok, key=seconds, default=None)
    if best is None:
        return "torch"
    torch_speed = float((backends.get("torch") or {}).get("img_per_s", 0.0))
    best_speed = float(ok[best].get("img_per_s", 0.0))
    return "torch" if "torch" in installed and torch_speed > TORCH_MARGIN * best_speed else best


def choose_backend(run_dir: str | Path, installed: list[str], images: int | None = None) -> str:
    """:func:`pick` on RUN/backends.json; torch when there is no current measurement."""
    measured = read_measurement(run_dir) if Path(run_dir).is_dir() else None
    return "torch" if measured is None else pick(measured["backends"], installed, images)
