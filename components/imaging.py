"""Image preprocessing: the one implementation used by the data step, training, evaluation, the gate,
benchmarks and the TorchServe handler, so a served model sees exactly what it was trained on.

A file becomes model input in two stages:
1. ``load_pixels``: header check against ``max_pixels`` (a decompression bomb is never decoded),
   reduced-size JPEG decoding (Pillow's ``draft``), EXIF orientation, a deterministic conversion
   to the input's channels (palette, alpha, 16-bit and CMYK included) and the resize policy.
   The result is uint8 ``(height, width, channels)``: what the decoded cache stores.
2. ``normalize``: uint8 NHWC batch → float32 NCHW, ``(x / 255 - mean) / std`` per channel.

This module is shipped inside the .mar, so it may import only numpy and Pillow.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The serving contract packed into each .mar beside this module: preprocessing and request limits.
SERVING_CONFIG = "relay_serving.json"
# Written beside every trained model: the preprocessing it was trained with (normalization resolved).
PREPROCESSING_FILE = "preprocessing.json"

_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ALPHA = {"LA", "La", "PA", "RGBA", "RGBa"}
_WHITE = (255, 255, 255, 255)
# EXIF orientations 5-8 rotate by 90°: the stored image is the transpose of the displayed one.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}


class ImageRejected(ValueError):
    """An input that is not an image this model takes. ``status`` is the HTTP code a server answers."""

    status = 400


class ImageTooLarge(ImageRejected):
    status = 413


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes model input; recorded with every model and packed into its .mar."""

    height: int
    width: int
    channels: int
    resize: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_pixels: int

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"


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
                                f"{_megapixels(max_pixels)} (dataset.max_pixels)")
        yield image


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to L (1 channel) or RGB (3), the same way every time.

    16-bit grey keeps its top 8 bits (Pillow's own conversion clips instead); transparency is
    composited over white; CMYK, YCbCr and the rest go through Pillow's RGB conversion.
    """
    if image.mode in _SIXTEEN_BIT or image.mode == "F":
        values = np.asarray(image, dtype=np.float64 if image.mode == "F" else np.int64)
        values = np.clip(values, 0, 255) if image.mode == "F" else np.clip(values, 0, 65535) >> 8
        image = Image.fromarray(values.astype(np.uint8), mode="L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA:
        background = Image.new("RGBA", image.size, _WHITE)
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    if image.mode == target:
        return image
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return image.convert(target)


def resize(image: Image.Image, height: int, width: int, policy: str) -> Image.Image:
    """Bring ``image`` to (height, width): ``stretch``, ``center_crop`` (keep the aspect, crop) or
    ``pad`` (keep the aspect, pad with black). Bilinear, with Pillow's antialiasing when shrinking."""
    if image.size == (width, height):
        return image
    method = Image.Resampling.BILINEAR
    if policy == "stretch":
        return image.resize((width, height), method)
    if policy == "center_crop":
        return ImageOps.fit(image, (width, height), method)
    if policy == "pad":
        return ImageOps.pad(image, (width, height), method, color=0)
    raise ValueError(f"unknown resize policy {policy!r}: use stretch, center_crop or pad")


def load_pixels(data: bytes | Path | str, prep: Preprocessing, name: str | None = None) -> np.ndarray:
    """Decode one image file into uint8 ``(height, width, channels)`` as ``prep`` says."""
    name = name or (str(data) if isinstance(data, (Path, str)) else "image")
    with open_checked(data, prep.max_pixels, name) as image:
        try:
            if image.format == "JPEG":
                # Decode at the smallest 1/2^k scale still covering the target: large photos decode many
                # times faster. Orientations 5-8 swap the axes, so the request does too.
                orientation = image.getexif().get(0x0112, 1)
                wanted = (prep.height, prep.width) if orientation in _TRANSPOSED_ORIENTATIONS else (prep.width,
                                                                                                     prep.height)
                image.draft(image.mode, wanted)
            image.load()  # GIF and multi-frame TIFF: the first frame, where Pillow opens them
            oriented = ImageOps.exif_transpose(image)
            converted = to_channels(oriented, prep.channels)
            sized = resize(converted, prep.height, prep.width, prep.resize)
        except ImageRejected:
            raise
        except Exception as error:  # noqa: BLE001 - a corrupt or truncated body fails only when decoded
            raise ImageRejected(f"{name}: not a decodable image ({type(error).__name__}: {error})") from None
    pixels = np.asarray(sized, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def load_pixel_batch(sources: Sequence[bytes | Path | str], prep: Preprocessing) -> np.ndarray:
    """``load_pixels`` of each file (or body), stacked: uint8 NHWC."""
    return np.stack([load_pixels(source, prep) for source in sources])


def normalize(batch: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 NHWC (or one HWC image) → the model's float32 NCHW input."""
    if batch.ndim == 3:
        batch = batch[None]
    scale = (1.0 / (255.0 * np.asarray(prep.std, dtype=np.float32))).astype(np.float32)
    offset = (-np.asarray(prep.mean, dtype=np.float32) / np.asarray(prep.std, dtype=np.float32)).astype(np.float32)
    return np.ascontiguousarray((batch.astype(np.float32) * scale + offset).transpose(0, 3, 1, 2))


def preprocess_files(sources: Sequence[bytes | Path | str], prep: Preprocessing) -> np.ndarray:
    """Files (or bodies) → one normalized float32 NCHW batch."""
    if not sources:
        return np.zeros((0, prep.channels, prep.height, prep.width), np.float32)
    return normalize(load_pixel_batch(sources, prep), prep)
