import sys

import pytest

from bench import latency


def test_commands_time_help_first_then_each_backend():
    cmds = latency.commands("RUN", "x.png", ["onnx", "torch"], python="py")
    assert list(cmds) == ["imageclf --help", "predict --backend onnx", "predict --backend torch"]
    assert cmds["predict --backend torch"] == ["py", "-m", "imageclf.cli", "predict", "RUN", "x.png", "-q",
                                               "--backend", "torch"]


def test_summary_and_table_keep_the_first_run_apart():
    r = latency.summarise([0.9, 0.2, 0.3])
    assert r == {"median_s": 0.3, "min_s": 0.2, "max_s": 0.9, "first_s": 0.9, "runs": 3}
    assert "| `imageclf --help` | 0.30 | 0.20-0.90 | 0.90 |" in latency.table({"imageclf --help": r})


def test_a_failing_command_is_an_error_not_a_figure():
    with pytest.raises(SystemExit, match="failed"):
        latency.time_once([sys.executable, "-c", "raise SystemExit(3)"])
    assert latency.time_once([sys.executable, "-c", "pass"]) > 0


def test_cold_rounds_empty_the_page_cache_before_every_command_and_are_summarised_apart(monkeypatch):
    writes = []
    monkeypatch.setattr(latency, "drop_page_cache", lambda: writes.append(1))
    cmds = {"a": [sys.executable, "-c", "pass"], "b": [sys.executable, "-c", "pass"]}
    results = latency.measure(cmds, rounds=1, cold_rounds=2)
    assert len(writes) == 4  # 2 rounds x 2 commands, each before its own run
    assert results["a"]["runs"] == 1 and results["a"]["cold"]["runs"] == 2
    assert "cold page cache" in latency.table(results)
    assert "cold" not in latency.measure(cmds, rounds=1)["a"]


def test_dropping_the_page_cache_writes_3_and_says_when_it_needs_root(tmp_path, monkeypatch):
    drops = tmp_path / "drop_caches"
    monkeypatch.setattr(latency, "DROP_CACHES", drops)
    latency.drop_page_cache()
    assert drops.read_text() == "3\n"
    monkeypatch.setattr(latency, "DROP_CACHES", tmp_path / "missing" / "drop_caches")
    with pytest.raises(SystemExit, match="needs root"):
        latency.drop_page_cache()
