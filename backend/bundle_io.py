"""Shot bundles on the backend side: the bundle format's own reader (``cinepregen_addon.core.shot_bundle``) with
reference images decoded by Pillow, in C, instead of the add-on's stdlib PNG reader (which Blender's Python needs,
and which takes seconds for one large image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cinepregen_addon.core import png_codec, shot_bundle


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when the file does not start like a PNG."""
    with Path(path).open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or not head.startswith(png_codec.PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def read_reference_image(path: Path) -> np.ndarray:
    """A PNG reference image as (H, W, 3) uint8 RGB (alpha dropped); ValueError when it is not a readable PNG or
    has more than ``png_codec.MAX_PNG_PIXELS`` pixels."""
    from PIL import Image, UnidentifiedImageError

    size = png_size(path)
    if size is None:
        raise ValueError("not a PNG file")
    if size[0] * size[1] > png_codec.MAX_PNG_PIXELS:
        raise ValueError(f"{size[0]}x{size[1]} pixels, more than {png_codec.MAX_PNG_PIXELS:,}")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # writable, as torch.from_numpy wants
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as error:
        raise ValueError(str(error).replace(str(path), Path(path).name)[:200]) from None


def read_shot_bundle(path: str | Path) -> shot_bundle.ShotBundle:
    """``shot_bundle.read_bundle`` with Pillow decoding the reference images."""
    return shot_bundle.read_bundle(path, read_image=read_reference_image)
