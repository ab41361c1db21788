"""bench.quality: rows, the commands that reproduce them, and the markdown tables."""

from __future__ import annotations

import shlex

from bench import quality


def test_every_row_has_a_runnable_command():
    keys = [r.key for r in quality.ROWS]
    assert len(keys) == len(set(keys))
    for row in quality.ROWS:
        argv = shlex.split(quality.command(row).split("imageclf ", 1)[1])
        assert argv[:1] == ["train"] and argv[argv.index("--recipe") + 1] == row.recipe
        if row.retest_of:
            assert row.retest_of in keys


def test_none_and_lists_are_written_as_the_cli_reads_them():
    row = quality.Row("x", "xray", "xray-fast", {"ema": "none", "tta": [], "augment.horizontal_flip": False})
    cmd = quality.command(row)
    assert "--set ema=none" in cmd and "--set 'tta=[]'" in cmd and "augment.horizontal_flip=false" in cmd


def test_markdown_tables():
    base = {"group": "ablation", "note": "baseline", "val_auc": 0.99, "val_accuracy": 0.9, "val_loss": 0.2,
            "wall_s": 60.0, "command": "imageclf train a"}
    row = {"dataset": "PneumoniaMNIST", "recipe": "xray-fast", "group": "targets", "note": "", "model": "m",
           "img_size": 32, "val_accuracy": 0.9, "val_auc": 0.99, "epochs": 8, "best_epoch": 8,
           "wall_s": 120.0, "load": [[2.0, 1, 1], [3.0, 1, 1]], "command": "imageclf train b"}
    off = dict(base, note="no EMA", val_auc=0.98)
    text = quality.markdown({"rows": {"ablation/none-off": base, "ablation/ema-off": off, "t": row}})
    assert "| PneumoniaMNIST | xray-fast | m @ 32 | 0.9000 | 0.9900 | 8 | 2.0 min | 2.0 / 3.0 |" in text
    assert "| no EMA | 0.9800 | -0.0100 |" in text
