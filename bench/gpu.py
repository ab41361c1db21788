"""GPU benchmark, issue 21 item 5: xray-5block at 500 px end to end against the synthetic ceiling.

Two steps, on two machines:

``prepare`` (here, where ../shared and the pip packages are) writes everything the GPU
machine needs into ``bench/gpu_payload/`` (git-ignored, ~50 MB, carried to the device):
1,280 train + 320 val grayscale JPEGs of 500-700 px made from PneumoniaMNIST
(``jpegs/{train,val}/{normal,pneumonia}``), a copy of the peers' ``gpu_ceiling.py``, the
converted ``efficientnet_lite0.imagenet`` safetensors (if they resolve here) and a
``manifest.json``::

    .venv/bin/python -m bench.gpu prepare

``run`` (there: a machine with only its own torch, no registry, no network, no ../shared)
runs, in one process tree under a hard overall budget (``--budget``, default 540 s):
the nvidia-smi line and the package check (a part whose packages are missing is skipped
and said so, never a crash); ``gpu_ceiling.py`` at 500 px only (``--ceiling-sizes all``
for its three sizes); the whole ``imageclf train jpegs --recipe xray-5block --img-size 500``
command (``python -m imageclf.cli``, PYTHONPATH = the source tree) at the ceiling's batch
of 128, 10 epochs of 100 steps (128,000 images: about seed 002's own 25 epochs of 5,216),
early stopping off; then the fine-tune recipe (xray-lite0, 2 epochs: head only, then all
layers) for its epoch times. It prints and writes one JSON record (``$OUT/gpu_bench.json``
when $OUT is set, else ``--json``), rewritten after each part, with these ratios to the
best 500 px ceiling figure: ``e2e`` (images trained / wall time of the whole command),
``loop`` (over the epochs' own seconds, validation included) and ``steady`` (median of
the epochs after the first). Target: e2e >= 0.75 (aim 0.9). The logs go to $OUT too.

The device run (the ``run`` tool; an estimated 4-5 minutes of running, not yet measured on a GPU,
at most the budget, plus the machine's start; the tree with the payload is about 53 MiB of the
64 MiB a call may carry).
Run ``prepare`` first in the session that calls it (the payload is not committed)::

    command: PYTHONUNBUFFERED=1 PYTHONPATH=. python3 -m bench.gpu run --budget 540 2>&1
    carry:   ["bench/gpu_payload"]
    timeout_s: 600

On CPU, for testing this script end to end: ``run --device cpu --quick`` (96 px, batch 8,
2 epochs; the ceiling patched onto the CPU at the same size, eager only; the fine-tune at
64 px).
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = REPO / "bench" / "gpu_payload"
WEIGHTS = "efficientnet_lite0.imagenet"
CLASSES = ("normal", "pneumonia")
CEILING_ROWS = ((500, 128), (224, 256), (128, 512))  # gpu_ceiling.py's own (size, batch) rows
TRAIN_PACKAGES = ("torch", "numpy", "PIL", "safetensors", "typer", "rich", "yaml", "tqdm")
NEEDS: dict[str, tuple[str, ...]] = {
    "ceiling": ("torch",),
    "train": TRAIN_PACKAGES,
    "finetune": (*TRAIN_PACKAGES, "timm"),
}
TARGET_E2E, AIM_E2E = 0.75, 0.9


# ---------------------------------------------------------------- prepare (here)

def _jpeg_job(job: tuple[str, list, list, int, int, int, int, float, int]) -> int:
    """Write one chunk of JPEGs; per-image random draws seeded by (split, index): any worker count."""
    import numpy as np
    from PIL import Image

    folder, images, labels, offset, lo, hi, quality, noise, split_id = job
    written = 0
    for i, (img, label) in enumerate(zip(images, labels), start=offset):
        rng = np.random.default_rng([split_id, i])
        w, h = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        big = np.asarray(Image.fromarray(np.asarray(img, np.uint8)).resize((w, h), Image.BICUBIC), np.float32)
        if noise:
            big = big + rng.normal(0, noise, (h, w))
        path = Path(folder) / CLASSES[int(label)] / f"{Path(folder).name}_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=quality)
        written += path.stat().st_size
    return written


def write_jpeg_folder(npz: Path, dst: Path, *, n_train: int, n_val: int, px: tuple[int, int],
                      quality: int, noise: float, workers: int) -> dict:
    """PneumoniaMNIST's train / val splits as X-ray-like JPEGs of px[0]..px[1] pixels a side."""
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    d = np.load(npz)
    shutil.rmtree(dst, ignore_errors=True)
    jobs = []
    for split_id, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        images, labels = d[f"{split}_images"][:n], d[f"{split}_labels"].ravel()[:n]
        if len(images) < n:
            raise SystemExit(f"{npz} has only {len(images)} {split} images, {n} asked")
        for start in range(0, n, 64):
            jobs.append((str(dst / split), images[start:start + 64].tolist(),
                         labels[start:start + 64].tolist(), start, px[0], px[1], quality, noise, split_id))
    with ProcessPoolExecutor(max(1, workers)) as pool:
        total = sum(pool.map(_jpeg_job, jobs))
    counts = {split: {c: len(list((dst / split / c).glob("*.jpg"))) for c in CLASSES}
              for split in ("train", "val")}
    return {"counts": counts, "bytes": total, "px": list(px), "quality": quality, "noise": noise,
            "source": npz.name}


