"""The model's config.json: :class:`ModelConfig`, its schema and :func:`read_config`, torch-free.

Reading and checking a config needs only JSON, so that what runs a model without PyTorch
(ONNX Runtime, OpenVINO: ``imageclf predict RUN x.png --backend onnx``) never imports it;
:mod:`imageclf.modelfile.artifact` (weights, building the network) re-exports these names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imageclf.core.decision import num_outputs
from imageclf.core.errors import ModelFileError
from imageclf.core.io import file_sha256
from imageclf.data.images import Preprocessing
from imageclf.modelfile.ood_field import check_ood_field

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


def checked_weights(run_dir: str | Path, config: ModelConfig) -> Path:
    """RUN/model.safetensors, refused when missing or when its SHA-256 is not config.json's."""
    run_dir = Path(run_dir)
    path = run_dir / MODEL_FILE
    if not path.is_file():
        raise ModelFileError(f"{run_dir}: no {MODEL_FILE}")
    if config.weights_sha256 and file_sha256(path) != config.weights_sha256:
        raise ModelFileError(f"{path}: does not match {CONFIG_FILE} (the weights or the config "
                             "were edited, or come from different runs)")
    return path
