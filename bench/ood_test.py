"""bench.ood: the far-off inputs it makes, its measurement on a small trained model, its table."""

from __future__ import annotations

import numpy as np

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


def test_measure_scores_a_trained_model(tmp_path, monkeypatch):
    import imageclf

    data = synthetic.make_npz(tmp_path / "d.npz", n_train=96, n_val=48, size=28)
    run = tmp_path / "run"
    imageclf.train(data, "catsdogs-2conv", run, device="cpu", img_size=32, channels=1, epochs=2,
                   steps_per_epoch=None, batch_size=16)
    result = ood.measure(str(run), str(data), ["blank", "noise"], 20, 0, compare=True)
    assert result["val_images"] == 48 and result["val_kept"] >= 0.98
    assert result["kinds"]["blank"]["auc"] == 1.0 and result["kinds"]["blank"]["refused"] == 1.0
    assert set(result["compare"]) >= {"mahalanobis + knn + flat", "knn", "max-logit", "energy"}
    table = ood.markdown(result)
    assert "| blank | 20 | 1.0000 | 100.0% |" in table and "| scorer | blank | noise | min |" in table
