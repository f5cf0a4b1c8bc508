"""The stdlib PNG codec that reads and writes a bundle's references, checked against PIL."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cinepregen_addon.core import png_codec


def test_png_round_trip_and_pil_agrees(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(png_codec.read_png(png_codec.write_png(tmp_path / "a.png", rgb)), rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), rgb)
    np.testing.assert_array_equal(png_codec.read_png(png_codec.write_png(tmp_path / "b.png", rgba)), rgba[..., :3])


def raw_png(width: int, height: int, color: int, rows: bytes) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return png_codec.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("color, channels", [(0, 1), (2, 3), (4, 2), (6, 4)])
def test_png_decoder_matches_pil_on_every_filter_type(tmp_path, color, channels):
    """Rows with filter types 0-4 and random residuals: PIL (libpng's rules) is the reference decoder."""
    width, height = 9, 10
    rng = np.random.default_rng(color)
    rows = b"".join(bytes([y % 5]) + rng.integers(0, 256, width * channels, dtype=np.uint8).tobytes()
                    for y in range(height))
    path = tmp_path / "filtered.png"
    path.write_bytes(raw_png(width, height, color, rows))
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(png_codec.read_png(path), expected)


def test_png_reader_rejects_what_it_cannot_read(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        png_codec.read_png(path)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="bit depth 16"):
        png_codec.read_png(path)
