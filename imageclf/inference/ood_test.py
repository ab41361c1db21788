"""OOD scores end to end: fitted by training, stored, answered by predict, evaluate, ONNX and
ensembles; a model folder from before them still loads and predicts, and can be given them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import imageclf
from imageclf.cli import main
from imageclf.modelfile.artifact import CONFIG_FILE
from imageclf.modelfile.ood import OOD_FILE, OUTSIDE


def far_images() -> list[np.ndarray]:
    """Blank images (black, gray, white): flat, unlike any training disc on its noisy ground."""
    return [np.full((32, 32), v, np.uint8) for v in (0, 128, 255)]


def odd_images() -> list[np.ndarray]:
    """Uniform noise and a line of dark text on white: far, though a 3-epoch tiny model's
    features only rank them above its own kind (the bench measures real models)."""
    rng = np.random.default_rng(0)
    text = Image.new("L", (64, 64), 230)
    ImageDraw.Draw(text).text((4, 24), "hello world", fill=10)
    return [rng.integers(0, 256, (48, 48)).astype(np.uint8), np.asarray(text)]


def own_images(tiny_folders: Path, split: str = "val") -> list[str]:
    return sorted(str(p) for p in (tiny_folders / split).rglob("*.png"))


@pytest.fixture()
def old_run(tmp_path, trained_run) -> Path:
    """A copy of the trained run as a model folder written before OOD statistics existed."""
    run = tmp_path / "old"
    shutil.copytree(trained_run, run)
    config = json.loads((run / CONFIG_FILE).read_text())
    del config["ood"]
    (run / CONFIG_FILE).write_text(json.dumps(config))
    (run / OOD_FILE).unlink()
    return run


def test_training_stores_statistics_that_keep_validation_and_refuse_far_inputs(trained_run, tiny_folders):
    model = imageclf.load(trained_run, device="cpu")
    ood = model.config.ood
    assert (trained_run / OOD_FILE).is_file() and ood["method"] == "mahalanobis+knn" and ood["keep"] == 0.99
    assert ood["val_kept"] >= 0.99 and ood["val_images"] == 64
    own = model.predict(own_images(tiny_folders, "test"))
    assert own.outside.mean() <= 0.1  # unseen images of the training kind are answered
    assert model.predict(odd_images()).ood_scores.min() > np.median(own.ood_scores)
    far = model.predict(far_images())
    assert far.outside.all() and far.labels == [OUTSIDE] * 3
    assert (far.ood_scores > model.ood_threshold).all()
    flagged = model.predict(far_images(), ood_mode="flag")
    assert flagged.labels == [model.classes[k] for k in flagged.indices] and flagged.outside.all()
    np.testing.assert_array_equal(flagged.probs, far.probs)  # the score only adds an answer
    header = far.to_csv().splitlines()[0]
    assert header == "path,predicted,p_NORMAL,p_PNEUMONIA,ood_score,outside"
    assert far.rows()[0]["predicted"] == OUTSIDE and far.rows()[0]["outside"] is True


def test_a_folder_from_before_ood_loads_predicts_and_says_so_once(old_run, tiny_folders):
    notes = []

    class Recorder:
        def warn(self, text):
            notes.append(text)

        def task(self, *a, **k):
            from imageclf.core.progress import QUIET

            return QUIET.task(*a, **k)

    model = imageclf.load(old_run, device="cpu")
    assert model.ood_threshold is None and model.ood is None
    first = model.predict(own_images(tiny_folders)[:4], reporter=Recorder())
    model.predict(far_images(), reporter=Recorder())
    assert first.ood_scores is None and not first.outside.any()
    assert model.predict(far_images()).labels[0] in model.classes  # answered with a class, as before
    assert len(notes) == 1 and "no out-of-distribution statistics" in notes[0]
    assert "ood_score" not in first.to_csv().splitlines()[0]


def test_imageclf_ood_fits_statistics_for_an_old_folder(old_run, tiny_folders, capsys):
    main(["ood", str(old_run), str(tiny_folders), "--keep", "0.95", "--quiet"])
    model = imageclf.load(old_run, device="cpu")
    assert model.config.ood["keep"] == 0.95 and model.predict(far_images()).outside.all()
    assert "threshold" in capsys.readouterr().out
    assert "keep 95%" in (old_run / "README.md").read_text()  # the card written again


def test_evaluate_reports_the_share_answered_and_keeps_accuracy(trained_run, tiny_folders):
    model = imageclf.load(trained_run, device="cpu")
    result = model.evaluate(tiny_folders, split="test")
    ood = result.metrics["ood"]
    assert ood["answered"] + ood["outside"] == 64 and ood["threshold"] == model.ood_threshold
    assert result.ood_scores is not None and len(result.ood_scores) == 64
    probs = model.predict_arrays(np.stack([model.prepare(p) for p in result.paths]))
    np.testing.assert_allclose(result.probs, probs, atol=1e-6)
    assert "within the threshold" in result.report()
    assert "ood" in json.loads(result.to_json())


def test_onnx_export_carries_the_score(trained_run, tmp_path):
    from imageclf.inference.backends import load_backend
    from imageclf.modelfile.onnx import export_onnx

    torch_model = imageclf.load(trained_run, device="cpu")
    images = np.stack([torch_model.prepare(x) for x in far_images()])
    want_p, want_s = torch_model.predict_scored(images)
    path = export_onnx(torch_model, tmp_path / "m.onnx")
    onnx_model = load_backend(path, "onnx")
    got_p, got_s = onnx_model.predict_scored(images)
    np.testing.assert_allclose(got_p, want_p, atol=1e-4)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-3)
    assert onnx_model.ood_threshold == torch_model.ood_threshold
    assert onnx_model.predict(far_images()).labels == [OUTSIDE] * 3


def test_an_ensemble_carries_its_members_scores(trained_run, tiny_folders, tmp_path):
    from imageclf.modelfile.ensemble import build_ensemble

    single = imageclf.load(trained_run, device="cpu")
    out = build_ensemble([trained_run, trained_run], tmp_path / "ens")
    ens = imageclf.load(out, device="cpu")
    assert ens.config.ood["method"] == "ensemble" and ens.ood_threshold == 1.0
    inputs = [*own_images(tiny_folders)[:6], *far_images()]
    a, b = single.predict(inputs), ens.predict(inputs)
    np.testing.assert_array_equal(a.outside, b.outside)  # two equal members: the member's verdict
    np.testing.assert_allclose(b.ood_scores, a.ood_scores / single.ood_threshold, rtol=1e-4)
    assert (out / "README.md").is_file()


def test_fit_ood_pools_to_the_cap_and_banks_the_stated_number(trained_run, tiny_folders):
    from imageclf.data.transforms import batch_input
    from imageclf.inference.ood import fit_ood
    from imageclf.modelfile.ood import ScoredNet

    model = imageclf.load(trained_run, device="cpu")
    train = np.stack([model.prepare(p) for p in own_images(tiny_folders, "train")])
    val = np.stack([model.prepare(p) for p in own_images(tiny_folders)])
    labels = np.arange(len(train)) % 2
    args = (model.model, train, labels, val, model.preprocessing, model.device)
    default = {p.scorer.method: p.scorer for p in fit_ood(*args).members[0]}
    assert default["knn"].pool == 1 and tuple(default["knn"].bank.shape) == (64, 128)  # all 64, unpooled
    stats = fit_ood(*args, cap=32, bank=16)
    small = {p.scorer.method: p.scorer for p in stats.members[0]}
    assert small["mahalanobis"].pool == 4 and small["mahalanobis"].feature_dim == 32
    assert tuple(small["knn"].bank.shape) == (16, 32) and stats.info["feature_dim"] == 128
    _, scores = ScoredNet(model.model, stats)(batch_input(val[:4], model.preprocessing, model.device))
    assert scores.shape == (4,) and stats.info["val_kept"] >= 0.98


def test_fit_ood_fits_on_as_many_images_as_its_features_need(trained_run, tiny_folders):
    from imageclf.inference.ood import FIT_PER_FEATURE, fit_ood

    model = imageclf.load(trained_run, device="cpu")
    train = np.stack([model.prepare(p) for p in own_images(tiny_folders, "train")])
    val = np.stack([model.prepare(p) for p in own_images(tiny_folders)])
    args = (model.model, train, np.arange(len(train)) % 2, val, model.preprocessing, model.device)
    assert fit_ood(*args).info["train_images"] == len(train) == 64  # 128 features: all of them
    # Two pooled features need 2 x FIT_PER_FEATURE images, and the bank of 8 no more.
    assert fit_ood(*args, cap=2, bank=8).info["train_images"] == 2 * FIT_PER_FEATURE < 64
    assert fit_ood(*args, cap=2, bank=48).info["train_images"] == 48  # never fewer than the bank


def test_the_fitted_threshold_keeps_what_prediction_keeps(trained_run, tiny_folders):
    from imageclf.inference.forward import predict_scored
    from imageclf.inference.ood import fit_ood
    from imageclf.modelfile.ood import ScoredNet

    model = imageclf.load(trained_run, device="cpu")
    train = np.stack([model.prepare(p) for p in own_images(tiny_folders, "train")])
    val = np.stack([model.prepare(p) for p in own_images(tiny_folders)])
    stats = fit_ood(model.model, train, np.arange(len(train)) % 2, val, model.preprocessing, model.device,
                    keep=0.9, batch_size=16)
    _, scores = predict_scored(ScoredNet(model.model, stats), val, model.preprocessing, device=model.device,
                               batch_size=16)
    assert float(np.mean(scores <= stats.threshold)) == stats.info["val_kept"] >= 0.9
    assert np.isclose(scores, stats.threshold, rtol=2e-5, atol=0).any()  # just above a scored image's


def test_a_head_on_a_flattened_map_is_scored_on_its_blocks_alike_in_pytorch_and_onnx(tiny_folders, tmp_path):
    from imageclf.conftest import TINY
    from imageclf.inference.backends import load_backend
    from imageclf.modelfile.onnx import export_onnx
    from imageclf.modelfile.ood_pool import GRID_CAP

    run = tmp_path / "mnist"
    imageclf.train(tiny_folders, "mnist-basic", run, device="cpu", **{**TINY, "epochs": 1})
    model = imageclf.load(run, device="cpu")
    parts = model.config.ood["members"][0]["parts"]
    # mnist-basic at 32 px: its head sees 32 maps of 28 x 28 (25,088 values), pooled in 7 x 7 blocks
    assert model.config.ood["feature_dim"] == 32 * 28 * 28
    assert [p.get("grid") for p in parts[:2]] == [[32, 28, 28]] * 2 and parts[0]["pool"] == 7
    assert model.ood.members[0][0].scorer.feature_dim == 32 * 4 * 4 <= GRID_CAP
    images = np.stack([model.prepare(x) for x in [*own_images(tiny_folders)[:5], *far_images()]])
    want_p, want_s = model.predict_scored(images)
    onnx_model = load_backend(export_onnx(model, tmp_path / "m.onnx"), "onnx")
    got_p, got_s = onnx_model.predict_scored(images)
    np.testing.assert_allclose(got_p, want_p, atol=1e-4)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-3)
