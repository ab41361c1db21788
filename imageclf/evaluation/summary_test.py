"""model.summary(): the seeds' published parameter counts, shapes, the diagram, the CLI."""

from __future__ import annotations

import json

import pytest
from torch import nn

import imageclf
from imageclf.cli import main
from imageclf.evaluation.summary import summarize
from imageclf.models import create_model


@pytest.mark.parametrize("name, size, outputs, params", [
    ("xray_5block", 500, 1, 1_467_137),   # seed 002's model.summary()
    ("mnist_basic", 28, 10, 203_434),      # seed 004's network
])
def test_parameter_counts_match_the_seed_articles(name, size, outputs, params):
    s = summarize(create_model(name, 1, outputs, (size, size)), (1, size, size), name)
    assert s.total == params == s.trainable
    assert s.non_trainable == 0
    assert f"Total params: {params:,}" in s.to_text()


def test_rows_shapes_and_shared_layers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.act = nn.ReLU()
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = self.act(self.bn(self.conv(x)))
            x = self.act(x)                              # a layer called twice
            return self.head(x.mean((2, 3)))

    net = Net()
    net.head.weight.requires_grad_(False)
    s = summarize(net, (1, 10, 10))
    assert [(r.name, r.kind) for r in s.rows] == [("conv", "Conv2d"), ("bn", "BatchNorm2d"), ("act", "ReLU"),
                                                 ("act", "ReLU"), ("head", "Linear")]
    assert s.rows[0].output_shape == (1, 4, 8, 8) and s.rows[0].shape_text() == "(None, 4, 8, 8)"
    assert [r.params for r in s.rows] == [40, 8, 0, 0, 10]
    assert s.total == 58 and s.non_trainable == 8
    assert s.buffers == 9                                # running mean, var, batches tracked
    d = s.to_dict()
    assert d["layers"][4]["output_shape"] == [None, 2]


def test_diagram_png_and_svg(tmp_path):
    s = summarize(create_model("catsdogs_2conv", 1, 1, (32, 32)), (1, 32, 32))
    png = s.draw(tmp_path / "a.png")
    assert png.startswith(b"\x89PNG") and (tmp_path / "a.png").read_bytes() == png
    svg = s.draw(tmp_path / "a.svg").decode()
    assert "<svg" in svg and "features.3" in svg


def test_classifier_summary_and_cli(trained_run, tmp_path, capsys):
    s = imageclf.load(trained_run, device="cpu").summary()
    assert s.input_shape == (1, 32, 32) and s.name == "catsdogs-2conv"
    main(["summary", str(trained_run), "--diagram", str(tmp_path / "d.svg"),
          "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert "features.0 (Conv2d)" in out and f"Total params: {s.total:,}" in out
    assert json.loads((tmp_path / "s.json").read_text())["total_params"] == s.total
    assert (tmp_path / "d.svg").read_text().lstrip().startswith("<?xml")
    for argv in (["summary", str(trained_run), "--diagram", str(tmp_path / "d.pdf")],
                 ["summary", str(tmp_path / "nothing")]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
