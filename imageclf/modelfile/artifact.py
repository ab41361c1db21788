"""The model file: ``model.safetensors`` (weights) + ``config.json`` (everything else).

Loading reads JSON and safetensors only, never pickle: a shared model folder cannot run
code. The config is checked against a schema, the weights' hash against the config, and
every tensor's shape against the architecture, each with a message that says what is
wrong.

The config.json part (:class:`ModelConfig`, :func:`parse_config`, :func:`read_config`, the
run folder's file names) is torch-free, in :mod:`imageclf.modelfile.config`; it is
re-exported here so that importers of this module keep working.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy
import PIL
import torch
from safetensors import safe_open
from torch import nn

from imageclf.core.errors import ConfigError, ModelFileError
from imageclf.core.io import atomic_save_safetensors, atomic_write_text, file_sha256
from imageclf.core.version import __version__
from imageclf.data.images import LEGACY_JPEG
from imageclf.modelfile.config import (  # noqa: F401  (re-exported)
    _SCHEMA,
    BEST_RECIPE_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CV_FILE,
    FORMAT,
    FORMAT_VERSION,
    HISTORY_FILE,
    MAX_INPUT_SIDE,
    METRICS_FILE,
    MODEL_FILE,
    RECIPE_FILE,
    REVIEW_CSV_FILE,
    REVIEW_HTML_FILE,
    TRAIN_GROUPS_FILE,
    TRAIN_HASHES_FILE,
    TTA_NAMES,
    TUNE_FILE,
    ModelConfig,
    checked_weights,
    parse_config,
    read_config,
)
from imageclf.models import create_model


def library_versions() -> dict[str, str]:
    return {"imageclf": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}


def save_model(run_dir: str | Path, model: nn.Module, config: ModelConfig) -> Path:
    """Write weights and config atomically; the config records the weights' hash."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = run_dir / MODEL_FILE
    atomic_save_safetensors(weights, tensors, {"format": FORMAT,
                                               "trained_for": json.dumps(_trained_for(config))})
    config.weights_sha256 = file_sha256(weights)
    config.versions = config.versions or library_versions()
    config.created = config.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
    return run_dir


def _trained_for(config: ModelConfig) -> dict[str, Any]:
    """What the weights were trained as; saved in their header so an edited config.json shows.

    ``max_pixels`` is left out: it is a safety limit on input files, not part of the model.
    How JPEGs are decoded (``LEGACY_JPEG``'s fields: ``jpeg_draft``, ``jpeg_scales``) is in
    (weights written before a field have a header without it, and are not asked).
    """
    pre = config.preprocessing.to_dict()
    d = {"architecture": config.architecture, "architecture_kwargs": config.architecture_kwargs,
         "classes": config.classes, **{k: pre[k] for k in ("size", "channels", "resize", "mean", "std")},
         **{k: getattr(config.preprocessing, k) for k in LEGACY_JPEG}}
    return json.loads(json.dumps(d))  # tuples -> lists, as they read back


def check_weights(run_dir: str | Path, config: ModelConfig, build=None) -> None:
    """Check ``model.safetensors`` against ``config`` from its hash and header alone.

    Refuses (:class:`ModelFileError`, one line): a missing file; one whose SHA-256 is not
    the one the config records (edited, or from another run); anything that is not a
    safetensors file (a pickle, a crafted header); a config edited since training
    (architecture, classes, preprocessing differ from what the weights' header records).
    With ``build`` (config -> nn.Module) the architecture is built on the meta device, which
    allocates nothing, and its tensor names and shapes are compared with the header: so a
    crafted config cannot make the loader build a model of any size before it is refused.
    """
    run_dir = Path(run_dir)
    path = checked_weights(run_dir, config)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types on a corrupt header
        raise ModelFileError(f"{path}: not a valid safetensors file ({exc})") from None
    if "trained_for" in header:  # absent from files written before it was recorded
        try:
            saved = json.loads(header["trained_for"])
        except ValueError:
            saved = None
        if not isinstance(saved, dict):
            raise ModelFileError(f"{path}: unreadable 'trained_for' in its header")
        now = _trained_for(config)
        for key, value in now.items():
            if key in saved and saved[key] != value:
                raise ModelFileError(
                    f"{run_dir / CONFIG_FILE}: {key} {value!r} does not match {MODEL_FILE}, trained "
                    f"with {saved[key]!r} (config.json was edited, or the files come from different runs)")
    if build is not None:
        expected = _meta_shapes(build, config, run_dir / CONFIG_FILE)
        if expected is not None:
            _compare_shapes(shapes, expected, path, config)


def _meta_shapes(build, config: ModelConfig, where: Path) -> dict[str, tuple] | None:
    try:
        with torch.device("meta"):
            model = build(config)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{where}: architecture {config.architecture!r} cannot be built "
                             f"from it ({exc})") from None
    except Exception:  # a builder that needs real tensors: load_weights checks after building
        return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _compare_shapes(shapes: dict[str, tuple], expected: dict[str, tuple], path: Path,
                    config: ModelConfig) -> None:
    missing, extra = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or extra:
        raise ModelFileError(f"{path}: tensors do not fit architecture {config.architecture!r} "
                             f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for name, shape in expected.items():
        if tuple(shapes[name]) != tuple(shape):
            raise ModelFileError(f"{path}: tensor {name!r} has shape {tuple(shapes[name])}, the "
                                 f"architecture needs {tuple(shape)}")


# Fields that describe the weights themselves: changing them without new weights breaks the model.
_FROZEN = frozenset({"format", "format_version", "architecture", "architecture_kwargs", "classes",
                     "preprocessing", "weights_sha256", "members"})


def update_config(run_dir: str | Path, **changes: Any) -> ModelConfig:
    """Change fields of RUN/config.json (e.g. ``threshold``, ``temperature``) atomically.

    The weights are not touched, so their recorded hash stays valid. The new content is
    validated before it replaces the old; fields that describe the weights cannot change.

    >>> update_config("runs/xray", threshold=0.31)  # doctest: +SKIP
    """
    read_config(run_dir)  # the folder must hold a valid model first
    path = Path(run_dir) / CONFIG_FILE if Path(run_dir).is_dir() else Path(run_dir)
    unknown = sorted(set(changes) - set(_SCHEMA))
    frozen = sorted(set(changes) & _FROZEN)
    if unknown or frozen:
        raise ModelFileError(f"{path}: cannot set {unknown + frozen} (unknown fields or fields that "
                             "describe the weights)")
    d = json.loads(path.read_text())
    d.update(changes)
    config = parse_config(d, str(path))
    atomic_write_text(path, json.dumps(d, indent=2) + "\n")
    return config


def load_weights(run_dir: str | Path, model: nn.Module, config: ModelConfig,
                 checked: bool = False) -> nn.Module:
    """Load ``model.safetensors`` into ``model`` after checking hash, header, names and shapes.

    ``checked``: :func:`check_weights` has just passed, so the hash is not computed again.
    """
    run_dir = Path(run_dir)
    path = run_dir / MODEL_FILE
    if not checked:
        check_weights(run_dir, config)
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


def build_model(config: ModelConfig) -> torch.nn.Module:
    """The architecture a config names, with freshly initialised weights."""
    pre = config.preprocessing
    return create_model(config.architecture, pre.channels, config.num_outputs, pre.size,
                        **config.architecture_kwargs)
