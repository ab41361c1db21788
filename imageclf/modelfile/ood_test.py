"""The OOD scorers' arithmetic, the threshold, and the statistics file checked like the weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from imageclf.core.errors import ModelFileError
from imageclf.modelfile.artifact import parse_config
from imageclf.modelfile.ood import (
    OOD_FILE,
    OodPart,
    OodStats,
    ScoredNet,
    combine_members,
    fit_scorer,
    pixel_stats,
    read_ood,
    save_ood,
    threshold_for,
)


def _clusters(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    scale = np.linspace(0.5, 3.0, d)  # unequal spreads: Euclidean and Mahalanobis differ
    feats = rng.normal(0, 1, (n, d)) * scale + 10.0 + labels[:, None] * 4.0  # positive, as after a ReLU
    return feats.astype(np.float32), labels


def test_mahalanobis_matches_the_inverse_covariance_formula():
    feats, labels = _clusters()
    scorer = fit_scorer("mahalanobis", feats, labels)
    x = np.random.default_rng(1).normal(0, 3, (5, feats.shape[1])).astype(np.float32)
    means = np.stack([feats[labels == c].mean(0) for c in (0, 1)]).astype(np.float64)
    centred = feats - means[labels]
    cov = centred.T.astype(np.float64) @ centred / len(feats)
    shrink = max(0.05, len(cov) / (len(cov) + len(feats)))
    cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov))
    prec = np.linalg.inv(cov)
    want = np.min([np.einsum("nd,de,ne->n", x - m, prec, x - m) for m in means], 0)
    got = scorer(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3)


def test_scores_rise_away_from_the_training_features():
    feats, labels = _clusters()
    # Far in place and in direction (knn compares directions: a shift along the data is not far).
    far = (np.random.default_rng(2).normal(0, 1, (50, feats.shape[1])) * 5 - 20).astype(np.float32)
    for method in ("mahalanobis", "knn"):
        scorer = fit_scorer(method, feats, labels)
        inside = scorer(torch.from_numpy(feats[200:250])).numpy()
        outside = scorer(torch.from_numpy(far)).numpy()
        assert outside.min() > np.quantile(inside, 0.99), method


def test_knn_distance_is_zero_on_a_banked_point():
    feats, labels = _clusters(n=50)
    scorer = fit_scorer("knn", feats, labels)
    scorer.k = 1
    assert float(scorer(torch.from_numpy(feats[:3])).abs().max()) < 1e-3  # the bank is half precision


def test_flat_scores_blank_images_far_above_textured_ones():
    rng = np.random.default_rng(0)
    textured = torch.from_numpy(rng.normal(0.5, 0.2, (64, 1, 16, 16)).astype(np.float32))
    scorer = fit_scorer("flat", pixel_stats(textured).numpy(), np.zeros(64, int))
    blank = torch.full((3, 1, 16, 16), 0.7)
    assert float(scorer(pixel_stats(blank)).min()) > 1e3
    assert float(torch.quantile(scorer(pixel_stats(textured)), 0.5)) < 1.0


def test_threshold_keeps_the_stated_share():
    scores = np.random.default_rng(0).exponential(1.0, 1000)
    for keep in (0.5, 0.9, 0.99, 1.0):
        t = threshold_for(scores, keep)
        kept = np.mean(scores <= t)
        assert kept >= keep and kept - 1 / len(scores) < keep  # not one image more than the share
        assert np.mean(scores * (1 + 1e-6) <= t) == kept  # rounding elsewhere keeps the same images
    close = np.array([1.0, 2.0, 2.0 + 1e-9])
    assert 2.0 < threshold_for(close, 2 / 3) < 2.0 + 1e-9  # never past the next score


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(self.body(x))


def _stats(net: nn.Module) -> OodStats:
    x = torch.rand(40, 1, 8, 8)
    with torch.no_grad():
        feats = net.body(x).numpy()
    labels = np.arange(40) % 2
    parts = [
        OodPart("features", fit_scorer("mahalanobis", feats, labels), 2.0),
        OodPart("pixels", fit_scorer("flat", pixel_stats(x).numpy(), labels), 1.0),
    ]
    return OodStats("mahalanobis", [parts], threshold=3.0)


def test_scored_net_gives_the_network_logits_and_the_larger_scaled_part():
    torch.manual_seed(0)
    net = _Tiny().eval()
    stats = _stats(net)
    x = torch.rand(5, 1, 8, 8)
    logits, score = ScoredNet(net, stats)(x)
    torch.testing.assert_close(logits, net(x))
    feature_part = stats.members[0][0].scorer(net.body(x)) / 2.0
    pixel_part = stats.members[0][1].scorer(pixel_stats(x))
    torch.testing.assert_close(score, torch.maximum(feature_part, pixel_part))
    assert not net.fc._forward_hooks  # the hooks live for one call


def test_statistics_file_round_trips_and_a_changed_byte_is_refused(tmp_path):
    torch.manual_seed(0)
    net = _Tiny().eval()
    stats = _stats(net)
    field = save_ood(tmp_path, stats)
    back = read_ood(tmp_path, json.loads(json.dumps(field)))
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(ScoredNet(net, back)(x)[1], ScoredNet(net, stats)(x)[1])
    assert back.threshold == 3.0 and back.members[0][0].scale == 2.0
    data = bytearray((tmp_path / OOD_FILE).read_bytes())
    data[-1] ^= 1
    (tmp_path / OOD_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match config.json"):
        read_ood(tmp_path, field)
    (tmp_path / OOD_FILE).unlink()
    with pytest.raises(ModelFileError, match="missing"):
        read_ood(tmp_path, field)


def test_statistics_that_do_not_fit_the_network_are_refused(tmp_path):
    torch.manual_seed(0)
    stats = _stats(_Tiny())
    wider = _Tiny()
    wider.fc = nn.Linear(5, 1)
    with pytest.raises(ModelFileError, match="4 features values|4 features"):
        ScoredNet(wider, stats)


def test_a_malformed_ood_field_is_refused_by_the_config_schema():
    base = {
        "format": "imageclf-model",
        "format_version": 1,
        "architecture": "x",
        "classes": ["a", "b"],
        "preprocessing": {"size": [8, 8], "channels": 1, "resize": "squash", "mean": None, "std": None},
    }
    assert parse_config({**base, "ood": {}}).ood == {}
    with pytest.raises(ModelFileError, match="malformed 'ood'"):
        parse_config({**base, "ood": {"method": "mahalanobis", "threshold": "high", "sha256": "x"}})


def test_an_ensemble_averages_members_scores_divided_by_their_thresholds():
    torch.manual_seed(0)
    a, b = _Tiny().eval(), _Tiny().eval()
    sa, sb = _stats(a), _stats(b)
    sb.threshold = 6.0
    both = combine_members([sa, sb])
    assert both.threshold == 1.0 and both.member_thresholds == [3.0, 6.0]
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        parts = [
            torch.maximum(s.members[0][0].scorer(n.body(x)) / 2.0, s.members[0][1].scorer(pixel_stats(x)))
            for s, n in ((sa, a), (sb, b))
        ]
        got = both.score([a.body(x), b.body(x)], x)
    torch.testing.assert_close(got, (parts[0] / 3.0 + parts[1] / 6.0) / 2)
    assert combine_members([sa, None]) is None


def test_wide_features_are_pooled_to_a_covariance_that_fits(tmp_path):
    from imageclf.modelfile.ood import FEATURE_CAP, pool_features

    rng = np.random.default_rng(0)
    wide = rng.normal(0, 1, (30, FEATURE_CAP * 3 + 5)).astype(np.float32)  # mnist-basic's head sees 18,432
    scorer = fit_scorer("mahalanobis", wide, np.arange(30) % 2)
    assert scorer.pool == 4 and scorer.feature_dim == -(-wide.shape[1] // 4) <= FEATURE_CAP
    assert scorer.fits(wide.shape[1]) and not scorer.fits(wide.shape[1] + 8)
    x = torch.from_numpy(wide[:2])
    torch.testing.assert_close(pool_features(x, 4)[:, 0], x[:, :4].mean(1))
    stats = OodStats("mahalanobis", [[OodPart("features", scorer)]], threshold=1.0)
    back = read_ood(tmp_path, save_ood(tmp_path, stats))
    torch.testing.assert_close(back.members[0][0].scorer(x), scorer(x))


def _broadcast_reference(scorer, feats: torch.Tensor) -> torch.Tensor:
    """The formulation before the products (float32, as it ran): pool by a mean, whiten, then
    broadcast against every class mean."""
    x = feats
    pad = (-x.shape[1]) % scorer.pool
    x = torch.nn.functional.pad(x, (0, pad)).reshape(len(x), -1, scorer.pool).mean(-1)
    if scorer.method == "mahalanobis":
        z = x @ scorer.whiten
        return (z.unsqueeze(1) - scorer.means.unsqueeze(0)).pow(2).sum(-1).min(1).values
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return 1.0 - (unit @ scorer.bank.t()).topk(scorer.k, dim=1).values[:, -1]


@pytest.mark.parametrize("width", [40, 700, 2048 * 2 + 6])  # one block; several; pooled with a pad
def test_the_product_formulation_equals_the_broadcast_one(width):
    from imageclf.modelfile.ood import OodScorer

    rng = np.random.default_rng(width)
    n, classes = 600, 7
    labels = np.arange(n) % classes
    # Unequal spreads and class means far from the origin: the expansion's cancellation at its worst.
    feats = rng.normal(0, 1, (n, width)) * np.linspace(0.2, 3.0, width) + 30.0 + labels[:, None]
    feats = feats.astype(np.float32)
    probe = torch.from_numpy(np.concatenate([feats[:50], rng.normal(25, 8, (20, width))]).astype(np.float32))
    for method in ("mahalanobis", "knn"):
        scorer = fit_scorer(method, feats, labels)
        torch.testing.assert_close(scorer(probe), _broadcast_reference(scorer, probe), rtol=1e-5, atol=0)
    # A whitening that is not triangular (from another producer) takes the one-product path.
    torch.manual_seed(0)
    dense = OodScorer("mahalanobis", {"whiten": torch.randn(40, 40) / 6, "means": torch.randn(3, 40) + 5})
    assert len(dense.row_ends) == 1
    x = torch.randn(30, 40) + 2
    torch.testing.assert_close(dense(x), _broadcast_reference(dense, x), rtol=1e-5, atol=0)


def test_only_the_stored_statistics_are_written(tmp_path):
    feats, labels = _clusters(d=600)
    scorer = fit_scorer("mahalanobis", feats, labels)
    assert len(scorer.row_ends) > 1  # the whitening is split in blocks, held as derived buffers
    assert set(scorer.tensors()) == set(scorer.state_dict()) == {"whiten", "means"}
    stats = OodStats("mahalanobis", [[OodPart("features", scorer)]], threshold=1.0)
    back = read_ood(tmp_path, save_ood(tmp_path, stats))
    x = torch.from_numpy(feats[:5])
    torch.testing.assert_close(back.members[0][0].scorer(x), scorer(x))


def test_the_cap_and_bank_knobs_set_the_pooled_width_and_the_banked_features():
    from imageclf.core.errors import ConfigError
    from imageclf.modelfile.ood import feature_pool

    rng = np.random.default_rng(0)
    feats = (rng.normal(0, 1, (300, 1000)) + 5).astype(np.float32)
    labels = np.arange(300) % 3
    assert [feature_pool(1000).size, feature_pool(1000, 256).size, feature_pool(1000, 1000).size] == [1, 4, 1]
    maha = fit_scorer("mahalanobis", feats, labels, cap=256)
    assert maha.pool == 4 and maha.feature_dim == 250 and maha.fits(1000)
    knn = fit_scorer("knn", feats, labels, cap=256, bank=64)
    assert knn.pool == 4 and tuple(knn.bank.shape) == (64, 250)
    assert tuple(fit_scorer("knn", feats, labels).bank.shape) == (300, 1000)  # all, under KNN_BANK
    with pytest.raises(ConfigError, match="bank"):
        fit_scorer("knn", feats, labels, bank=0)
    with pytest.raises(ConfigError, match="cap"):
        fit_scorer("mahalanobis", feats, labels, cap=0)
