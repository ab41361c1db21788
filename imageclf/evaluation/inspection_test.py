"""Dataset inspection: counts, sizes, modes, unreadable files, planted duplicates, the HTML page."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image, ImageFilter

import imageclf
from imageclf.cli import main
from imageclf.data import synthetic as testing


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Split folders with one exact and one resized-JPEG copy of training images in test,
    one truncated file, one RGB image and one odd-sized image."""
    root = testing.make_class_folders(tmp_path_factory.mktemp("insp") / "data", n=24, size=32,
                                      splits=("train", "test"))
    train = sorted((root / "train" / "NORMAL").glob("*.png"))
    shutil.copy(train[0], root / "test" / "NORMAL" / "copy_exact.png")
    # A smooth image (as radiographs are; the synthetic ones are mostly pixel noise) ...
    smooth = Image.open(train[1]).filter(ImageFilter.GaussianBlur(1.5))
    smooth.save(train[1])
    # ... and its copy, enlarged and JPEG-compressed: a near-duplicate, not an identical one.
    smooth.resize((48, 48), Image.BILINEAR).save(root / "test" / "NORMAL" / "copy_near.jpg", quality=85)
    data = sorted((root / "train" / "PNEUMONIA").glob("*.png"))[0].read_bytes()
    (root / "train" / "PNEUMONIA" / "broken.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.full((20, 40, 3), 128, np.uint8)).save(root / "train" / "NORMAL" / "wide_rgb.png")
    return root, train


@pytest.fixture(scope="module")
def result(planted):
    return imageclf.inspect(planted[0], "catsdogs-2conv", img_size=32, workers=1)


def test_counts_sizes_modes_and_unreadable(result):
    d = result.to_dict()
    train, test = d["splits"]["train"], d["splits"]["test"]
    assert train["images"] == 25 and test["images"] == 26     # 24 + extras, minus the broken file
    assert train["class_counts"] == {"NORMAL": 13, "PNEUMONIA": 12}
    assert [s for s in train["sizes"] if s[0] == 40] == [[40, 20, 1]]
    assert train["modes"] == {"L": 24, "RGB": 1}
    assert train["bit_depths"] == {"8": 24, "24": 1}
    assert len(train["unreadable"]) == 1 and train["unreadable"][0][0].endswith("broken.png")
    assert "truncated" in train["unreadable"][0][1] or "decoded" in train["unreadable"][0][1]
    assert test["modes"] == {"L": 26}


def test_planted_duplicates_are_found(result, planted):
    _, train = planted
    d = result.to_dict()["duplicates"]
    assert d["exact_counts"]["train/test"] == 1
    assert d["near_counts"]["train/test"] == 1
    (exact,) = d["exact_examples"]["train/test"]
    assert exact["a"] == str(train[0]) and exact["b"].endswith("copy_exact.png")
    (near,) = d["near_examples"]["train/test"]
    assert near["a"] == str(train[1]) and near["b"].endswith("copy_near.jpg")
    assert d["exact_counts"]["train/train"] == 0
    assert "train/test: 1 identical pairs, 1 near-duplicate pairs" in result.summary().replace(
        "duplicates ", "")


def test_samples_and_augmented_grid(result):
    assert set(result.samples) == {"NORMAL", "PNEUMONIA"}
    assert all(len(v) == 8 for v in result.samples.values())
    assert len(result.augmented) == 4
    name, original, draws = result.augmented[0]
    assert original.shape == (32, 32, 3) and len(draws) == 3  # the recipe's input: 32 px RGB
    assert draws[0].dtype == np.uint8 and draws[0].shape == original.shape
    # catsdogs-2conv flips and zooms: at least one draw differs from the original.
    assert any(not np.array_equal(d, original) for _, o, ds in result.augmented for d in ds)


def test_html_and_json(result, tmp_path):
    page = result.to_html(tmp_path / "i.html")
    for anchor in ("counts", "sizes", "unreadable", "duplicates", "samples", "augmented"):
        assert f'<section id="{anchor}">' in page
    assert "broken.png" in page and "copy_near.jpg" in page
    assert not re.search(r"https?://", page)
    d = json.loads(result.to_json(tmp_path / "i.json"))
    assert d["augmentation"]["recipe"] == "catsdogs-2conv"


def test_npz_inspection_finds_identical_arrays(tmp_path):
    path = testing.make_npz(tmp_path / "t.npz", n_train=40, n_val=10)
    npz = dict(np.load(path))
    npz["val_images"][3] = npz["train_images"][5]
    np.savez(path, **npz)
    d = imageclf.inspect(path, "mnist-basic").to_dict()
    assert d["duplicates"]["exact_counts"]["train/val"] == 1
    assert d["splits"]["train"]["sizes"] == [[28, 28, 40]]


def test_cli_exit_codes(planted, tmp_path, capsys):
    html = tmp_path / "page.html"
    main(["inspect", str(planted[0]), "--recipe", "catsdogs-2conv", "--img-size", "32", "--workers", "1",
          "--html", str(html), "--json", str(tmp_path / "p.json")])
    assert html.is_file() and "unreadable" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(tmp_path / "missing")])
    assert exc.value.code == 2
