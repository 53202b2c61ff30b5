"""Image decoding shared by the data step, training, evaluation and the TorchServe handler.

Every decode first reads the header and refuses an image whose pixel count is over the task's limit
(``dataset.image.max_pixels``), so a decompression bomb never reaches the decoder. This module is
shipped inside the .mar, so it may import only numpy and Pillow.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


# The serving contract packed into each .mar beside this module: input size and request limits.
SERVING_CONFIG = "relay_serving.json"


class ImageRejected(ValueError):
    """An input that is not an image this model takes. ``status`` is the HTTP code a server answers."""

    status = 400


class ImageTooLarge(ImageRejected):
    status = 413


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


@contextmanager
def open_checked(data: bytes | Path | str, max_pixels: int, name: str) -> Iterator[Image.Image]:
    """Open an image lazily and check its header's pixel count before anything is decoded."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        with warnings.catch_warnings():
            # Pillow warns between its own limit and twice that; ours is checked right below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"{name}: {error} (the limit here is {_megapixels(max_pixels)})") from None
    except UnidentifiedImageError:
        raise ImageRejected(f"{name}: not a decodable image (no image format recognised)") from None
    except Exception as error:  # noqa: BLE001 - untrusted bytes: Pillow's plugins raise many kinds of error
        raise ImageRejected(f"{name}: not a decodable image ({type(error).__name__}: {error})") from None
    with image:
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise ImageTooLarge(f"{name}: {image.width}x{image.height} is {_megapixels(pixels)}, over the limit of "
                                f"{_megapixels(max_pixels)} (dataset.image.max_pixels)")
        yield image


def decode_image(data: bytes | Path | str, max_pixels: int, name: str | None = None) -> np.ndarray:
    """Decode one image into a float32 (height, width) grayscale array scaled to [0, 1]."""
    name = name or (str(data) if isinstance(data, (Path, str)) else "image")
    with open_checked(data, max_pixels, name) as image:
        try:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        except Exception as error:  # noqa: BLE001 - a corrupt or truncated body fails only when decoded
            raise ImageRejected(f"{name}: not a decodable image ({type(error).__name__}: {error})") from None
    return pixels / 255.0


def to_batch(images: list[np.ndarray]) -> np.ndarray:
    """Stack decoded images into the model's NCHW float32 input."""
    return np.stack(images).astype(np.float32)[:, None, :, :]