def copy_weights(dst: Path) -> dict:
    """The converted lite0 safetensors and their sha256 sidecar, as ``$IMAGECLF_CACHE/weights`` holds them."""
    try:
        from imageclf.models.weights import resolve_weights

        src = resolve_weights(WEIGHTS)
    except Exception as exc:  # no timm / no weights package here: the fine-tune then starts from random
        return {"name": WEIGHTS, "included": False, "why": f"{type(exc).__name__}: {exc}"}
    dst.mkdir(parents=True, exist_ok=True)
    for f in (src, src.with_name(src.name + ".sha256")):
        shutil.copy2(f, dst / f.name)
    return {"name": WEIGHTS, "included": True, "file": f"weights/{src.name}", "bytes": src.stat().st_size}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def prepare(a: argparse.Namespace) -> int:
    out: Path = a.out
    shared = Path(a.shared)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jpegs = write_jpeg_folder(shared / "data" / "pneumoniamnist_trainval.npz", out / "jpegs",
                              n_train=a.train, n_val=a.val, px=(a.min_px, a.max_px), quality=a.quality,
                              noise=a.noise, workers=a.workers)
    ceiling = shared / "peers" / "gpu_ceiling.py"
    if ceiling.is_file():
        shutil.copy2(ceiling, out / "gpu_ceiling.py")
    else:
        print(f"warning: no {ceiling}: the run will skip the ceiling", file=sys.stderr)
    shutil.rmtree(out / "weights", ignore_errors=True)
    weights = {"name": WEIGHTS, "included": False, "why": "--no-weights"} if a.no_weights \
        else copy_weights(out / "weights")
    manifest = {"made": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "jpegs": jpegs, "weights": weights,
                "ceiling_script": "gpu_ceiling.py" if ceiling.is_file() else None,
                "seconds": round(time.perf_counter() - t0, 1)}
    manifest["total_bytes"] = total = folder_bytes(out)  # the manifest's own few hundred bytes aside
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest))
    mib = total / 2**20
    print(f"payload {out}: {mib:.1f} MiB ({jpegs['bytes'] / 2**20:.1f} MiB of JPEGs)")
    if mib > a.max_mib:
        print(f"error: over the {a.max_mib} MiB limit: lower --quality, --noise or the counts",
              file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- running children under the budget

@dataclass
class Budget:
    """One deadline for the whole run; each part's timeout leaves room for the parts after it."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def cap(self, want: float, reserve: float = 0.0) -> float:
        """At most ``want`` seconds, and never into the ``reserve`` kept for later parts."""
        return max(0.0, min(want, self.left() - reserve))


@dataclass
class Proc:
    """A finished child: exit code (None when killed at its timeout), wall time, timestamped lines."""

    rc: int | None
    seconds: float
    lines: list[tuple[float, str]]
    timed_out: bool = False

    def first(self, prefix: str) -> float | None:
        return next((t for t, line in self.lines if line.lstrip().startswith(prefix)), None)

    def tail(self, n: int = 25) -> str:
        return "\n".join(line for _, line in self.lines[-n:])


def run_cmd(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None,
            log: Path | None = None, tag: str = "") -> Proc:
    """Run ``cmd`` in its own process group, echo and log its lines; kill the whole group at ``timeout``."""
    t0 = time.perf_counter()
    lines: list[tuple[float, str]] = []
    if timeout <= 0:
        return Proc(None, 0.0, [(0.0, "not started: no time left in the budget")], True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", env={**os.environ, **(env or {})}, cwd=str(REPO),
                            start_new_session=True)
    sink = open(log, "w") if log else None  # noqa: SIM115  closed below, after the reader ends

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append((time.perf_counter() - t0, line))
            if sink:
                sink.write(raw)
            print(f"[{tag}] {line}" if tag else line, flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    with suppress(ProcessLookupError, PermissionError):  # also any worker the command left behind
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(timeout=5)
    if sink:
        sink.close()
    return Proc(None if timed_out else proc.returncode, time.perf_counter() - t0, lines, timed_out)


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Version (or 'present') of each importable package, None when missing; nothing is imported."""
    dist = {"PIL": "pillow", "yaml": "pyyaml"}
    out: dict[str, str | None] = {}
    for name in names:
        if importlib.util.find_spec(name) is None:
            out[name] = None
            continue
        try:
            out[name] = importlib.metadata.version(dist.get(name, name))
        except importlib.metadata.PackageNotFoundError:
            out[name] = "present"
    return out


def missing_for(part: str, versions: dict[str, str | None]) -> list[str]:
    return [p for p in NEEDS[part] if versions.get(p) is None]


# ---------------------------------------------------------------- the ceiling

class PatchError(ValueError):
    """gpu_ceiling.py no longer has the line a patch expects."""


class Skip(Exception):
    """A part cannot run here; the reason goes into the record's ``skipped``."""


def _sub(text: str, old: str, new: str, regex: bool = False) -> str:
    out, n = (re.subn(old, new, text) if regex else (text.replace(old, new), text.count(old)))
    if not n:
        raise PatchError(f"gpu_ceiling.py has no {old!r}")
    return out


def ceiling_source(text: str, rows: list[tuple[int, int]] | None, *, device: str = "cuda",
                   compiled: bool = True, steps: int | None = None) -> str:
    """gpu_ceiling.py with only ``rows`` (size, batch); for CPU tests also moved off CUDA, eager only."""
    if rows is not None:
        text = _sub(text, r"for size, batch in \(\(.*\)\):",
                    f"for size, batch in {tuple(rows)!r}:", regex=True)
    if not compiled:
        text = _sub(text, "for comp in (False, True):", "for comp in (False,):")
    if steps is not None:
        text = _sub(text, r"compile_, steps=\d+\)", f"compile_, steps={int(steps)})", regex=True)
    if device == "cpu":
        for old, new in ((".cuda()", ".to('cpu')"), ('device="cuda"', 'device="cpu"'),
                         ("torch.cuda.synchronize()", "torch.cpu.synchronize()"),
                         ('torch.autocast("cuda"', 'torch.autocast("cpu"'),
                         ("torch.cuda.get_device_name()", "'cpu'")):
            text = _sub(text, old, new)
    return text


def last_json(lines: list[str]) -> dict | None:
    """The last line of ``lines`` that parses as a JSON object."""
    for line in reversed(lines):
        if line.startswith("{"):
            with suppress(ValueError):
                return json.loads(line)
    return None


def parse_ceiling(lines: list[str]) -> dict:
    """The figures gpu_ceiling.py printed: its final JSON line, else its 'KEY VALUE' lines (killed early)."""
    found = last_json(lines)
    if found is not None:
        return found
    out: dict = {}
    for line in lines:
        m = re.match(r"^(\d+px_b\d+_\w+) (\S.*)$", line)
        if m:
            try:
                out[m[1]] = float(m[2])
            except ValueError:
                out[m[1]] = m[2]
    return out


def best_row(raw: dict, size: int, batch: int) -> dict:
    """The best train img/s among the modes of one (size, batch) row, and every mode's figure."""
    prefix = f"{size}px_b{batch}_"
    modes = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    numbers = {k: v for k, v in modes.items() if isinstance(v, int | float)}
    best = max(numbers, key=numbers.__getitem__) if numbers else None
    return {"size": size, "batch": batch, "best": numbers.get(best) if best else None,
            "best_mode": best, "modes": modes}


def step_ceiling(p: Plan, budget: Budget, work: Path, payload: Path, cap: float) -> dict:
    script = payload / "gpu_ceiling.py"
    if not script.is_file():
        raise Skip(f"no {script} (run prepare with ../shared/peers/gpu_ceiling.py)")
    rows = None if p.ceiling_sizes == "all" and p.device != "cpu" else [(p.img_size, p.batch)]
    shipped = script.read_text()
    try:
        text = ceiling_source(shipped, rows, device="cpu" if p.device == "cpu" else "cuda",
                              compiled=p.ceiling_compiled, steps=p.ceiling_steps)
    except PatchError as exc:
        if p.device == "cpu":
            raise Skip(f"cannot move it to the CPU: {exc}") from None
        text = shipped  # as shipped: all its rows, slower but the same figures
        print(f"[ceiling] {exc}: running it as shipped", flush=True)
    patched = text != shipped
    run_script = work / "gpu_ceiling_run.py"
    run_script.write_text(text)
    proc = run_cmd([sys.executable, str(run_script)], timeout=budget.cap(cap, p.reserve_after_ceiling),
                   log=work / "logs" / "ceiling.log", tag="ceiling")
    raw = parse_ceiling([line for _, line in proc.lines])
    out = {"command": f"python gpu_ceiling.py (rows {rows or 'all'}{', patched' if patched else ''})",
           "rc": proc.rc, "timed_out": proc.timed_out, "seconds": round(proc.seconds, 1), "raw": raw,
           "row": best_row(raw, p.img_size, p.batch)}
    if proc.rc != 0:
        out["error_tail"] = proc.tail()
    return out


# ---------------------------------------------------------------- imageclf train

@dataclass(frozen=True)
class Plan:
    """Sizes and counts of one run; the presets below, then any command-line overrides."""

    device: str = "cuda"
    img_size: int = 500
    batch: int = 128
    epochs: int = 10
    steps_per_epoch: int | None = 100
    ft_recipe: str = "xray-lite0"
    ft_img_size: int | None = None  # None: the recipe's own (xray-lite0: 128 px, batch 32)
    ft_batch: int | None = None
    ft_epochs: int = 2
    ceiling_sizes: str = "500"
    ceiling_compiled: bool = True
    ceiling_steps: int | None = None  # None: the script's own 30
    ceiling_cap: float = 200.0
    reserve_after_ceiling: float = 200.0  # kept for the two trainings
    reserve_after_train: float = 75.0  # kept for the fine-tune


PRESETS = {
    "full": Plan(),
    "quick": Plan(epochs=3, steps_per_epoch=30, ceiling_compiled=False, ceiling_cap=90.0),
    "cpu": Plan(device="cpu", img_size=96, batch=8, epochs=2, steps_per_epoch=None, ft_img_size=64,
                ft_batch=8, ceiling_compiled=False, ceiling_steps=3, ceiling_cap=60.0,
                reserve_after_ceiling=60.0, reserve_after_train=40.0),
}


def make_plan(a: argparse.Namespace) -> Plan:
    p = PRESETS["cpu" if a.device == "cpu" else "quick" if a.quick else "full"]
    p = replace(p, device=a.device, ceiling_sizes=a.ceiling_sizes)
    for key in ("img_size", "batch", "epochs", "ft_recipe", "ft_epochs"):
        if getattr(a, key) is not None:
            p = replace(p, **{key: getattr(a, key)})
    if a.steps_per_epoch is not None:
        p = replace(p, steps_per_epoch=a.steps_per_epoch or None)  # 0: whole passes
    return p


def read_history(run: Path) -> list[dict]:
    try:
        with open(run / "history.csv", newline="") as f:
            return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]
    except (OSError, ValueError):
        return []


