"""The speed benchmark's harness: a --quick run of the tiny workload (no Keras), and its report."""

from __future__ import annotations

import json
import sys

from bench.__main__ import main
from bench.procmon import watch
from bench.report import append_to_benchmarks, check_targets, ratios


def test_quick_tiny_run_writes_the_record_and_the_table(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Quality\n\nkeep me\n")
    rc = main(["--quick", "--only", "tiny", "--variants", "default", "--no-keras", "--no-ceiling",
               "--backends", "torch,onnx,auto",
               "--root", str(tmp_path / "scratch"), "--results", str(tmp_path / "results"),
               "--benchmarks", str(md)])
    assert rc == 0
    record = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    run = record["workloads"]["tiny"]["imageclf"]["default"]
    train = run["train"]
    assert train["epochs_run"] == 1 and train["train_img_per_s"] > 0
    assert 0 < train["decode_done_s"] < train["first_epoch_end_s"] <= train["wall_s"]
    assert train["peak_pss_mb"] > 50 and train["main_peak_rss_mb"] > 50  # torch alone is more
    assert run["predict"]["images"] == 48 and 0 <= run["predict"]["accuracy"] <= 1
    backends = run["predict_backends"]
    assert run["predict"] == backends["auto"] and "error" not in run["export"]
    assert backends["torch"]["torch_imported"] and not backends["onnx"]["torch_imported"]
    assert backends["onnx"]["accuracy"] == backends["torch"]["accuracy"]
    assert record["machine"]["cpus"] >= 1 and record["machine"]["torch"]
    text = md.read_text()
    assert "## Quality\n\nkeep me\n" in text
    assert "## Speed" in text and "| tiny | imageclf default |" in text


def test_the_table_goes_at_the_end_of_the_speed_section_only(tmp_path):
    md = tmp_path / "B.md"
    md.write_text("# B\n\n## Speed\n\nintro\n\n### old run\n\nold\n\n## Serving\n\nserve text\n")
    append_to_benchmarks("### new run\n\nnew", md)
    text = md.read_text()
    assert text.index("old") < text.index("new run") < text.index("## Serving")
    assert text.endswith("## Serving\n\nserve text\n")
    md2 = tmp_path / "C.md"
    append_to_benchmarks("### first", md2)
    assert "## Speed" in md2.read_text() and md2.read_text().rstrip().endswith("### first")


def test_ratios_and_targets_come_from_the_same_run():
    entry = {"imageclf": {"default": {"train": {"train_img_per_s": 300.0, "loop_img_per_s": 330.0,
                                                "first_epoch_end_s": 10.0, "peak_pss_mb": 900.0},
                                      "predict": {"img_per_s": 1500.0, "accuracy": 0.95}}},
             "keras": {"train_img_per_s": 100.0, "predict_img_per_s": 400.0, "mean_epoch_s": 20.0,
                       "test_acc": 0.93},
             "ceiling": {"train": 250.0, "predict": 1800.0}}
    r = ratios(entry, "default")
    assert r["train_vs_keras"] == 3.0 and r["train_vs_ceiling"] == 1.2 and r["predict_vs_keras"] == 3.75
    assert r["first_epoch_vs_keras_epoch"] == 2.0 and r["accuracy_minus_keras"] == 0.02
    checks = {c["target"]: c["met"] for c in check_targets(
        entry, "default", {"train_vs_ceiling": 0.9, "train_vs_ceiling_moonshot": 1.5,
                           "peak_rss_mb_max": 3000.0})}
    assert checks == {"train_vs_ceiling": True, "train_vs_ceiling_moonshot": False,
                      "peak_rss_mb_max": True, "accuracy_vs_keras": True}


def test_watch_timestamps_lines_and_samples_memory():
    code = "import time; print('a', flush=True); x = bytearray(200 * 2**20); time.sleep(0.6); print('b')"
    w = watch([sys.executable, "-c", code], interval=0.05)
    assert w.returncode == 0 and [line for _, line in w.lines] == ["a", "b"]
    assert w.first("a") < w.first("b") <= w.seconds
    assert w.main_peak_rss_mb > 150  # the 200 MB buffer was seen


def test_replace_block_keeps_the_text_around_it(tmp_path):
    from bench.report import replace_block

    path = tmp_path / "B.md"
    path.write_text("# B\n\n## Speed\n\nfast\n\n## Model quality\n\nanalysis\n\n## Serving\n\nok\n")
    replace_block("| t | 1 |", path, "## Model quality", "quality")
    replace_block("| t | 2 |", path, "## Model quality", "quality")
    text = path.read_text()
    assert text.count("<!-- quality:begin -->") == 1 and "| t | 1 |" not in text
    assert text.index("analysis") < text.index("| t | 2 |") < text.index("## Serving")
    assert text.startswith("# B\n\n## Speed\n\nfast\n") and text.endswith("## Serving\n\nok\n")
    replace_block("x", tmp_path / "new.md", "## Model quality", "quality")
    fresh = (tmp_path / "new.md").read_text()
    assert "## Model quality\n\n<!-- quality:begin -->\nx\n<!-- quality:end -->" in fresh


def test_an_error_cell_is_its_exception_on_one_line():
    from bench.report import _error

    trace = "RunFailed: probe exited with 1:\nTraceback (most recent call last):\n  x\nImageclfError: refused"
    assert _error(trace) == "ImageclfError: refused"
    assert "\n" not in _error("a\nb\n") and _error("") == "?"


def test_warming_the_page_cache_reads_every_file_once_and_passes_over_a_broken_one(tmp_path):
    from bench.runners import warm_page_cache

    (tmp_path / "train" / "cats").mkdir(parents=True)
    (tmp_path / "train" / "cats" / "a.png").write_bytes(b"x" * 3_000_000)
    (tmp_path / "b.jpg").write_bytes(b"y" * 1_000_000)
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert {k: v for k, v in warm_page_cache(tmp_path).items() if k != "seconds"} == {"files": 2, "mb": 4.0}
