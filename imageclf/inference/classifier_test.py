import csv
import io

import numpy as np
import pytest
from PIL import Image

import imageclf
from imageclf.core.errors import BadImageError, ImageclfError


@pytest.fixture(scope="module")
def model(trained_run):
    return imageclf.load(trained_run, device="cpu")


def test_predict_folder_agrees_with_evaluate(model, tiny_folders):
    result = model.evaluate(tiny_folders, split="test")
    preds = model.predict(tiny_folders / "test")
    by_path = dict(zip(preds.paths, preds.probs))
    assert len(by_path) == len(result.paths)
    for path, probs in zip(result.paths, result.probs):
        np.testing.assert_allclose(by_path[path], probs, atol=1e-6)


def test_evaluate_keeps_file_order_and_labels(model, tiny_folders):
    result = model.evaluate(tiny_folders, split="test")
    assert result.paths == sorted(result.paths, key=lambda p: ("PNEUMONIA" in p, p))
    assert all(("PNEUMONIA" in p) == bool(y) for p, y in zip(result.paths, result.labels))


def test_paths_arrays_pil_and_bytes_give_the_same_probabilities(model, tiny_folders):
    path = sorted((tiny_folders / "test" / "NORMAL").iterdir())[0]
    img = Image.open(path)
    by_path = model.predict([path]).probs[0]
    np.testing.assert_allclose(model.predict([np.asarray(img)]).probs[0], by_path, atol=1e-6)
    np.testing.assert_allclose(model.predict([img]).probs[0], by_path, atol=1e-6)
    np.testing.assert_allclose(model.predict([path.read_bytes()]).probs[0], by_path, atol=1e-6)


def test_probabilities_sum_to_one_and_labels_follow_threshold(model, tiny_folders):
    preds = model.predict(str(tiny_folders / "val" / "*" / "*.png"))
    assert len(preds) == 64
    np.testing.assert_allclose(preds.probs.sum(1), 1.0, atol=1e-6)
    expected = ["PNEUMONIA" if p >= model.threshold else "NORMAL" for p in preds.probs[:, 1]]
    assert preds.labels == expected


def test_csv_output(model, tiny_folders, tmp_path):
    preds = model.predict(tiny_folders / "test" / "NORMAL")
    preds.to_csv(tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "predicted", "p_NORMAL", "p_PNEUMONIA", "ood_score", "outside"]
    assert len(rows) == 32
    assert all(r["outside"] == str(o) for r, o in zip(rows, preds.outside))


def test_bad_image_named_or_skipped(model, tmp_path, tiny_folders):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = sorted((tiny_folders / "test" / "NORMAL").iterdir())[0]
    with pytest.raises(BadImageError, match="broken.png"):
        model.predict([good, bad])
    preds = model.predict([good, bad], skip_bad=True)
    assert preds.paths == [str(good)] and preds.errors[0][0] == str(bad)


@pytest.mark.parametrize("target", ["missing.png", "nothing/*.png"])
def test_missing_inputs(model, tmp_path, target):
    with pytest.raises(ImageclfError):
        model.predict([str(tmp_path / target)])


def test_rgb_image_into_gray_model(model):
    rgb = Image.new("RGB", (50, 40), (255, 0, 0))
    buf = io.BytesIO()
    rgb.save(buf, "JPEG")
    assert model.predict([buf.getvalue()]).probs.shape == (1, 2)


def test_files_are_predicted_in_the_fewest_equal_batches(model, tiny_folders, monkeypatch):
    from imageclf.inference.classifier import even_batch_size

    assert [even_batch_size(n, 128) for n in (0, 1, 128, 129, 400)] == [1, 1, 128, 65, 100]
    paths = sorted(str(p) for p in (tiny_folders / "test").rglob("*.png"))[:6]
    seen, real = [], model.predictor.predict_scored

    def spy(images, batch_size=None, on_batch=None):
        seen.append(batch_size)
        return real(images, batch_size, on_batch)

    monkeypatch.setattr(model.predictor, "predict_scored", spy)
    assert len(paths) == 6 and len(model.predict(paths, batch_size=4)) == 6
    assert set(seen) == {3}  # 6 in batches of at most 4: 3 + 3, not 4 + 2


def test_files_expanded_once_are_not_listed_or_checked_again(tiny_folders, monkeypatch):
    from imageclf.inference import predictions

    files = predictions.expand_inputs([tiny_folders / "test"])
    assert len(files) > 1 and all(f.endswith(".png") for f in files)

    def no_stat(*_):
        raise AssertionError("stat called again")

    monkeypatch.setattr(predictions.os, "stat", no_stat)
    assert predictions.expand_inputs(files) is files
    with pytest.raises(AssertionError, match="stat called again"):
        predictions.expand_inputs(list(files))  # a plain list is checked, as before
