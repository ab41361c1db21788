"""bench.quality: rows, the commands that reproduce them, and the markdown tables."""

from __future__ import annotations

import shlex

from bench import quality


def test_every_row_has_a_runnable_command():
    keys = [r.key for r in quality.ROWS]
    assert len(keys) == len(set(keys))
    for row in quality.ROWS:
        if row.members:
            assert set(row.members) <= set(keys)
            built, evaluated = (shlex.split(c) for c in quality.command(row).split(" && "))
            assert built[:2] == ["imageclf", "ensemble"] and evaluated[:2] == ["imageclf", "evaluate"]
            assert built[built.index("--out") + 1] == evaluated[2] and evaluated[-2:] == ["--split", "val"]
            continue
        argv = shlex.split(quality.command(row).split("imageclf ", 1)[1])
        assert argv[:1] == ["train"] and argv[argv.index("--recipe") + 1] == row.recipe
        if row.precision != "auto":
            assert argv[argv.index("--precision") + 1] == row.precision
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
    # A row recorded on another CPU than the header's says where its wall time was measured.
    machine = {"cpu_model": "Xeon", "cpus": 2, "cores_per_socket": 2, "threads_per_core": 1,
               "memory_mb": 1024, "python": "3", "torch": "2", "torchvision": "0", "numpy": "2",
               "pillow": "1", "commit": "c",
               "dirty": False}
    rows = {"a": dict(row, cpu="Xeon"), "b": dict(row, cpu="EPYC")}
    text = quality.markdown({"machine": machine, "rows": rows})
    assert text.count("| 2.0 min |") == 1 and "| 2.0 min on EPYC |" in text


def test_an_ensemble_row_is_built_from_its_members_and_scored_on_their_carve(tmp_path, monkeypatch):
    import imageclf
    from imageclf.data import synthetic as testing

    data = testing.make_class_folders(tmp_path / "flat", n=32, size=32)
    monkeypatch.setattr(quality, "data_path", lambda dataset: data)
    monkeypatch.setitem(quality.DATASETS, "toy", ("toy", "flat"))
    runs, done = tmp_path / "runs", {}
    fast = dict(img_size=32, channels=1, epochs=1, steps_per_epoch=None, batch_size=8, split_seed=0)
    for seed in (0, 1):
        imageclf.train(data, "catsdogs-2conv", runs / f"m{seed}", device="cpu", seed=seed, **fast)
        row = quality.Row(f"m{seed}", "toy", "catsdogs-2conv", {"seed": seed, **fast})
        done[row.key] = quality.run_row(row, runs, done, adopt=True)   # read, not trained again
        assert done[row.key]["wall_s"] > 0 and done[row.key]["epochs"] == 1
        assert done[row.key]["load"] is None  # the load while it trained is not known
    ens = quality.run_row(quality.Row("ens", "toy", "ensemble", members=["m0", "m1"]), runs, done)
    assert (runs / "ens" / "config.json").is_file()
    assert ens["wall_s"] == round(done["m0"]["wall_s"] + done["m1"]["wall_s"], 1)
    scored = imageclf.load(runs / "ens", device="cpu").evaluate(data, split="val")
    assert len(scored.labels) == 4 and ens["val_accuracy"] == scored.metrics["accuracy"]
