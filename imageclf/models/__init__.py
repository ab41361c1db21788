"""Model architectures, each registered by name (see :mod:`imageclf.models.registry`)."""

from imageclf.models import modern, resnets, seed_cnns, timm_nets, wide_resnet  # noqa: F401  (registers)
from imageclf.models.registry import (
    ModelEntry,
    check_forward,
    create_model,
    list_models,
    model_entry,
    num_params,
    register_model,
)

__all__ = ["ModelEntry", "check_forward", "create_model", "list_models", "model_entry",
           "num_params", "register_model"]

from imageclf.models import ensemble as _ensemble  # noqa: E402,F401  (registers the "ensemble" architecture)
