"""One image, as any predictor takes it: :func:`prepare_input` (torch-free).

The same function as :func:`imageclf.modelfile.predictor.prepare_input` (whose module imports
torch for the Predictor protocol's types), so that a prediction on ONNX Runtime or OpenVINO
never loads torch.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imageclf.data.images import ImageSource, Preprocessing, load_image, prepare_array

ImageInput = ImageSource | np.ndarray | Image.Image  # one image, as prepare_input takes it


def prepare_input(image: ImageInput, pre: Preprocessing) -> np.ndarray:
    """One image (path, bytes, PIL image or array) as a predictor's (H, W, C) uint8 input."""
    if isinstance(image, np.ndarray):
        return prepare_array(image, pre)
    if isinstance(image, Image.Image):
        # Through PNG, not np.asarray: that would give a palette image's indices and a CMYK
        # image's four planes; load_image converts them as it would the same picture's file.
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return load_image(buf.getvalue(), pre)
    return load_image(image, pre)
