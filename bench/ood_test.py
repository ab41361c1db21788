"""bench.ood: the far-off inputs it makes, its measurement on a small trained model, its table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import ood
from imageclf.data import synthetic


def test_made_inputs_are_seeded_and_what_they_say():
    blank = ood.blank(5, 0)
    assert [int(b[0, 0]) for b in blank] == [0, 63, 127, 191, 255] and all(b.std() == 0 for b in blank)
    noise = ood.noise(8, 1)
    assert all(n.std() > 30 for n in noise) and {n.ndim for n in noise} == {2, 3}
    np.testing.assert_array_equal(ood.noise(8, 1)[3], noise[3])
    text = ood.text(4, 2)
    # A page with some ink on it: mostly background, a few percent of strokes.
    assert all(t.shape == (128, 128) and 0.005 < (np.abs(t.astype(int) - int(t[0, 0])) > 60).mean() < 0.5
               for t in text)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A small trained model (catsdogs-2conv at 32 px gray: 128 head inputs) and its data."""
    import imageclf

    root = tmp_path_factory.mktemp("ood")
    data = synthetic.make_npz(root / "d.npz", n_train=96, n_val=48, size=28)
    run = root / "run"
    imageclf.train(data, "catsdogs-2conv", run, device="cpu", img_size=32, channels=1, epochs=2,
                   steps_per_epoch=None, batch_size=16)
    return run, data


def test_measure_scores_a_trained_model(tiny_run):
    run, data = tiny_run
    result = ood.measure(str(run), str(data), ["blank", "noise"], 20, 0, compare=True)
    assert result["val_images"] == 48 and result["val_kept"] >= 0.98
    assert result["kinds"]["blank"]["auc"] == 1.0 and result["kinds"]["blank"]["refused"] == 1.0
    assert set(result["compare"]) >= {"mahalanobis + knn + flat", "knn", "max-logit", "energy"}
    table = ood.markdown(result)
    assert "| blank | 20 | 1.0000 | 100.0% |" in table and "| scorer | blank | noise | min |" in table


def test_study_refits_every_cap_and_bank_in_memory_and_leaves_the_run_alone(tiny_run):
    run, data = tiny_run
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = ood.study(str(run), str(data), ["blank", "noise"], 10, 0, [2048, 64, 32], [4096, 16], repeats=2,
                       draws=2)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    rows = {(r["cap"], r["bank_asked"]): r for r in result["variants"]}
    assert len(rows) == 6 and result["train_fit_images"] == 96 and result["val_images"] == 48
    default, small = rows[(2048, 4096)], rows[(32, 16)]
    assert (default["features"], default["pool"], default["bank"]) == (128, "none", 96)  # all 96 banked
    assert (small["features"], small["pool"], small["bank"]) == (32, "runs of 4", 16)
    assert rows[(64, 16)]["pool"] == "runs of 2" and result["default_features"] == 128
    # The default variant is what training fitted: the same threshold, up to the float32 path.
    assert abs(default["threshold"] - result["stored_threshold"]) <= 1e-3 * result["stored_threshold"]
    assert small["macs"]["knn"] == 17 * 32 and small["macs"]["total"] < default["macs"]["total"]
    assert all(r["val_kept"] >= 0.97 and r["us_per_image"] > 0 for r in rows.values())
    assert default["kinds"]["blank"]["auc"] == 1.0 and len(small["draws"]) == 2
    assert max(default["auc_sd"].values()) == 0.0  # every training feature banked: the draws agree
    table = ood.study_markdown(result)
    assert "| 32 | 32 (runs of 4) | 16 |" in table and "| 2048 | 128 (none) | 96 | " in table
    assert "+0.0000" in table


def test_the_fit_size_study_refits_on_each_number_and_leaves_the_run_alone(tiny_run):
    from bench import ood_fit

    run, data = tiny_run
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = ood_fit.refit_rows(str(run), str(data), ["blank", "noise"], 10, [96, 40], draws=2)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert [(r["fit_images"], r["draw"]) for r in result["rows"]] == [(96, 0), (96, 1), (40, 0), (40, 1)]
    assert all(r["auc"]["blank"] == 1.0 and 0 <= r["auc"]["noise"] <= 1 for r in result["rows"])
    assert "| 40 | 1 |" in ood_fit.markdown(result)
