"""A numpy reader for the EXRs the pass render writes: uncompressed scanline files, single- or multi-part.

Blender's own Python has no OpenEXR package, so the passes are read here with numpy alone. Blender 5.0 writes one
EXR part per pass and names the index pass "Object Index"; 4.5 writes a single part and calls it "IndexOB".
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

EXR_MAGIC = 20000630
EXR_TILED, EXR_DEEP, EXR_MULTIPART = 0x200, 0x800, 0x1000  # version-field flags
EXR_PIXEL_TYPES = {0: "<u4", 1: "<f2", 2: "<f4"}

# Pass name -> the names Blender uses for it in the EXR (5.x first, then 4.5).
PASS_NAMES = {
    "depth": ("Depth",),
    "normal": ("Normal",),
    "object_id": ("Object Index", "IndexOB"),
    "vector": ("Vector",),
}


def _c_string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode(), end + 1


def _exr_headers(data: bytes, pos: int, multipart: bool) -> tuple[list[dict[str, bytes]], int]:
    headers = []
    while True:
        header = {}
        while True:
            name, pos = _c_string(data, pos)
            if not name:
                break
            _kind, pos = _c_string(data, pos)
            (size,) = struct.unpack_from("<i", data, pos)
            header[name] = data[pos + 4:pos + 4 + size]
            pos += 4 + size
        if not header:
            return headers, pos
        headers.append(header)
        if not multipart:
            return headers, pos


def _exr_channels(chlist: bytes) -> list[tuple[str, np.dtype]]:
    channels, pos = [], 0
    while True:
        name, pos = _c_string(chlist, pos)
        if not name:
            return channels
        pixel_type, _linear, x_sampling, y_sampling = struct.unpack_from("<iB3xii", chlist, pos)
        pos += 16
        if (x_sampling, y_sampling) != (1, 1) or pixel_type not in EXR_PIXEL_TYPES:
            raise ValueError(f"EXR channel {name!r}: subsampled or unknown pixel type")
        channels.append((name, np.dtype(EXR_PIXEL_TYPES[pixel_type])))


def read_exr_channels(path: str | Path) -> dict[str, np.ndarray]:
    """Every channel of an uncompressed scanline EXR, single- or multi-part, as (H, W) arrays, top row first.

    The pass render writes its temporary EXRs without compression, and this reader of that subset needs only
    numpy, so passes can be read inside Blender's own Python, which has no OpenEXR package.
    """
    data = Path(path).read_bytes()
    magic, version = struct.unpack_from("<ii", data, 0)
    if magic != EXR_MAGIC:
        raise ValueError(f"{path}: not an OpenEXR file")
    if version & (EXR_TILED | EXR_DEEP):
        raise ValueError(f"{path}: tiled and deep EXR files are not supported")
    multipart = bool(version & EXR_MULTIPART)
    headers, pos = _exr_headers(data, 8, multipart)
    out = {}
    for part, header in enumerate(headers):
        if header["compression"] != b"\0":
            raise ValueError(f"{path}: compressed EXR; the pass render writes them with exr_codec 'NONE'")
        x_min, y_min, x_max, y_max = struct.unpack("<4i", header["dataWindow"])
        width, height = x_max - x_min + 1, y_max - y_min + 1
        count = struct.unpack("<i", header["chunkCount"])[0] if "chunkCount" in header else height
        offsets = np.frombuffer(data, "<u8", count, pos)
        pos += 8 * count
        channels = _exr_channels(header["channels"])
        line_bytes = width * sum(dtype.itemsize for _, dtype in channels)
        arrays = {name: np.empty((height, width), dtype) for name, dtype in channels}
        for offset in offsets.tolist():
            if multipart:
                (chunk_part,) = struct.unpack_from("<i", data, offset)
                if chunk_part != part:
                    raise ValueError(f"{path}: chunk of part {chunk_part} in the table of part {part}")
                offset += 4
            y, size = struct.unpack_from("<ii", data, offset)
            if size != line_bytes:
                raise ValueError(f"{path}: scanline {y} has {size} bytes, expected {line_bytes}")
            offset += 8
            for name, dtype in channels:  # a scanline stores each channel's row in turn, channels sorted by name
                arrays[name][y - y_min] = np.frombuffer(data, dtype, width, offset)
                offset += width * dtype.itemsize
        out.update(arrays)
    return out


def read_exr_passes(path: str | Path, view_layer: str) -> dict[str, np.ndarray]:
    """The guidance passes of one pass-render EXR (5.x multi-part or 4.5 single-part) as float32 arrays."""
    channels: dict[str, dict[str, np.ndarray]] = {}
    prefix = f"{view_layer}."
    for full_name, pixels in read_exr_channels(path).items():
        if full_name.startswith(prefix):
            pass_name, _, component = full_name[len(prefix):].rpartition(".")
            channels.setdefault(pass_name, {})[component] = pixels.astype(np.float32)
    out = {}
    for key, names in PASS_NAMES.items():
        found = next((channels[n] for n in names if n in channels), None)
        if found is None:
            raise ValueError(f"{path}: pass {names[0]!r} is missing (found {sorted(channels)})")
        order = sorted(found, key="XYZWRGBA".find)
        out[key] = np.stack([found[c] for c in order], axis=-1)
    out["depth"] = out["depth"][..., 0]
    out["object_id"] = out["object_id"][..., 0]
    return out
