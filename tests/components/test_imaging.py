"""The one preprocessing module: formats, modes, orientation, resize policies, normalization."""

import io

import numpy as np
import pytest
from PIL import Image

from components.imaging import ImageRejected, Preprocessing, load_pixels, normalize, preprocess_files


def _prep(size=(4, 6), channels=3, resize="stretch", **changes):
    values = dict(height=size[0], width=size[1], channels=channels, resize=resize, mean=(0.5,) * channels,
                  std=(0.25,) * channels, max_pixels=50_000_000)
    return Preprocessing(**{**values, **changes})


def _encode(image, fmt, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (6, 4), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: the marker ends top-right
    pixels = load_pixels(_encode(image, "PNG", exif=exif), _prep(size=(6, 4)))
    assert pixels.shape == (6, 4, 3)
    assert pixels[0, 3].min() == 255 and pixels[0, 0].max() == 0


@pytest.mark.parametrize("mode,expected", [
    ("RGBA", 255),   # fully transparent pixels composite onto white
    ("LA", 255),
    ("P", 255),      # a palette with a transparent index, likewise
])
def test_transparency_composites_over_white(mode, expected):
    if mode == "P":
        image = Image.new("P", (4, 4), 0)
        image.putpalette([10, 20, 30] * 256)
        data = _encode(image, "PNG", transparency=0)
    else:
        data = _encode(Image.new(mode, (4, 4), (0,) * len(mode)), "PNG")
    assert load_pixels(data, _prep(size=(4, 4))).min() == expected


def test_sixteen_bit_keeps_the_top_byte_and_cmyk_converts():
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    grey = load_pixels(_encode(Image.fromarray(values), "PNG"), _prep(size=(1, 4), channels=1))
    assert grey[0, :, 0].tolist() == [0, 1, 128, 255]
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    red = load_pixels(_encode(cmyk, "JPEG", quality=100), _prep(size=(4, 4)))
    assert red[..., 0].min() > 240 and red[..., 1].max() < 15


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("P", (4, 4), 0), Image.new("P", (4, 4), 1)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert load_pixels(buffer.getvalue(), _prep(size=(4, 4))).max() == 0


def test_resize_policies_keep_or_ignore_the_aspect_ratio():
    wide = Image.new("RGB", (80, 40), (255, 255, 255))
    data = _encode(wide, "PNG")
    stretched = load_pixels(data, _prep(size=(20, 20), resize="stretch"))
    padded = load_pixels(data, _prep(size=(20, 20), resize="pad"))
    cropped = load_pixels(data, _prep(size=(20, 20), resize="center_crop"))
    assert stretched.min() == 255 and cropped.min() == 255
    assert padded[0].max() == 0 and padded[10].min() == 255  # black bands above and below


def test_large_jpegs_decode_at_reduced_size_to_the_same_shape():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (3024, 3024, 3), dtype=np.uint8))
    data = _encode(photo, "JPEG", quality=85)
    with Image.open(io.BytesIO(data)) as probe:
        probe.draft("RGB", (64, 64))
        assert probe.size == (378, 378)  # 1/8 scale: the decoder never builds the full image
    assert load_pixels(data, _prep(size=(64, 64))).shape == (64, 64, 3)


def test_normalize_is_nchw_and_per_channel():
    prep = _prep(size=(2, 2), channels=3, mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))
    batch = np.full((1, 2, 2, 3), 255, np.uint8)
    out = normalize(batch, prep)
    assert out.shape == (1, 3, 2, 2) and out.dtype == np.float32
    assert out[0, :, 0, 0].tolist() == pytest.approx([1.0, 1.0, 0.0])


def test_non_images_are_refused_with_the_reason():
    with pytest.raises(ImageRejected, match="x.jpg: not a decodable image"):
        load_pixels(b"hello", _prep(), "x.jpg")
    truncated = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:200]
    with pytest.raises(ImageRejected, match="t.jpg: not a decodable image"):
        load_pixels(truncated, _prep(), "t.jpg")


def test_preprocess_files_of_nothing_is_an_empty_batch():
    assert preprocess_files([], _prep(size=(3, 5), channels=1)).shape == (0, 1, 3, 5)
