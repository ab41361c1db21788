"""The four things the benchmark runs per workload, each in its own process.

``imageclf_train`` (the whole command: decode, cache, validation, saving), ``predict``
(a fresh process loading the run), ``keras`` (the seeds' pipeline, keras_seed.py) and
``ceiling`` (plain PyTorch on batches already in memory, cpu_ceiling.py). Each returns a
plain dict for the JSON record.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from imageclf.core.runtime import PROCESS_DEFAULTS

from .procmon import Watched, watch
from .workloads import Sources, Workload

REPO = Path(__file__).resolve().parent.parent


class RunFailed(RuntimeError):
    """A benchmarked command exited with an error; the message ends with its output."""


def _check(w: Watched, what: str) -> None:
    if w.returncode != 0:
        tail = "\n".join(line for _, line in w.lines[-25:])
        raise RunFailed(f"{what} exited with {w.returncode}:\n{tail}")


def _last_json(w: Watched) -> dict:
    for _, line in reversed(w.lines):
        if line.startswith("{"):
            return json.loads(line)
    raise RunFailed("no JSON line in the output:\n" + w.text[-2000:])


def warm_page_cache(folder: Path) -> dict:
    """Read every file under ``folder`` once, so that the command timed next finds its images in
    the page cache, as whichever command read them just before it does.

    This VM pages out files idle for a minute (docs/performance.md, "The machine"): the first
    command after the ceiling's run read them cold and the peer after it warm. 55,000 Fashion-MNIST
    PNGs took imageclf 24.2 s to decode where the run before, on files just written, took 8.3 s.
    """
    t0, files, size = time.perf_counter(), 0, 0
    for top, _, names in os.walk(folder):
        for name in names:
            try:
                with open(os.path.join(top, name), "rb") as f:
                    while chunk := f.read(1 << 20):
                        size += len(chunk)
            except OSError:  # unreadable files are the timed command's to report
                continue
            files += 1
    return {"files": files, "mb": round(size / 1e6, 1), "seconds": round(time.perf_counter() - t0, 2)}


def read_history(run: Path) -> list[dict]:
    """RUN/history.csv, one dict of floats per epoch."""
    with open(run / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def imageclf_train(w: Workload, data: Path, out: Path, cache_dir: Path, *, epochs: int,
                   python: str = sys.executable, extra: list[str] | None = None,
                   nproc: int | None = None, env: dict[str, str] | None = None) -> dict:
    """``imageclf train`` as a user runs it; the cache folder is emptied first (decode included)."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    warmed = warm_page_cache(data)
    cmd = [python, "-m", "imageclf.cli", "train", str(data), "--recipe", w.recipe,
           "--img-size", str(w.img_size), "--channels", str(w.channels), "--batch-size", str(w.batch),
           "--epochs", str(epochs), "--out", str(out), "--force", "--cache", w.cache,
           "--cache-dir", str(cache_dir)]
    for key, value in w.settings.items():
        cmd += ["--set", f"{key}={value}"]
    if nproc:
        cmd += ["--nproc", str(nproc)]
    cmd += extra or []
    watched = watch(cmd, cwd=str(REPO), env=env)
    _check(watched, "imageclf train")
    history = read_history(out)
    metrics = json.loads((out / "metrics.json").read_text())
    images = sum(row["images_per_s"] * row["seconds"] for row in history)
    epoch_ends = [t for t, _ in watched.all("epoch ") if re.match(r"\s*epoch \d+/\d+ ", _)]
    decoded = watched.first("model ")  # printed right after the caches are built
    later = [row["seconds"] for row in history[1:]]
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {
        "command": " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), *cmd]),
        "wall_s": round(watched.seconds, 2),
        "page_cache_warmed": warmed,
        "train_images": metrics["train_images"],
        "epochs_run": len(history),
        "train_img_per_s": round(images / watched.seconds, 1),
        "loop_img_per_s": round(images / sum(row["seconds"] for row in history), 1),
        "decode_done_s": round(decoded, 2) if decoded is not None else None,
        "first_epoch_end_s": round(epoch_ends[0], 2) if epoch_ends else None,
        "first_epoch_s": history[0]["seconds"],
        "later_epoch_s": round(sum(later) / len(later), 2) if later else None,
        "val_accuracy": metrics["val_accuracy"],
        "val_auc": metrics.get("val_auc"),
        "peak_rss_mb": round(watched.peak_rss_mb, 1),
        "peak_pss_mb": round(watched.peak_pss_mb, 1),
        "main_peak_rss_mb": round(watched.main_peak_rss_mb, 1),
        "history": history,
    }


