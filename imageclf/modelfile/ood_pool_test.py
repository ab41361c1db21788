import numpy as np
import pytest
import torch
from torch import nn

from imageclf.core.errors import ModelFileError
from imageclf.modelfile.config import parse_config
from imageclf.modelfile.ood import OodPart, OodStats, fit_scorer, read_ood, save_ood
from imageclf.modelfile.ood_pool import FEATURE_CAP, GRID_CAP, FeaturePool, feature_pool, flattened_map


def test_a_flattened_map_is_pooled_in_blocks_of_each_channel_down_to_the_grid_cap():
    pool = feature_pool(32 * 24 * 24, grid=(32, 24, 24))  # mnist-basic's head input
    assert pool == FeaturePool(6, (32, 24, 24)) and pool.pooled_width(18432) == 512 <= GRID_CAP
    x = torch.randn(3, 32 * 24 * 24)
    maps = x.reshape(3, 32, 24, 24)
    got = pool(x)
    assert got.shape == (3, 512)
    # value (c, i, j) is the mean of channel c's 6 x 6 block (i, j), in the flattening's order
    torch.testing.assert_close(got[:, 4 * 4 * 5 + 4 * 2 + 3], maps[:, 5, 12:18, 18:24].mean((1, 2)))


def test_blocks_at_a_ragged_edge_count_the_zero_padding_and_runs_stay_for_flat_inputs():
    pool = feature_pool(3 * 10 * 7, cap=100, grid=(3, 10, 7), grid_cap=20)
    assert pool.size == 4 and pool.pooled_width(210) == 3 * 3 * 2
    x = torch.ones(2, 210)
    out = pool(x).reshape(2, 3, 3, 2)
    assert float(out[0, 0, 0, 0]) == 1.0 and float(out[0, 0, 2, 1]) == pytest.approx(2 * 3 / 16)
    assert feature_pool(FEATURE_CAP * 3 + 5) == FeaturePool(4)  # no map: runs, as before
    assert feature_pool(1000, grid=(10, 10, 10)) == FeaturePool()  # under the cap: not pooled
    # channels alone over the grid cap: a global average per channel
    assert feature_pool(1024 * 9, grid=(1024, 3, 3)) == FeaturePool(3, (1024, 3, 3))


def test_the_map_a_head_sees_flattened_is_found_and_a_dense_layer_between_hides_it():
    direct = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    assert flattened_map(direct, direct[2], torch.zeros(1, 1, 8, 8)) == (4, 6, 6)
    hidden = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 8), nn.ReLU(), nn.Linear(8, 2))
    assert flattened_map(hidden, hidden[4], torch.zeros(1, 1, 8, 8)) is None


def test_block_pooled_statistics_round_trip_and_old_run_pooled_ones_read_as_before(tmp_path):
    rng = np.random.default_rng(0)
    feats = (rng.normal(0, 1, (200, 4 * 8 * 8)) + 3).astype(np.float32)
    labels = np.arange(200) % 2
    pool = FeaturePool(4, (4, 8, 8))
    pooled = pool(torch.from_numpy(feats)).double().numpy()
    scorer = fit_scorer("mahalanobis", pooled, labels, pooled_by=pool)
    assert scorer.feature_dim == 16 and scorer.fits(256) and not scorer.fits(255)
    assert not fit_scorer("mahalanobis", pooled, labels, pooled_by=FeaturePool(4, (4, 4, 16))).fits(255)
    stats = OodStats("mahalanobis", [[OodPart("features", scorer)]], threshold=1.0)
    field = save_ood(tmp_path, stats)
    part = field["members"][0]["parts"][0]
    assert part["grid"] == [4, 8, 8] and part["pool"] == 4
    back = read_ood(tmp_path, field)
    x = torch.from_numpy(feats[:5])
    assert back.members[0][0].scorer.pooling == pool
    torch.testing.assert_close(back.members[0][0].scorer(x), scorer(x))
    runs = fit_scorer("knn", feats, labels, cap=64)  # a flat input: runs of 4, no grid recorded
    field = save_ood(tmp_path, OodStats("knn", [[OodPart("features", runs)]], threshold=1.0))
    assert "grid" not in field["members"][0]["parts"][0]
    assert read_ood(tmp_path, field).members[0][0].scorer.pooling == FeaturePool(4)


@pytest.mark.parametrize("grid", [[4, 8], [4, 8, 0], [4, 8, "8"], "488", [True, 8, 8]])
def test_a_malformed_grid_is_refused_by_the_config_schema(grid):
    base = {
        "format": "imageclf-model", "format_version": 1, "architecture": "x", "classes": ["a", "b"],
        "preprocessing": {"size": [8, 8], "channels": 1, "resize": "squash", "mean": None, "std": None},
    }
    part = {"source": "features", "method": "knn", "pool": 2, "scale": 1.0, "grid": grid}
    ood = {"method": "knn", "threshold": 1.0, "sha256": "x", "members": [{"parts": [part]}]}
    with pytest.raises(ModelFileError, match="malformed 'ood'"):
        parse_config({**base, "ood": ood})
    parse_config({**base, "ood": {**ood, "members": [{"parts": [{**part, "grid": [4, 8, 8]}]}]}})