def train_summary(proc: Proc, run: Path) -> dict:
    """Throughput from history.csv as bench/runners.py computes it (a killed run keeps its epochs)."""
    history = read_history(run)
    images = sum(r["images_per_s"] * r["seconds"] for r in history)
    loop_s = sum(r["seconds"] for r in history)
    later = [r["images_per_s"] for r in history[1:]]
    ends = [t for t, line in proc.lines if re.match(r"\s*epoch \d+/\d+ ", line)]
    out = {"rc": proc.rc, "timed_out": proc.timed_out, "wall_s": round(proc.seconds, 2),
           "epochs_run": len(history), "images_trained": round(images),
           "e2e_img_per_s": round(images / proc.seconds, 1) if history else None,
           "loop_img_per_s": round(images / loop_s, 1) if loop_s else None,
           "steady_img_per_s": round(statistics.median(later), 1) if later else None,
           "decode_done_s": _round(proc.first("model ")),
           "first_epoch_end_s": _round(ends[0] if ends else None),
           "epoch_s": [r["seconds"] for r in history],
           "val_accuracy": history[-1].get("val_accuracy") if history else None}
    if proc.rc != 0:
        out["error_tail"] = proc.tail()
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def train_cmd(data: Path, out: Path, cache: Path, recipe: str, *, device: str, epochs: int,
              img_size: int | None, batch: int | None, sets: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "imageclf.cli", "train", str(data), "--recipe", recipe,
           "--epochs", str(epochs), "--device", device, "--out", str(out), "--force",
           "--cache-dir", str(cache)]
    if img_size:
        cmd += ["--img-size", str(img_size)]
    if batch:
        cmd += ["--batch-size", str(batch)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def step_train(p: Plan, budget: Budget, work: Path, payload: Path, env: dict[str, str]) -> dict:
    sets = ["early_stopping=none"]
    if p.steps_per_epoch:
        sets.append(f"steps_per_epoch={p.steps_per_epoch}")
    run = work / "runs" / "xray5"
    cmd = train_cmd(payload / "jpegs", run, work / "cache", "xray-5block", device=p.device, epochs=p.epochs,
                    img_size=p.img_size, batch=p.batch, sets=sets)
    shutil.rmtree(work / "cache", ignore_errors=True)  # decoding is part of end to end
    sampler = GpuSampler(work / "logs" / "nvidia_smi.csv") if p.device != "cpu" else None
    proc = run_cmd(cmd, timeout=budget.cap(budget.left(), p.reserve_after_train), env=env,
                   log=work / "logs" / "xray5.log", tag="xray5")
    gpu = sampler.stop() if sampler else None
    shutil.rmtree(work / "cache", ignore_errors=True)
    return {"command": " ".join(cmd[1:]), **train_summary(proc, run), "gpu_util": gpu}


def step_finetune(p: Plan, budget: Budget, work: Path, payload: Path, env: dict[str, str]) -> dict:
    weights = payload / "weights" / f"{WEIGHTS}.safetensors"
    sets = []
    if weights.is_file():
        dst = work / "icache" / "weights"
        dst.mkdir(parents=True, exist_ok=True)
        for f in (weights, weights.with_name(weights.name + ".sha256")):
            shutil.copy2(f, dst / f.name)
        start = WEIGHTS
    else:
        sets.append("pretrained=none")  # same epoch time, random start
        start = "random (no weights in the payload)"
    run = work / "runs" / "finetune"
    cmd = train_cmd(payload / "jpegs", run, work / "cache", p.ft_recipe, device=p.device, epochs=p.ft_epochs,
                    img_size=p.ft_img_size, batch=p.ft_batch, sets=sets)
    proc = run_cmd(cmd, timeout=budget.cap(budget.left(), 3.0), env=env,
                   log=work / "logs" / "finetune.log", tag="finetune")
    shutil.rmtree(work / "cache", ignore_errors=True)
    s = train_summary(proc, run)
    return {"command": " ".join(cmd[1:]), "weights": start, **s,
            "epoch_img_per_s": [r["images_per_s"] for r in read_history(run)]}


class GpuSampler:
    """``nvidia-smi`` utilisation and memory every 0.5 s while training runs (none if it is missing)."""

    def __init__(self, log: Path) -> None:
        self.log, self.proc = log, None
        if shutil.which("nvidia-smi"):
            self.sink = open(log, "w")  # noqa: SIM115  closed in stop()
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "500"], stdout=self.sink, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> dict | None:
        if self.proc is None:
            return None
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.sink.close()
        rows = []
        for line in self.log.read_text().splitlines():
            with suppress(ValueError):
                rows.append([float(x) for x in line.split(",")])
        if not rows:
            return None
        util = [r[0] for r in rows]
        return {"samples": len(rows), "util_mean_pct": round(statistics.mean(util), 1),
                "util_median_pct": statistics.median(util), "mem_max_mib": max(r[1] for r in rows)}


