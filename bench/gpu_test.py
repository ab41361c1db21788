"""bench/gpu.py: its pure helpers, and prepare + ``run --device cpu --quick`` on a tiny payload."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench import gpu

SHARED_CEILING = Path("/work/shared/peers/gpu_ceiling.py")
# The lines of gpu_ceiling.py that ceiling_source patches, as the peers' script has them.
CEILING_LINES = """def bench(size, batch, bf16, compile_, steps=30):
    m = seed002(size).cuda().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 1, size, size, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
    torch.cuda.synchronize(); t = time.perf_counter()
out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
for size, batch in ((500, 128), (224, 256), (128, 512)):
    for bf16 in (False, True):
        for comp in (False, True):
"""


def _ceiling_text() -> str:
    return SHARED_CEILING.read_text() if SHARED_CEILING.is_file() else CEILING_LINES


def test_ceiling_source_keeps_only_the_asked_rows_and_moves_to_cpu():
    text = gpu.ceiling_source(_ceiling_text(), [(500, 128)])
    assert "for size, batch in ((500, 128),):" in text and "(224, 256)" not in text
    assert ".cuda()" in text  # on the GPU nothing else changes
    cpu = gpu.ceiling_source(_ceiling_text(), [(96, 8)], device="cpu", compiled=False, steps=3)
    assert ".cuda()" not in cpu and 'device="cuda"' not in cpu and "torch.cuda." not in cpu
    assert "for comp in (False,):" in cpu and "steps=3)" in cpu
    if SHARED_CEILING.is_file():
        compile(cpu, "gpu_ceiling_run.py", "exec")
    with pytest.raises(gpu.PatchError, match="for size"):
        gpu.ceiling_source("print(1)\n", [(500, 128)])


def test_ceiling_figures_from_its_json_or_from_the_lines_of_a_killed_run():
    done = ["500px_b128_fp32_eager 100.0", '{"gpu": "H", "500px_b128_fp32_eager": 100.0, '
            '"500px_b128_bf16_eager": 250.5, "500px_b128_bf16_compiled": "error: X"}']
    row = gpu.best_row(gpu.parse_ceiling(done), 500, 128)
    assert (row["best"], row["best_mode"]) == (250.5, "bf16_eager") and len(row["modes"]) == 3
    killed = gpu.parse_ceiling(["500px_b128_fp32_eager 100.0", "500px_b128_fp32_compiled 180.0", "Trace"])
    assert gpu.best_row(killed, 500, 128)["best"] == 180.0
    assert gpu.best_row({}, 500, 128)["best"] is None


def test_ratios_and_targets():
    train = {"e2e_img_per_s": 800.0, "loop_img_per_s": 950.0, "steady_img_per_s": 990.0}
    r = gpu.ratios(train, {"best": 1000.0})
    assert (r["e2e_vs_ceiling"], r["loop_vs_ceiling"], r["steady_vs_ceiling"]) == (0.8, 0.95, 0.99)
    assert r["target_met"] is True and r["aim_met"] is False
    assert gpu.ratios(train, {"best": None}) == {} and gpu.ratios({}, None) == {}


def test_budget_and_run_cmd_kill_the_whole_group_at_the_timeout(tmp_path):
    b = gpu.Budget(100.0)
    assert b.cap(30, reserve=10) == 30 and b.cap(500, reserve=10) <= 90
    assert gpu.Budget(1.0, start=time.monotonic() - 5).cap(10) == 0
    code = ("import subprocess, time; subprocess.Popen(['sleep', '30']); print('up', flush=True); "
            "time.sleep(30)")
    t0 = time.monotonic()
    proc = gpu.run_cmd([sys.executable, "-c", code], timeout=2.0, log=tmp_path / "x.log")
    assert proc.timed_out and proc.rc is None and time.monotonic() - t0 < 15
    assert proc.lines[0][1] == "up" and (tmp_path / "x.log").read_text() == "up\n"
    assert gpu.run_cmd(["true"], timeout=0).timed_out


def test_missing_packages_are_named():
    versions = gpu.package_versions(("json", "surely_not_a_package_xyz"))
    assert versions["json"] is not None and versions["surely_not_a_package_xyz"] is None
    assert gpu.missing_for("finetune", {"torch": "2"}) == [p for p in gpu.NEEDS["finetune"] if p != "torch"]
    have = dict.fromkeys(gpu.NEEDS["finetune"], "1") | {"timm": None}
    record, budget = {"env": {"packages": have, "cuda_available": False}}, gpu.Budget(60)
    assert gpu.skip_reason("finetune", gpu.PRESETS["cpu"], record, set(), budget) == "missing packages: timm"
    assert gpu.skip_reason("train", gpu.PRESETS["cpu"], record, set(), budget) is None
    assert "no CUDA" in gpu.skip_reason("train", gpu.PRESETS["full"], record, set(), budget)


def _fake_shared(root: Path) -> Path:
    """A shared folder with a small PneumoniaMNIST-layout npz and, where it exists, the real ceiling."""
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True)
    (root / "peers").mkdir()
    arrays = {f"{s}_{k}": v for s, n in (("train", 24), ("val", 12)) for k, v in
              (("images", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
               ("labels", (np.arange(n) % 2).reshape(-1, 1)))}
    np.savez(root / "data" / "pneumoniamnist_trainval.npz", **arrays)
    if SHARED_CEILING.is_file():
        (root / "peers" / "gpu_ceiling.py").write_text(SHARED_CEILING.read_text())
    return root


def test_prepare_then_a_quick_cpu_run_writes_the_record(tmp_path, monkeypatch):
    shared, payload = _fake_shared(tmp_path / "shared"), tmp_path / "payload"
    assert gpu.main(["prepare", "--shared", str(shared), "--out", str(payload), "--train", "16", "--val", "8",
                     "--min-px", "100", "--max-px", "120", "--no-weights", "--workers", "1"]) == 0
    manifest = json.loads((payload / "manifest.json").read_text())
    assert manifest["jpegs"]["counts"]["train"] == {"normal": 8, "pneumonia": 8}
    assert len(list((payload / "jpegs" / "val").rglob("*.jpg"))) == 8 and manifest["total_bytes"] > 0
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    (tmp_path / "out").mkdir()
    rc = gpu.main(["run", "--device", "cpu", "--quick", "--payload", str(payload), "--work",
                   str(tmp_path / "work"), "--skip", "finetune", "--epochs", "1", "--budget", "120"])
    record = json.loads((tmp_path / "out" / "gpu_bench.json").read_text())
    assert rc == 0, record
    x = record["xray5"]
    assert x["rc"] == 0 and x["epochs_run"] == 1 and x["images_trained"] == 16 and x["e2e_img_per_s"] > 0
    assert record["skipped"]["finetune"] == "--skip" and (tmp_path / "out" / "xray5.log").is_file()
    if SHARED_CEILING.is_file():
        assert record["ceiling"]["row"]["best"] > 0 and record["ratios"]["e2e_vs_ceiling"] > 0
    else:
        assert "no " in record["skipped"]["ceiling"]


def test_the_work_folder_is_emptied_only_when_a_run_made_it(tmp_path):
    work = tmp_path / "w"
    assert gpu.fresh_work_folder(work) == work and (work / "logs").is_dir()
    (work / "old.txt").write_text("x")
    gpu.fresh_work_folder(work)
    assert not (work / "old.txt").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="not empty"):
        gpu.fresh_work_folder(tmp_path / "mine")
    assert (tmp_path / "mine" / "keep.txt").exists()
