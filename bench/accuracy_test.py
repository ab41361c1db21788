import math

import pytest

from bench import accuracy

MACHINE = {"cpu_model": "Test CPU", "cpus": 2, "cores_per_socket": "2", "threads_per_core": "1",
           "memory_mb": 24576, "gpu": None, "python": "3.11", "torch": "2", "torchvision": "0",
           "numpy": "2", "pillow": "13", "commit": "abc1234", "dirty": False, "date": "2026-12-02"}


def test_compare_gives_the_difference_of_means_and_its_welch_standard_error():
    c = accuracy.compare([0.70, 0.72, 0.74], [0.66, 0.70])
    assert c["diff"] == pytest.approx(0.72 - 0.68)
    sem_a = 0.02 / math.sqrt(3)
    sem_b = math.sqrt(0.0008) / math.sqrt(2)
    assert c["diff_se"] == pytest.approx(math.sqrt(sem_a ** 2 + sem_b ** 2))
    assert (c["keras"]["min"], c["keras"]["max"]) == (0.66, 0.70)


def test_one_run_has_no_spread():
    s = accuracy.summary([0.9])
    assert (s["sd"], s["sem"], s["n"]) == (0.0, 0.0, 1)


def test_table_has_a_row_per_workload_with_the_signed_difference():
    record = {"command": "python -m bench.accuracy --seeds 2", "machine": MACHINE,
              "workloads": {"catsdogs-jpeg": accuracy.compare([0.7, 0.71], [0.72, 0.73])}}
    text = accuracy.table(record)
    assert "Test CPU" in text and "2026-12-02" in text
    row = next(line for line in text.splitlines() if line.startswith("| catsdogs-jpeg"))
    assert "-0.0200" in row and "n=2" in row
