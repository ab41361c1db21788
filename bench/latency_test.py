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
