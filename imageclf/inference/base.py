"""What every predictor answers from its model file's config (torch-free)."""

from __future__ import annotations

from imageclf.data.images import Preprocessing
from imageclf.modelfile.config import ModelConfig


class FromConfig:
    """Classes, preprocessing and thresholds, as the model file's config says them."""

    def __init__(self, config: ModelConfig, source: str) -> None:
        self.config = config
        self.source = source

    @property
    def classes(self) -> list[str]:
        return self.config.classes

    @property
    def preprocessing(self) -> Preprocessing:
        return self.config.preprocessing

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @property
    def ood_threshold(self) -> float | None:
        """The OOD score past which an input is out of distribution (None: the model has no score)."""
        return float(self.config.ood["threshold"]) if self.config.ood else None
