"""Structure: generated edges against the guidance passes, the patch grid, and colour drift over a shot."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from backend.eval.metrics.binding import mean_colour

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


def image_edges(image: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Thin edges of an image: Sobel gradient of luminance above ``threshold``, kept where it is a local maximum
    along the dominant gradient axis. The gradient is scaled so a step of height h gives magnitude h on the two pixels
    either side of it, so ``threshold`` is the smallest luminance step that counts as an edge.
    """
    image = np.asarray(image, dtype=np.float64)
    luma = image @ LUMA_WEIGHTS if image.ndim == 3 else image
    padded = np.pad(luma, 1, mode="edge")
    height, width = luma.shape

    def at(dv: int, du: int) -> np.ndarray:
        return padded[1 + dv : 1 + dv + height, 1 + du : 1 + du + width]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1) - at(-1, -1) - 2 * at(0, -1) - at(1, -1)) / 4
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1) - at(-1, -1) - 2 * at(-1, 0) - at(-1, 1)) / 4
    magnitude = np.hypot(gx, gy)
    m = np.pad(magnitude, 1, mode="constant")
    left, right = m[1:-1, :-2], m[1:-1, 2:]
    up, down = m[:-2, 1:-1], m[2:, 1:-1]
    horizontal = np.abs(gx) >= np.abs(gy)
    peak = np.where(horizontal, (magnitude >= left) & (magnitude >= right), (magnitude >= up) & (magnitude >= down))
    return (magnitude > threshold) & peak


def guidance_edges(object_id: np.ndarray, depth: np.ndarray, depth_rel_tol: float = 0.1) -> np.ndarray:
    """Discontinuities of the ID and depth passes: both pixels of every neighbouring pair whose object IDs differ
    or whose depths differ by more than ``depth_rel_tol`` of the nearer one (background has depth 0)."""
    object_id = np.asarray(object_id)
    depth = np.asarray(depth, dtype=np.float64)
    edges = np.zeros(object_id.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        da, db = depth[tuple(a)], depth[tuple(b)]
        jump = (object_id[tuple(a)] != object_id[tuple(b)]) | (np.abs(da - db) > depth_rel_tol * np.minimum(da, db))
        edges[tuple(a)] |= jump
        edges[tuple(b)] |= jump
    return edges


def _dilate(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Pixels within Euclidean distance ``radius_px`` of a set pixel."""
    r = int(math.floor(radius_px))
    padded = np.pad(mask, r, mode="constant")
    height, width = mask.shape
    out = np.zeros_like(mask)
    for dv in range(-r, r + 1):
        for du in range(-r, r + 1):
            if dv * dv + du * du <= radius_px * radius_px:
                out |= padded[r + dv : r + dv + height, r + du : r + du + width]
    return out


def edge_f_score(predicted: np.ndarray, reference: np.ndarray, tolerance_px: float = 2.0) -> dict:
    """Precision, recall and F-score of predicted edge pixels against reference edge pixels, where a pixel counts
    as matched when an edge of the other set lies within ``tolerance_px``. Two empty edge maps agree (F = 1)."""
    predicted = np.asarray(predicted, dtype=bool)
    reference = np.asarray(reference, dtype=bool)
    if predicted.shape != reference.shape:
        raise ValueError(f"edge maps differ in shape: {predicted.shape} vs {reference.shape}")
    if not predicted.any() and not reference.any():
        return {"precision": 1.0, "recall": 1.0, "f_score": 1.0}
    precision = float((predicted & _dilate(reference, tolerance_px)).sum() / max(predicted.sum(), 1))
    recall = float((reference & _dilate(predicted, tolerance_px)).sum() / max(reference.sum(), 1))
    f_score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f_score": f_score}


def patch_grid_ratio(clip: np.ndarray, periods: Sequence[int] = (8, 16), object_ids: np.ndarray | None = None
                     ) -> float:
    """How visible a patch grid is: the mean absolute colour step across pixel borders at multiples of a period
    (between columns p*k - 1 and p*k, and rows likewise) over the mean step everywhere else, the largest over
    ``periods``. About 1.0 for a render; a clip upsampled from 8x8 patches shows its grid well above that.

    With ``object_ids`` (F, H, W, the ID pass) steps between two objects are left out on both sides: an object's
    outline that happens to lie along a grid line is a real edge, many times the mean step, and on held-out shots
    the 1% of grid-line steps that were outlines made 0.2-0.3 of the ratio, in the Cycles target as in the clip."""
    clip = np.asarray(clip, dtype=np.float64)
    clip = clip / 255.0 if clip.max() > 1.0 else clip
    dx = np.abs(np.diff(clip, axis=2)).mean(axis=-1)  # (F, H, W-1): step between columns x and x + 1
    dy = np.abs(np.diff(clip, axis=1)).mean(axis=-1)  # (F, H-1, W)
    keep_x, keep_y = np.ones(dx.shape, bool), np.ones(dy.shape, bool)
    if object_ids is not None:
        keep_x, keep_y = object_ids[:, :, 1:] == object_ids[:, :, :-1], object_ids[:, 1:] == object_ids[:, :-1]
    ratios = []
    for period in periods:
        on_x = np.broadcast_to((np.arange(1, clip.shape[2]) % period) == 0, dx.shape)
        on_y = np.broadcast_to(((np.arange(1, clip.shape[1]) % period) == 0)[:, None], dy.shape)
        border = np.concatenate([dx[on_x & keep_x], dy[on_y & keep_y]])
        rest = np.concatenate([dx[~on_x & keep_x], dy[~on_y & keep_y]])
        if border.size and rest.size and rest.mean() > 0:
            ratios.append(float(border.mean() / rest.mean()))
    return max(ratios) if ratios else float("nan")


def colour_drift(clip: np.ndarray, object_ids: np.ndarray, min_pixels: int = 16) -> dict[int, float]:
    """Per object: how far the mean colour of its pixels in the last quarter of the shot has moved from the first
    quarter's, relative to the first (|last - first| / |first|, RGB). Objects seen too little in either quarter
    (fewer than ``min_pixels``) are left out."""
    frames = len(clip)
    quarter = max(frames // 4, 1)
    first, last = slice(0, quarter), slice(frames - quarter, frames)
    drift = {}
    for obj in np.unique(object_ids):
        if obj == 0:
            continue
        a, b = object_ids[first] == obj, object_ids[last] == obj
        if a.sum() < min_pixels or b.sum() < min_pixels:
            continue
        start, end = mean_colour(clip[first], a), mean_colour(clip[last], b)
        drift[int(obj)] = float(np.linalg.norm(end - start) / max(np.linalg.norm(start), 1e-6))
    return drift
