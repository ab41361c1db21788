"""The benchmark's workloads (a registry) and the data folders they train on.

Every workload trains the same recipe on the same folder with the same epochs, batch and
validation on both sides (imageclf and the Keras peer), so their ratios are fair. Data
folders are written once into a scratch folder outside the repository (never the
cats/dogs photos themselves: those are linked) and reused by later runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FASHION_CLASSES = ["0_tshirt", "1_trouser", "2_pullover", "3_dress", "4_coat", "5_sandal",
                   "6_shirt", "7_sneaker", "8_bag", "9_boot"]


@dataclass(frozen=True)
class Sources:
    """Where the shared data and the peer scripts are."""

    data: Path
    peers: Path
    python: str = sys.executable


@dataclass(frozen=True)
class Workload:
    """One comparison: a data folder, the imageclf recipe and the Keras peer's matching settings.

    ``keras`` holds keras_seed.py's --recipe/--color/--augment (None: no Keras run);
    ``ceiling`` is cpu_ceiling.py's MODEL:BATCH (None: no ceiling run). ``targets`` are
    the issue's ratios, checked in the report.
    """

    name: str
    description: str
    prepare: Callable[[Path, Sources, bool], Path]
    recipe: str
    img_size: int
    channels: int
    batch: int
    epochs: int
    quick_epochs: int = 1
    settings: dict[str, str] = field(default_factory=dict)
    keras: dict[str, str] | None = None
    ceiling: str | None = None
    cache: str = "auto"
    targets: dict[str, float] = field(default_factory=dict)
    in_default_run: bool = True
    variants: tuple[str, ...] | None = None  # the imageclf variants worth running (None: all asked)


WORKLOADS: dict[str, Workload] = {}


def register(w: Workload) -> Workload:
    if w.name in WORKLOADS:
        raise ValueError(f"workload {w.name!r} registered twice")
    WORKLOADS[w.name] = w
    return w


# ---------------------------------------------------------------- data folders

def _done(folder: Path, tag: str) -> bool:
    marker = folder / ".bench-done"
    return marker.is_file() and marker.read_text() == tag


def _mark(folder: Path, tag: str) -> None:
    (folder / ".bench-done").write_text(tag)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _subset_npz(src: Path, dst: Path, n: dict[str, int]) -> Path:
    """The first ``n[split]`` images of each split of a MedMNIST-layout npz."""
    d = np.load(src)
    arrays = {}
    for split, count in n.items():
        arrays[f"{split}_images"] = d[f"{split}_images"][:count]
        arrays[f"{split}_labels"] = d[f"{split}_labels"][:count]
    np.savez(dst, **arrays)
    return dst


def _test_is_val(root: Path) -> None:
    """test/ = links to val/: both sides are then scored on the same images (the npz has no test)."""
    for f in sorted((root / "val").rglob("*.*")):
        link = root / "test" / f.relative_to(root / "val")
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(f)


def npz_folder(npz_name: str, classes: list[str], size: int | None, quick_n: dict[str, int]):
    """A preparer: an npz's splits as PNG class folders (peers' npz_to_folder.py), test = val."""

    def prepare(dst: Path, src: Sources, quick: bool) -> Path:
        tag = f"{npz_name} {size} {quick}"
        if _done(dst, tag):
            return dst
        dst.mkdir(parents=True, exist_ok=True)
        npz = src.data / npz_name
        if quick:
            npz = _subset_npz(npz, dst.parent / f"{dst.name}-subset.npz", quick_n)
        cmd = [src.python, str(src.peers / "npz_to_folder.py"), str(dst), ",".join(classes), str(npz)]
        _run(cmd + (["--size", str(size)] if size else []))
        _test_is_val(dst)
        _mark(dst, tag)
        return dst

    return prepare


def big_jpegs(dst: Path, src: Sources, quick: bool) -> Path:
    """PneumoniaMNIST as X-ray-size JPEGs (peers' big_jpeg_folder.py): the seeds' decode cost."""
    n = (48, 16, 16) if quick else (1000, 200, 200)
    tag = f"big {n}"
    if not _done(dst, tag):
        _run([src.python, str(src.peers / "big_jpeg_folder.py"), str(dst),
              str(src.data / "pneumoniamnist_trainval.npz"),
              "--train", str(n[0]), "--val", str(n[1]), "--test", str(n[2])])
        _mark(dst, tag)
    return dst


def catsdogs_split(dst: Path, src: Sources, quick: bool) -> Path:
    """The cats/dogs photos linked (not copied) into train/ val/ (test = val), stratified."""
    n_val = 50 if quick else 200  # per class
    n_train = 100 if quick else 800
    tag = f"catsdogs {n_train} {n_val}"
    if _done(dst, tag):
        return dst
    for cls in ("cats", "dogs"):
        files = sorted((src.data / "catsdogs" / cls).iterdir(), key=lambda p: p.name)
        files = [files[i] for i in np.random.default_rng(0).permutation(len(files))]
        for split, chosen in (("train", files[:n_train]), ("val", files[n_train:n_train + n_val])):
            folder = dst / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for f in chosen:
                link = folder / Path(f).name
                if not link.exists():
                    link.symlink_to(f)
    _test_is_val(dst)
    _mark(dst, tag)
    return dst


def random_jpegs(dst: Path, src: Sources, quick: bool) -> Path:
    """Many small 224 px RGB JPEGs in two class folders: cheap to write, large to cache."""
    n = 2000 if quick else 20000
    tag = f"random {n}"
    if _done(dst, tag):
        return dst
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        cls = ("a", "b")[i % 2]
        folder = dst / cls
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth noise (14 px upscaled) compresses to a few KB, so 20,000 files stay small.
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        small[..., i % 2] //= 2  # a faint class signal
        Image.fromarray(small).resize((224, 224), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=80)
    _mark(dst, tag)
    return dst


def tiny_folders(dst: Path, src: Sources, quick: bool) -> Path:
    """Synthetic 32 px split folders (imageclf.data.synthetic): for the bench's own smoke test."""
    from imageclf.data import synthetic as testing

    if not _done(dst, "tiny"):
        testing.make_class_folders(dst, n=48, size=32, splits=("train", "val", "test"))
        _mark(dst, "tiny")
    return dst


# ---------------------------------------------------------------- the workloads

PNEU_QUICK = {"train": 400, "val": 100}
COMPUTE_BOUND = {"train_vs_ceiling": 0.9}

register(Workload(
    "xray5-png128", "xray-5block @128 gray from 128-px PNGs (PneumoniaMNIST 4,708 / 524), batch 16",
    npz_folder("pneumoniamnist_trainval.npz", ["normal", "pneumonia"], 128, PNEU_QUICK),
    recipe="xray-5block", img_size=128, channels=1, batch=16, epochs=5,
    keras={"recipe": "xray5", "color": "grayscale", "augment": "1"}, ceiling="xray5:16",
    targets={**COMPUTE_BOUND, "predict_vs_keras": 3.0, "train_vs_ceiling_moonshot": 1.5},
))
register(Workload(
    "xray5-bigjpeg", "xray-5block @128 gray from X-ray-size JPEGs (1,000 / 200 / 200, ~400 KB each)",
    big_jpegs, recipe="xray-5block", img_size=128, channels=1, batch=16, epochs=10,
    keras={"recipe": "xray5", "color": "grayscale", "augment": "1"}, ceiling="xray5:16",
    targets={"train_vs_keras": 3.0, "predict_vs_keras": 3.0, "first_epoch_vs_keras_epoch": 1.0},
))
register(Workload(
    "mnist-fashion", "mnist-basic @28 gray from Fashion-MNIST PNGs (55,000 / 5,000), batch 32, "
    "no augmentation",
    npz_folder("fashion_mnist_trainval.npz", FASHION_CLASSES, None, {"train": 4000, "val": 500}),
    recipe="mnist-basic", img_size=28, channels=1, batch=32, epochs=3,
    keras={"recipe": "mnist", "color": "grayscale", "augment": "0"}, ceiling="mnist:32",
    targets={**COMPUTE_BOUND, "predict_vs_keras": 2.0},
))
register(Workload(
    "catsdogs-jpeg", "catsdogs-2conv @64 RGB from the cats/dogs JPEG photos (1,600 / 400), batch 32",
    catsdogs_split, recipe="catsdogs-2conv", img_size=64, channels=3, batch=32, epochs=10,
    settings={"steps_per_epoch": "none"},  # whole passes, as keras_seed.py's fit does
    keras={"recipe": "catsdogs", "color": "rgb", "augment": "1"}, ceiling="catsdogs:32",
    targets={**COMPUTE_BOUND, "predict_vs_keras": 3.0},
))
register(Workload(
    "memory-20k-224", "20,000 random 224 px RGB JPEGs (disk cache), xray-5block RGB, 1 epoch of "
    "200 steps of 16 + validation on 2,000",
    random_jpegs, recipe="xray-5block", img_size=224, channels=3, batch=16, epochs=1,
    settings={"steps_per_epoch": "200"}, cache="auto", targets={"peak_rss_mb_max": 3000.0},
    variants=("default",),
))
register(Workload(
    "tiny", "synthetic 32 px split folders (the bench's smoke test)", tiny_folders,
    recipe="catsdogs-2conv", img_size=32, channels=1, batch=16, epochs=2,
    settings={"steps_per_epoch": "none"}, keras={"recipe": "catsdogs", "color": "grayscale", "augment": "1"},
    ceiling="catsdogs:32", in_default_run=False,
))


def default_sources() -> Sources:
    shared = Path(os.environ.get("IMAGECLF_BENCH_SHARED", "/work/shared"))
    return Sources(data=shared / "data", peers=shared / "peers")
