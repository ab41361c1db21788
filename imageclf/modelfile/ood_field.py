"""The torch-free part of the out-of-distribution statistics: the names and the check of
config.json's ``ood`` field.

:mod:`imageclf.modelfile.ood` holds the statistics themselves (tensors, the scoring network);
what a config parser, a prediction on ONNX Runtime or OpenVINO and a table of answers need is
here, so that none of them imports torch (``imageclf predict RUN x.png --backend onnx``).
"""

from __future__ import annotations

import math
from typing import Any

from imageclf.core.errors import ModelFileError

OOD_FILE = "ood.safetensors"
OOD_METHODS = ("mahalanobis", "knn")  # for the features
PIXEL_METHOD = "flat"  # for pixel_stats: how much flatter than the training images an input is
SOURCES = ("features", "pixels")  # what a part scores: the head's input, or pixel_stats of the input
MAX_FEATURE_DIM = 8192  # a crafted file asking for more is refused before anything is allocated
OOD_MODES = ("refuse", "flag")
# What an input past the threshold is answered instead of a class (refuse mode).
OUTSIDE = "outside what this model was trained on"


def known_method(method: Any) -> bool:
    """Whether ``method`` is one feature distance or several joined by '+' (each once)."""
    if not isinstance(method, str):
        return False
    names = [m.strip() for m in method.split("+")]
    return bool(names) and all(m in OOD_METHODS for m in names) and len(set(names)) == len(names)


def _part_ok(p: Any) -> bool:
    return (isinstance(p, dict)
            and p.get("source") in SOURCES
            and p.get("method") in (*OOD_METHODS, PIXEL_METHOD)
            and isinstance(p.get("scale", 1.0), float | int)
            and float(p.get("scale", 1.0)) > 0
            and isinstance(p.get("pool", 1), int)
            and 1 <= p.get("pool", 1) <= MAX_FEATURE_DIM
            and _grid_ok(p.get("grid")))


def _grid_ok(grid: Any) -> bool:
    """A part's ``grid``: absent, or the (C, H, W) of the map its features flatten."""
    return grid is None or (isinstance(grid, list) and len(grid) == 3
                            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 16
                                    for v in grid)
                            and math.prod(grid) <= 1 << 26)


def check_ood_field(d: Any, where: str) -> None:
    """Refuse a config.json ``ood`` field that is not what ``OodStats.config_field`` writes."""
    if not d:
        return
    threshold = d.get("threshold") if isinstance(d, dict) else None
    ok = (
        isinstance(d, dict)
        and (d.get("method") == "ensemble" or known_method(d.get("method")))
        and isinstance(threshold, float | int)
        and not isinstance(threshold, bool)
        and math.isfinite(float(threshold))
        and isinstance(d.get("sha256"), str)
        and isinstance(d.get("members"), list)
        and bool(d["members"])
        and d.get("file", OOD_FILE) == OOD_FILE
        and all(isinstance(m, dict) and isinstance(m.get("parts"), list) and m["parts"]
                and all(_part_ok(p) for p in m["parts"]) for m in d["members"])
    )
    if not ok:
        raise ModelFileError(f"{where}: malformed 'ood' field (method, threshold, members, sha256 expected)")
