"""Model architectures, each registered by name (see :mod:`imageclf.models.registry`)."""

from . import seed_cnns  # noqa: F401  (registers the seed articles' networks)
from .registry import (
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
