"""The model file: ``model.safetensors`` (weights) + ``config.json`` (everything else).

Loading reads JSON and safetensors only, never pickle: a shared model folder cannot run
code. The config is checked against a schema, the weights' hash against the config, and
every tensor's shape against the architecture, each with a message that says what is
wrong.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import ModelFileError
from .images import Preprocessing
from .io import atomic_write_text, atomic_write_with

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "imageclf-model"
FORMAT_VERSION = 1


@dataclass
class ModelConfig:
    """What a model file says about its model, besides the weights."""

    architecture: str
    classes: list[str]
    preprocessing: Preprocessing
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    temperature: float = 1.0
    tta: list[str] = field(default_factory=list)
    name: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    members: list[dict[str, Any]] = field(default_factory=list)
    weights_sha256: str = ""

    @property
    def num_outputs(self) -> int:
        return 1 if len(self.classes) == 2 else len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **d}


# field -> (accepted types, required)
_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), True),
    "format_version": ((int,), True),
    "architecture": ((str,), True),
    "classes": ((list,), True),
    "preprocessing": ((dict,), True),
    "architecture_kwargs": ((dict,), False),
    "threshold": ((float, int), False),
    "temperature": ((float, int), False),
    "tta": ((list,), False),
    "name": ((str,), False),
    "recipe": ((dict,), False),
    "metrics": ((dict,), False),
    "data": ((dict,), False),
    "versions": ((dict,), False),
    "created": ((str,), False),
    "members": ((list,), False),
    "weights_sha256": ((str,), False),
}


def parse_config(d: Any, where: str = CONFIG_FILE) -> ModelConfig:
    """Validate a config.json's content against the schema and build a ModelConfig."""
    if not isinstance(d, dict):
        raise ModelFileError(f"{where}: must be a JSON object")
    for key, (types, required) in _SCHEMA.items():
        if key not in d:
            if required:
                raise ModelFileError(f"{where}: missing field {key!r}")
            continue
        if not isinstance(d[key], types) or isinstance(d[key], bool) and bool not in types:
            raise ModelFileError(f"{where}: field {key!r} has the wrong type ({type(d[key]).__name__})")
    unknown = sorted(set(d) - set(_SCHEMA))
    if unknown:
        raise ModelFileError(f"{where}: unknown fields {unknown}")
    if d["format"] != FORMAT:
        raise ModelFileError(f"{where}: not an imageclf model (format {d['format']!r})")
    if d["format_version"] > FORMAT_VERSION:
        raise ModelFileError(f"{where}: format version {d['format_version']} is newer than this "
                             f"imageclf reads ({FORMAT_VERSION}); upgrade imageclf")
    classes = d["classes"]
    if len(classes) < 2 or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise ModelFileError(f"{where}: 'classes' must be two or more distinct names")
    if not 0.0 <= float(d.get("threshold", 0.5)) <= 1.0:
        raise ModelFileError(f"{where}: threshold {d['threshold']} is not in [0, 1]")
    if float(d.get("temperature", 1.0)) <= 0:
        raise ModelFileError(f"{where}: temperature must be positive")
    try:
        pre = Preprocessing.from_dict(d["preprocessing"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ModelFileError(f"{where}: bad 'preprocessing' ({exc})") from None
    except Exception as exc:  # ConfigError from Preprocessing's own checks
        raise ModelFileError(f"{where}: bad 'preprocessing' ({exc})") from None
    fields_ = {k: v for k, v in d.items() if k not in ("format", "format_version", "preprocessing")}
    return ModelConfig(preprocessing=pre, **fields_)


def library_versions() -> dict[str, str]:
    import numpy
    import PIL

    from . import __version__

    return {"imageclf": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(run_dir: str | Path, model: nn.Module, config: ModelConfig) -> Path:
    """Write weights and config atomically; the config records the weights' hash."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = run_dir / MODEL_FILE
    atomic_write_with(weights, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
    config.weights_sha256 = _sha256(weights)
    config.versions = config.versions or library_versions()
    config.created = config.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
    return run_dir


def read_config(run_dir: str | Path) -> ModelConfig:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ModelFileError(f"{run_dir}: no such model folder")
    path = run_dir / CONFIG_FILE if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise ModelFileError(f"{run_dir}: no {CONFIG_FILE} (is this a finished training run?)")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    return parse_config(d, str(path))


def load_weights(run_dir: str | Path, model: nn.Module, config: ModelConfig) -> nn.Module:
    """Load ``model.safetensors`` into ``model`` after checking hash, names and shapes."""
    run_dir = Path(run_dir)
    path = run_dir / MODEL_FILE
    if not path.is_file():
        raise ModelFileError(f"{run_dir}: no {MODEL_FILE}")
    if config.weights_sha256 and _sha256(path) != config.weights_sha256:
        raise ModelFileError(f"{path}: does not match {CONFIG_FILE} (the weights or the config "
                             "were edited, or come from different runs)")
    expected = model.state_dict()
    try:
        with safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
            missing = sorted(set(expected) - names)
            extra = sorted(names - set(expected))
            if missing or extra:
                raise ModelFileError(
                    f"{path}: tensors do not fit architecture {config.architecture!r} "
                    f"(missing {missing[:3]}, unexpected {extra[:3]})")
            state = {}
            for name in expected:
                t = f.get_tensor(name)
                if tuple(t.shape) != tuple(expected[name].shape):
                    raise ModelFileError(
                        f"{path}: tensor {name!r} has shape {tuple(t.shape)}, the architecture "
                        f"needs {tuple(expected[name].shape)}")
                state[name] = t
    except ModelFileError:
        raise
    except Exception as exc:  # safetensors raises its own error types on a corrupt header
        raise ModelFileError(f"{path}: not a valid safetensors file ({exc})") from None
    model.load_state_dict(state)
    return model
