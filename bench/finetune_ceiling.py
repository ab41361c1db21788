"""Fine-tuning speed against plain PyTorch: ``python -m bench.finetune_ceiling``.

The issue's target: the transfer-learning recipe's train images/s (the whole ``imageclf train``
command, as the speed benchmark counts it: start-up, decoding, validation, saving) at least
0.9x a plain-PyTorch training step of the same network and batch on a batch already in memory,
on the same CPU, in the same run. Per round, back to back, each in a fresh process:

1. **ceiling**: timm's ``tf_efficientnet_lite0`` (the recipe's network: its input channels, one
   logit, imageclf's dropout and drop-path rates), channels-last, AdamW, BCE, every layer training,
   BatchNorm in train mode (what a plain fine-tuning loop does), on one random batch of the
   recipe's size, as shipped and with imageclf's process settings (``PROCESS_DEFAULTS``: huge
   pages, glibc's malloc thresholds): the higher. The same step without dropout and drop-path (timm's
   defaults) is measured too, for the record.
2. **imageclf**: ``imageclf train FOLDER --recipe RECIPE`` on PNGs of the same size, from ImageNet
   weights (its head-only epoch included, as the recipe trains).

usage: python -m bench.finetune_ceiling [--recipe xray-lite0] [--epochs 3] [--rounds 2]
       [--train 640 --val 160] [--seconds 20] [--root /tmp/imageclf-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
from pathlib import Path

from .procmon import watch
from .profile_step import timed_steps
from .runners import IMAGECLF_ENV, read_history
from .workloads import _subset_npz, default_sources, npz_folder

REPO = Path(__file__).resolve().parent.parent
DATA = {"xray-lite0": ("pneumoniamnist_trainval.npz", ["normal", "pneumonia"])}


def child(a: argparse.Namespace) -> None:
    """The plain step, in this (fresh) process: prints one JSON line."""
    import timm
    import torch
    import torch.nn.functional as F

    from imageclf.recipes import resolve_recipe

    recipe = resolve_recipe(a.recipe, {})
    h, w = recipe.size
    torch.manual_seed(0)
    # The same network: imageclf's efficientnet_lite* are these timm models with dropout 0.2 before
    # the head and drop-path 0.1 (imageclf/models/timm_nets.py), unless the recipe says otherwise.
    kw = {"dropout": 0.2, "drop_path": 0.1, **recipe.model_kwargs}
    if a.no_drop:
        kw = {"dropout": 0.0, "drop_path": 0.0}
    model = timm.create_model(f"tf_{recipe.model}", pretrained=False, num_classes=1, in_chans=recipe.channels,
                              drop_rate=kw["dropout"], drop_path_rate=kw["drop_path"])
    model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    x = torch.rand(recipe.batch_size, recipe.channels, h, w).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (recipe.batch_size,)).float()

    def step() -> None:
        loss = F.binary_cross_entropy_with_logits(model(x)[:, 0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    print(json.dumps({**timed_steps(step, recipe.batch_size, a.seconds), "threads": torch.get_num_threads()}))


def ceiling(a: argparse.Namespace, env: dict[str, str], no_drop: bool = False) -> dict:
    cmd = [sys.executable, "-m", "bench.finetune_ceiling", "--child", "--recipe", a.recipe,
           "--seconds", str(a.seconds)] + (["--no-drop"] if no_drop else [])
    base = {k: v for k, v in os.environ.items() if k not in IMAGECLF_ENV}
    watched = watch(cmd, cwd=str(REPO), env={**base, **env})
    line = [text for _, text in watched.lines if text.startswith("{")]
    if not line:
        raise SystemExit("ceiling failed:\n" + "\n".join(text for _, text in watched.lines[-20:]))
    return json.loads(line[-1])


def imageclf(a: argparse.Namespace, data: Path, out: Path) -> dict:
    cache = a.root / "finetune-cache"
    shutil.rmtree(cache, ignore_errors=True)  # decoding counts, as in the speed benchmark
    cmd = [sys.executable, "-m", "imageclf.cli", "train", str(data), "--recipe", a.recipe,
           "--epochs", str(a.epochs), "--out", str(out), "--force", "--cache-dir", str(cache)]
    before = _children_cpu()
    watched = watch(cmd, cwd=str(REPO))
    cpu = _children_cpu() - before  # the command and its decode workers
    if watched.returncode:
        raise SystemExit("imageclf train failed:\n" + "\n".join(text for _, text in watched.lines[-20:]))
    metrics = json.loads((out / "metrics.json").read_text())
    images = metrics["train_images"] * metrics["epochs_run"]
    history = read_history(out)
    loop_s = sum(r["seconds"] for r in history)
    return {"train_img_per_s": round(images / watched.seconds, 2),
            "loop_img_per_s": round(images / loop_s, 2),
            "epoch_img_per_s": [r["images_per_s"] for r in history],
            "img_per_cpu_s": round(images / cpu, 2), "wall_s": round(watched.seconds, 1),
            "val_accuracy": metrics["val_accuracy"]}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def prepare(a: argparse.Namespace) -> Path:
    npz_name, classes = DATA[a.recipe]
    src = default_sources()
    h = 128  # the recipe's input size; PNGs written at it, as the xray5-png128 workload does
    dst = a.root / "finetune" / f"{a.recipe}-{a.train}-{a.val}"
    subset = dst.parent / f"{dst.name}.npz"
    if not subset.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        _subset_npz(src.data / npz_name, subset, {"train": a.train, "val": a.val})
    prep = npz_folder(subset.name, classes, h, {"train": a.train, "val": a.val})
    return prep(dst, type(src)(data=subset.parent, peers=src.peers), False)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.finetune_ceiling", description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="xray-lite0", choices=sorted(DATA))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--train", type=int, default=640)
    ap.add_argument("--val", type=int, default=160)
    ap.add_argument("--seconds", type=float, default=20.0, help="ceiling: seconds of steps per measurement")
    ap.add_argument("--root", type=Path, default=Path("/tmp/imageclf-bench"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-drop", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    data = prepare(a)
    print(f"{a.recipe}: {a.train} / {a.val} images, {a.epochs} epochs; load average {os.getloadavg()}",
          flush=True)
    rows = []
    for r in range(a.rounds):
        shipped, env = ceiling(a, {}), ceiling(a, IMAGECLF_ENV)
        ceil = max(shipped["img_per_s"], env["img_per_s"])
        ceil_cpu = max(shipped["img_per_cpu_s"], env["img_per_cpu_s"])
        run = imageclf(a, data, a.root / "finetune" / "run")
        bare = ceiling(a, IMAGECLF_ENV, no_drop=True)["img_per_s"]  # for the record: no drop-path
        rows.append({"ceiling_img_per_s": ceil, "ceiling_img_per_cpu_s": ceil_cpu,
                     "ceiling_no_drop_img_per_s": bare, **run,
                     "ratio": round(run["train_img_per_s"] / ceil, 3),
                     "cpu_ratio": round(run["img_per_cpu_s"] / ceil_cpu, 3),
                     "loop_ratio": round(run["loop_img_per_s"] / ceil, 3), "load": os.getloadavg()})
        print(f"round {r + 1}: ceiling {ceil:.1f} img/s (without drop-path {bare:.1f}); "
              f"imageclf train {run['train_img_per_s']:.1f} "
              f"(loop {run['loop_img_per_s']:.1f}; epochs {run['epoch_img_per_s']}) -> "
              f"{rows[-1]['ratio']:.3f}x; per CPU-second {run['img_per_cpu_s']:.1f} against "
              f"{ceil_cpu:.1f}: {rows[-1]['cpu_ratio']:.3f}x "
              f"(loop {rows[-1]['loop_ratio']:.3f}x), val acc {run['val_accuracy']:.4f}; "
              f"load {tuple(round(x, 2) for x in os.getloadavg())}", flush=True)
    print(json.dumps({"recipe": a.recipe, "epochs": a.epochs, "rounds": rows}))


if __name__ == "__main__":
    main()
