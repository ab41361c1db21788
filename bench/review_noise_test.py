"""The pure helpers of bench/review_noise.py."""

import pytest

from bench.review_noise import detection, index_of, recovered, spread


def test_recovered_is_the_share_of_the_noise_cost_given_back():
    assert recovered(0.96, 0.97, 0.98) == pytest.approx(0.5)
    assert recovered(0.96, 0.95, 0.98) == pytest.approx(-0.5)
    assert recovered(0.98, 0.97, 0.97) is None  # noise cost nothing: no share to speak of


def test_spread_of_one_and_of_several_values():
    assert spread([0.5]) == {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5}
    s = spread([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and (s["min"], s["max"]) == (1.0, 3.0)


def test_index_of_npz_item_paths():
    assert index_of("train[42]") == 42
    with pytest.raises(ValueError):
        index_of("val[3]")


def test_detection_counts_top_tenth_and_flagged_precision_recall():
    ranked = list(range(20))  # 0 and 1 in the top 10 % (2 of 20)
    d = detection(ranked, flagged={0, 5, 9}, truth={0, 1, 5, 19})
    assert d["top10_share"] == 0.5 and d["flagged_flipped"] == 2
    assert d["precision"] == pytest.approx(2 / 3) and d["recall"] == 0.5
    assert detection(ranked, set(), {0})["precision"] is None


def test_best_val_loss_row_is_the_first_lowest():
    from bench.review_noise import best_val_loss_row
    rows = [{"epoch": "1", "val_loss": "0.3"}, {"epoch": "2", "val_loss": "0.2"},
            {"epoch": "3", "val_loss": "0.2"}]
    assert best_val_loss_row(rows)["epoch"] == "2"
