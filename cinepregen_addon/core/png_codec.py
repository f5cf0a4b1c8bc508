"""PNG reading and writing with the stdlib only: Blender's Python has no PIL, and a shot bundle's references are PNGs.

Enough of the format for references: 8-bit, non-interlaced, gray / gray+alpha / RGB / RGBA in, RGB or RGBA out.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

MAX_PNG_PIXELS = 8192 * 8192
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) or (H, W, 4) uint8 image as an 8-bit PNG."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"PNG images must be (H, W, 3|4) uint8, got {image.shape} {image.dtype}")
    height, width, channels = image.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2 if channels == 3 else 6, 0, 0, 0)
    data = PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
    Path(path).write_bytes(data + chunk(b"IEND", b""))
    return Path(path)


def read_png(path: str | Path) -> np.ndarray:
    """Read an 8-bit non-interlaced PNG (gray, gray+alpha, RGB, RGBA) as (H, W, 3) uint8 RGB; alpha is dropped."""
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    pos, header, idat = len(PNG_SIGNATURE), None, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if len(body) != length or struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] != zlib.crc32(
                kind + body):
            raise ValueError(f"corrupt PNG chunk {kind!r}")
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG has no IHDR chunk")
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in PNG_CHANNELS or interlace != 0:
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {color}, interlace {interlace}); "
                         "save it as 8-bit RGB")
    if not 0 < width * height <= MAX_PNG_PIXELS:
        raise ValueError(f"PNG size {width}x{height} is out of range")
    channels = PNG_CHANNELS[color]
    stride = width * channels
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), height * (stride + 1))
    except zlib.error as error:
        raise ValueError(f"corrupt PNG data ({error})") from None
    if len(raw) != height * (stride + 1):
        raise ValueError("truncated PNG data")
    image = _unfilter(raw, height, stride, channels).reshape(height, width, channels)
    if channels < 3:
        return np.repeat(image[..., :1], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo PNG's per-row filters (None, Sub, Up, Average, Paeth)."""
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    previous = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            current = line.copy()
        elif kind == 2:
            current = line + previous
        elif kind in (1, 3, 4):
            current, up = bytearray(line.tobytes()), previous.tobytes()
            for x in range(stride):
                left = current[x - bpp] if x >= bpp else 0
                if kind == 1:
                    predictor = left
                elif kind == 3:
                    predictor = (left + up[x]) >> 1
                else:
                    upper_left = up[x - bpp] if x >= bpp else 0
                    p = left + up[x] - upper_left
                    pa, pb, pc = abs(p - left), abs(p - up[x]), abs(p - upper_left)
                    predictor = left if pa <= pb and pa <= pc else up[x] if pb <= pc else upper_left
                current[x] = (current[x] + predictor) & 0xFF
            current = np.frombuffer(bytes(current), np.uint8)
        else:
            raise ValueError(f"unknown PNG filter type {kind}")
        out[y] = current
        previous = out[y]
    return out
