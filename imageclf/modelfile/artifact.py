"""The model file: ``model.safetensors`` (weights) + ``config.json`` (everything else).

Loading reads JSON and safetensors only, never pickle: a shared model folder cannot run
code. The config is checked against a schema, the weights' hash against the config, and
every tensor's shape against the architecture, each with a message that says what is
wrong.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
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
from imageclf.data.images import Preprocessing
from imageclf.modelfile.ood import check_ood_field
from imageclf.models import create_model
from imageclf.models.heads import num_outputs

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# The rest of a training run's folder, written by imageclf.training.run.RunDir. Named here,
# beside the model file, so that evaluation (below training) and bench read the same names.
RECIPE_FILE = "recipe.yaml"  # the resolved recipe, trainable again
HISTORY_FILE = "history.csv"  # one row per epoch
METRICS_FILE = "metrics.json"  # the final validation figures
TRAIN_HASHES_FILE = "train_hashes.npy"  # hashes of the decoded training images (overlap check)
# With --group-by: {"group_by": ..., "groups": [group of each training image, as in train_hashes]}
TRAIN_GROUPS_FILE = "train_groups.json"
CHECKPOINT_FILE = "checkpoint.safetensors"  # everything --resume needs
CV_FILE = "cv.json"  # --folds: each fold's figures, their mean and std
REVIEW_CSV_FILE = "review.csv"  # imageclf review: every image ranked by how likely its label is wrong
REVIEW_HTML_FILE = "review.html"  # imageclf review: the same, with thumbnails
TUNE_FILE = "tune.json"  # imageclf tune: every trial
BEST_RECIPE_FILE = "best.yaml"  # imageclf tune: the best trial's recipe
FORMAT = "imageclf-model"
FORMAT_VERSION = 1
# A model input larger than this per side is no radiograph model: a crafted config asking
# for one would only make every prediction allocate gigabytes.
MAX_INPUT_SIDE = 16384
TTA_NAMES = ("hflip", "vflip")


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
    # What the weights started from: a registered name (package, sha256, licence) or a file.
    pretrained: dict[str, str] = field(default_factory=dict)
    weights_sha256: str = ""
    # Out-of-distribution statistics (imageclf.modelfile.ood): method, threshold, keep share and
    # the SHA-256 of OOD_FILE; empty in model folders written before they were recorded.
    ood: dict[str, Any] = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        return num_outputs(len(self.classes))

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
    "pretrained": ((dict,), False),
    "weights_sha256": ((str,), False),
    "ood": ((dict,), False),
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
    if not all(c.isprintable() and 0 < len(c) <= 200 for c in classes):
        # Class names are printed to terminals: no escape sequences, no megabyte names.
        raise ModelFileError(f"{where}: class names must be printable text of 1 to 200 characters")
    if not all(t in TTA_NAMES for t in d.get("tta", [])):
        raise ModelFileError(f"{where}: 'tta' may only list {', '.join(TTA_NAMES)}")
    if not 0.0 <= float(d.get("threshold", 0.5)) <= 1.0:
        raise ModelFileError(f"{where}: threshold {d['threshold']} is not in [0, 1]")
    if float(d.get("temperature", 1.0)) <= 0:
        raise ModelFileError(f"{where}: temperature must be positive")
    check_ood_field(d.get("ood"), where)
    try:
        pre = Preprocessing.from_dict(d["preprocessing"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ModelFileError(f"{where}: bad 'preprocessing' ({exc})") from None
    except Exception as exc:  # ConfigError from Preprocessing's own checks
        raise ModelFileError(f"{where}: bad 'preprocessing' ({exc})") from None
    if max(pre.size) > MAX_INPUT_SIDE:
        raise ModelFileError(f"{where}: input size {list(pre.size)} is over {MAX_INPUT_SIDE} pixels "
                             "per side")
    fields_ = {k: v for k, v in d.items() if k not in ("format", "format_version", "preprocessing")}
    return ModelConfig(preprocessing=pre, **fields_)


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


def read_config(run_dir: str | Path) -> ModelConfig:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ModelFileError(f"{run_dir}: no such model folder")
    path = run_dir / CONFIG_FILE if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise ModelFileError(f"{run_dir}: no {CONFIG_FILE} (is this a finished training run?)")
    try:
        d = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:  # also a 5,000-digit number, [[[[...]]]] nesting
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    return parse_config(d, str(path))


def _trained_for(config: ModelConfig) -> dict[str, Any]:
    """What the weights were trained as; saved in their header so an edited config.json shows.

    ``max_pixels`` is left out: it is a safety limit on input files, not part of the model.
    """
    pre = config.preprocessing.to_dict()
    d = {"architecture": config.architecture, "architecture_kwargs": config.architecture_kwargs,
         "classes": config.classes, **{k: pre[k] for k in ("size", "channels", "resize", "mean", "std")}}
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
    path = run_dir / MODEL_FILE
    if not path.is_file():
        raise ModelFileError(f"{run_dir}: no {MODEL_FILE}")
    if config.weights_sha256 and file_sha256(path) != config.weights_sha256:
        raise ModelFileError(f"{path}: does not match {CONFIG_FILE} (the weights or the config "
                             "were edited, or come from different runs)")
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