def predict(run: Path, folder: Path, python: str = sys.executable, batch_size: int | None = None,
            backend: str = "torch") -> dict:
    cmd = [python, "-m", "bench.predict_probe", str(run), str(folder), "--backend", backend]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    warm_page_cache(folder)
    watched = watch(cmd, cwd=str(REPO))
    _check(watched, f"predict probe ({backend})")
    return {**_last_json(watched), "peak_rss_mb": round(watched.peak_rss_mb, 1)}


def export(run: Path, python: str = sys.executable) -> dict:
    """``imageclf export RUN --int8``: the ONNX graphs, int8 calibrated on the run's validation
    images, and every installed backend measured into RUN/backends.json (what auto reads)."""
    cmd = [python, "-m", "imageclf.cli", "export", str(run), "--int8", "--force", "-q"]
    watched = watch(cmd, cwd=str(REPO))
    _check(watched, "imageclf export")
    return {"command": " ".join(cmd), "wall_s": round(watched.seconds, 2)}


def keras(w: Workload, data: Path, src: Sources, keras_python: str, *, epochs: int) -> dict:
    """keras_seed.py on the same folder, epochs and batch; epoch times from its log's timestamps."""
    k = w.keras or {}
    cmd = [keras_python, str(src.peers / "keras_seed.py"), str(data), "--recipe", k["recipe"],
           "--size", str(w.img_size), "--epochs", str(epochs), "--batch", str(w.batch),
           "--color", k["color"], "--augment", k["augment"]]
    warm_page_cache(data)
    watched = watch(cmd)
    _check(watched, "keras_seed.py")
    result = _last_json(watched)
    # Keras prints no "Epoch 1/1" for a single epoch: then the data listing marks the start.
    found = [t for t, line in watched.lines if line.startswith("Found ")]
    start = watched.first("Epoch 1/") or (found[-1] if found else None)
    ends = [t for t, line in watched.lines if re.match(r"^\d+/\d+ - ", line)]
    epoch_s = [b - a for a, b in zip([start, *ends[:-1]], ends)] if start is not None else []
    return {**result, "command": " ".join(cmd), "wall_s": round(watched.seconds, 2),
            "epoch_s": [round(s, 2) for s in epoch_s],
            "first_epoch_s": round(epoch_s[0], 2) if epoch_s else None,
            "mean_epoch_s": round(sum(epoch_s) / len(epoch_s), 2) if epoch_s else result["s_per_epoch"],
            "peak_rss_mb": round(watched.peak_rss_mb, 1), "peak_pss_mb": round(watched.peak_pss_mb, 1),
            "main_peak_rss_mb": round(watched.main_peak_rss_mb, 1)}


# The process settings imageclf makes for itself (imageclf/core/runtime.py): the ceiling is
# also run with them, so that a ratio to it measures the loop, not the environment.
IMAGECLF_ENV = dict(PROCESS_DEFAULTS)


def ceiling(spec: str, src: Sources, *, quick: bool, python: str = sys.executable,
            env: dict | None = None) -> dict:
    """cpu_ceiling.py for one MODEL:BATCH; the best train and predict figure over its modes."""
    cmd = [python, str(src.peers / "cpu_ceiling.py"), "--only", spec] + (["--quick"] if quick else [])
    watched = watch(cmd, env=env)
    _check(watched, "cpu_ceiling.py")
    raw = _last_json(watched)
    best = {}
    for kind in ("train", "predict"):
        figures = {k: v for k, v in raw.items() if k.endswith(f"_{kind}") and isinstance(v, int | float)}
        mode = max(figures, key=figures.get) if figures else None
        best[kind] = figures.get(mode) if mode else None
        best[f"{kind}_mode"] = mode
    prefix = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    return {**best, "raw": raw, "command": f"{prefix} {' '.join(cmd)}".strip()}


def best_ceiling(runs: dict[str, dict]) -> dict:
    """The higher train and predict figures of the ceiling's runs (as shipped, imageclf's env)."""
    ok = {name: r for name, r in runs.items() if "error" not in r}
    if not ok:
        return next(iter(runs.values()))
    out: dict = {"runs": runs}
    for kind in ("train", "predict"):
        name = max(ok, key=lambda n: ok[n][kind] or 0)
        out[kind], out[f"{kind}_mode"] = ok[name][kind], f"{ok[name][f'{kind}_mode']} ({name})"
    return out