# ---------------------------------------------------------------- the run

def probe_env(budget: Budget) -> dict:
    """Python, torch, CUDA and the GPU, each from a short child (the parent never imports torch)."""
    env: dict = {"python": sys.version.split()[0], "packages": package_versions(NEEDS["finetune"])}
    code = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({"
            "'torch': torch.__version__, 'cuda_available': c, 'cuda': torch.version.cuda, "
            "'gpu': torch.cuda.get_device_name() if c else None, "
            "'cudnn': torch.backends.cudnn.version() if c else None}))")
    if env["packages"]["torch"] is not None:
        proc = run_cmd([sys.executable, "-c", code], timeout=budget.cap(120), tag="env")
        env.update(last_json([line for _, line in proc.lines]) or {"torch_probe_error": proc.tail(5)})
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,memory.total,driver_version,clocks.max.sm,temperature.gpu,power.limit"
        proc = run_cmd(["nvidia-smi", query, "--format=csv,noheader"], timeout=budget.cap(30), tag="smi")
        env["nvidia_smi"] = proc.tail(4)
    else:
        env["nvidia_smi"] = None
    return env


def ratios(train: dict, ceiling_row: dict | None) -> dict:
    best = (ceiling_row or {}).get("best")
    if not best:
        return {}
    out = {f"{k}_vs_ceiling": round(train[f"{k}_img_per_s"] / best, 3)
           for k in ("e2e", "loop", "steady") if train.get(f"{k}_img_per_s")}
    same = (ceiling_row or {}).get("modes", {}).get("bf16_eager")  # imageclf's own mode on CUDA
    if isinstance(same, int | float) and same and train.get("steady_img_per_s"):
        out["steady_vs_bf16_eager"] = round(train["steady_img_per_s"] / same, 3)
    e2e = out.get("e2e_vs_ceiling")
    out["target_e2e"], out["aim_e2e"] = TARGET_E2E, AIM_E2E
    out["target_met"] = None if e2e is None else e2e >= TARGET_E2E
    out["aim_met"] = None if e2e is None else e2e >= AIM_E2E
    return out


def json_path(a: argparse.Namespace, work: Path) -> Path:
    if a.json:
        return Path(a.json)
    return Path(os.environ["OUT"]) / "gpu_bench.json" if os.environ.get("OUT") else work / "gpu_bench.json"


def skip_reason(part: str, p: Plan, record: dict, skip: set[str], budget: Budget) -> str | None:
    env = record["env"]
    missing = missing_for(part, env["packages"])
    if part in skip:
        return "--skip"
    if missing:
        return f"missing packages: {', '.join(missing)}"
    if p.device != "cpu" and not env.get("cuda_available"):
        return f"--device {p.device} but torch sees no CUDA device"
    if budget.left() < 5:
        return "no time left in the budget"
    return None


def fresh_work_folder(work: Path) -> Path:
    """Empty ``work`` for this run; refuse a non-empty folder that an earlier run did not make."""
    marker = work / ".imageclf-gpu-bench"
    if work.exists() and any(work.iterdir()) and not marker.is_file():
        raise SystemExit(f"--work {work} is not empty and was not made by bench.gpu: give another folder")
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    marker.write_text("scratch folder of python -m bench.gpu run; emptied by each run\n")
    return work


def run(a: argparse.Namespace) -> int:
    p = make_plan(a)
    budget = Budget(a.budget)
    work = fresh_work_folder(a.work)
    out_json = json_path(a, work)
    payload: Path = a.payload
    manifest = payload / "manifest.json"
    record: dict = {"command": "python -m bench.gpu " + " ".join(sys.argv[1:] if a.argv is None else a.argv),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "plan": asdict(p), "budget_s": a.budget,
                    "payload": json.loads(manifest.read_text()) if manifest.is_file() else None,
                    "env": probe_env(budget), "skipped": {}}
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYTHONUNBUFFERED": "1", "IMAGECLF_CACHE": str(work / "icache")}
    if not (payload / "jpegs").is_dir():
        record["skipped"]["train"] = record["skipped"]["finetune"] = f"no {payload / 'jpegs'} (run prepare)"
    skip = set(a.skip)
    steps = (("ceiling", lambda: step_ceiling(p, budget, work, payload, p.ceiling_cap)),
             ("xray5", lambda: step_train(p, budget, work, payload, env)),
             ("finetune", lambda: step_finetune(p, budget, work, payload, env)))
    for name, fn in steps:
        part = "train" if name == "xray5" else name
        why = record["skipped"].get(part) or skip_reason(part, p, record, skip, budget)
        if why:
            record["skipped"][part] = why
            print(f"[{name}] skipped: {why}", flush=True)
        else:
            try:
                record[name] = fn()
            except Skip as exc:
                record["skipped"][part] = str(exc)
                print(f"[{name}] skipped: {exc}", flush=True)
        record["ratios"] = ratios(record.get("xray5") or {}, (record.get("ceiling") or {}).get("row"))
        record["elapsed_s"] = round(budget.seconds - budget.left(), 1)
        write_record(record, out_json, work)
    print_summary(record)
    print(json.dumps(record))
    failed = [n for n in ("ceiling", "xray5", "finetune") if n in record and record[n].get("rc") != 0]
    return 1 if failed else 0


def write_record(record: dict, path: Path, work: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    if os.environ.get("OUT"):  # the logs come back with the record (the run tool returns 8 files)
        for log in sorted((work / "logs").glob("*")):
            shutil.copy2(log, Path(os.environ["OUT"]) / log.name)


def print_summary(r: dict) -> None:
    row = (r.get("ceiling") or {}).get("row") or {}
    x, ft, q = r.get("xray5") or {}, r.get("finetune") or {}, r.get("ratios") or {}
    env = r["env"]
    print("\n== GPU benchmark ==", flush=True)
    print(f"gpu: {env.get('gpu')}  torch {env.get('torch')}  nvidia-smi: {env.get('nvidia_smi')}")
    print(f"ceiling {row.get('size')} px b{row.get('batch')}: best {row.get('best')} img/s "
          f"({row.get('best_mode')})")
    print(f"xray-5block e2e {x.get('e2e_img_per_s')}  loop {x.get('loop_img_per_s')}  steady "
          f"{x.get('steady_img_per_s')} img/s; decode done {x.get('decode_done_s')} s, "
          f"wall {x.get('wall_s')} s")
    print(f"ratios: {q}")
    print(f"fine-tune {r['plan']['ft_recipe']}: epoch s {ft.get('epoch_s')}  "
          f"img/s {ft.get('epoch_img_per_s')}")
    print(f"skipped: {r['skipped']}  elapsed {r.get('elapsed_s')} s of {r['budget_s']}", flush=True)


# ---------------------------------------------------------------- command line

def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="write the payload here (needs ../shared)")
    pr.add_argument("--out", type=Path, default=PAYLOAD)
    pr.add_argument("--shared", default=os.environ.get("IMAGECLF_BENCH_SHARED", "/work/shared"))
    pr.add_argument("--train", type=int, default=1280)
    pr.add_argument("--val", type=int, default=320)
    pr.add_argument("--min-px", type=int, default=500)
    pr.add_argument("--max-px", type=int, default=700)
    pr.add_argument("--quality", type=int, default=70)
    pr.add_argument("--noise", type=float, default=3.0, help="pixel noise sigma (more: larger files)")
    pr.add_argument("--workers", type=int, default=2)
    pr.add_argument("--no-weights", action="store_true", help="leave the lite0 weights out")
    pr.add_argument("--max-mib", type=float, default=60.0)
    ru = sub.add_parser("run", help="run the benchmark (on the GPU machine)")
    ru.add_argument("--payload", type=Path, default=PAYLOAD)
    ru.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: tiny sizes, for testing)")
    ru.add_argument("--quick", action="store_true", help="fewer epochs and steps, eager ceiling only")
    ru.add_argument("--budget", type=float, default=540.0, help="hard limit for the whole run, seconds")
    ru.add_argument("--work", type=Path, default=Path("/tmp/imageclf-gpu-bench"), help="scratch folder")
    ru.add_argument("--json", help="record path (default $OUT/gpu_bench.json, else WORK/gpu_bench.json)")
    ru.add_argument("--skip", nargs="*", default=[], choices=["ceiling", "train", "finetune"])
    ru.add_argument("--ceiling-sizes", default="500", choices=["500", "all"])
    ru.add_argument("--img-size", type=int)
    ru.add_argument("--batch", type=int)
    ru.add_argument("--epochs", type=int)
    ru.add_argument("--steps-per-epoch", type=int, help="0: whole passes over the train folder")
    ru.add_argument("--ft-recipe", choices=["xray-lite0", "photo-lite0"])
    ru.add_argument("--ft-epochs", type=int)
    a = ap.parse_args(argv)
    a.argv = argv
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    return prepare(a) if a.cmd == "prepare" else run(a)


if __name__ == "__main__":
    sys.exit(main())
