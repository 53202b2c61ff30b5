"""Image decoding shared by training, evaluation and the TorchServe handler.

This module is shipped inside the .mar, so it may import only numpy and Pillow.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def decode_image(data: bytes | Path | str) -> np.ndarray:
    """Decode one grayscale image file into a float32 (height, width) array scaled to [0, 1]."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with Image.open(source) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    return pixels / 255.0


def to_batch(images: list[np.ndarray]) -> np.ndarray:
    """Stack decoded images into the model's NCHW float32 input."""
    return np.stack(images).astype(np.float32)[:, None, :, :]
