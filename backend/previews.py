"""Pictures of shots for people: guidance passes as RGB, and labelled grids of frames (storyboards, contact sheets).

Used by the review board, the demo's storyboard and the model card's contact sheet, so a pass looks the same
everywhere.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw


def depth_preview(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """Inverse depth as grey (near is bright), background (depth 0) black; ``near``/``far`` fixed per shot so
    brightness does not flicker from frame to frame."""
    valid = depth > 0
    inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    lo, hi = 1.0 / far, 1.0 / near
    grey = np.clip((inverse - lo) / max(hi - lo, 1e-9), 0.0, 1.0) * 215 + 40
    grey = np.where(valid, grey, 0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def normal_preview(normal: np.ndarray) -> np.ndarray:
    """Unit normals mapped from [-1, 1] to RGB; background (zero normals) stays black."""
    rgb = (np.clip(normal, -1.0, 1.0) * 0.5 + 0.5) * 255
    rgb[np.all(normal == 0, axis=-1)] = 0
    return rgb.round().astype(np.uint8)


def object_id_preview(object_id: np.ndarray) -> np.ndarray:
    """One stable, well-separated colour per object id (golden-ratio hues); background (id 0) black."""
    ids, inverse = np.unique(object_id, return_inverse=True)
    palette = np.array(
        [(0, 0, 0) if i == 0 else colorsys.hsv_to_rgb((int(i) * 0.618033988749895) % 1.0, 0.65, 0.95) for i in ids]
    )
    return (palette[inverse.reshape(object_id.shape)] * 255).round().astype(np.uint8)


def spread_frames(count: int, wanted: int) -> list[int]:
    """``wanted`` frame indices spread evenly over ``count`` frames, first and last included (all of them when
    there are fewer)."""
    shown = min(wanted, count)
    return [round(i * (count - 1) / max(shown - 1, 1)) for i in range(shown)]


def depth_range(depths) -> tuple[float, float]:
    """(near, far) over a whole shot's depth passes (1st and 99th percentile), so previews do not flicker."""
    valid = np.concatenate([d[d > 0] for d in depths])
    if not valid.size:
        return 1.0, 2.0
    near, far = float(np.percentile(valid, 1)), float(np.percentile(valid, 99))
    return near, max(far, near * 1.001)


def labelled_grid(rows, cell_height: int = 144, label_width: int = 220, gap: int = 4) -> Image.Image:
    """``rows`` of ``(label, [H x W x 3 uint8 images])`` as one picture: the label on the left, then each image scaled
    to ``cell_height`` (nearest neighbour, so pixels stay visible), in columns of equal width."""
    scaled = []
    for label, images in rows:
        cells = [Image.fromarray(np.asarray(image, np.uint8)) for image in images]
        scaled.append((label, [c.resize((round(c.width * cell_height / c.height), cell_height), Image.NEAREST)
                               for c in cells]))
    columns = max(len(cells) for _, cells in scaled)
    cell_width = max(c.width for _, cells in scaled for c in cells)
    sheet = Image.new("RGB", (label_width + columns * (cell_width + gap), len(rows) * (cell_height + gap)),
                      (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, (label, cells) in enumerate(scaled):
        top = r * (cell_height + gap)
        draw.multiline_text((8, top + 8), label, fill=(230, 230, 230))
        for c, cell in enumerate(cells):
            sheet.paste(cell, (label_width + c * (cell_width + gap), top))
    return sheet
