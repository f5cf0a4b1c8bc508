"""Edge snapping: put the painted colour's object edges exactly where the ID pass has them.

The DiT paints a token per patch, so an object boundary that crosses a patch comes out soft: the token's colour
bleeds a few pixels into the neighbouring object, while a boundary that happens to lie on a patch border comes out
sharp. The refiner only partly undoes it. On held-out shot 1000002 (a pedestal shot) the colour step across object
boundaries was 0.145 on 8-aligned columns and 0.093 elsewhere (the Cycles render: 0.176 and 0.141), which is most of
its patch-grid ratio of 1.19. The passes are exact at full resolution, so near a boundary the painting need not be
trusted: every pixel within ``radius`` of another object takes the mean of its own object's pixels just beyond that
band (a window of twice the radius), and the clay pass lights the result, so the edge is the ID pass's and the
shading at it the engine's. A pixel whose object has nothing beyond the band nearby (a thin part) keeps its colour.

Chosen on 12 training shots, delivered mp4 (radius 0, 1, 2, 3): mean PSNR vs Cycles 28.24, 28.22, 28.25, 28.24 dB,
edge F 0.666, 0.670, 0.674, 0.682, patch-grid ratio lower on 9 of 11 lit shots at radius 2 (worst 1.15 -> 1.08; a
shot whose render scores 1.7 went 1.70 -> 1.75). Radius 3 cost up to 0.5 dB on a cluttered shot, so radius 2.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

EDGE_SNAP_RADIUS = 2


def snap_to_object_edges(frames: torch.Tensor, object_ids: np.ndarray, radius: int = EDGE_SNAP_RADIUS) -> torch.Tensor:
    """(N, C, H, W) painted frames and their (N, H, W) ID pass -> the frames with every pixel within ``radius``
    pixels of another object filled from its own object's pixels beyond that band. ``radius`` 0: unchanged."""
    if radius <= 0:
        return frames
    if tuple(object_ids.shape) != (frames.shape[0], *frames.shape[-2:]):
        raise ValueError(f"object_ids {tuple(object_ids.shape)} must be the frames' (N, H, W) "
                         f"{(frames.shape[0], *frames.shape[-2:])}")
    labels, inverse = np.unique(object_ids, return_inverse=True)
    ids = torch.from_numpy(inverse.reshape(object_ids.shape)).to(frames.device, torch.float32)[:, None]
    window = 2 * radius + 1
    near_other = F.max_pool2d(ids, window, 1, radius) != -F.max_pool2d(-ids, window, 1, radius)
    out = frames
    for label in range(len(labels)):
        own = ids == label
        beyond = (own & ~near_other).to(frames.dtype)
        total = F.avg_pool2d(frames * beyond, 2 * window - 1, 1, 2 * radius, count_include_pad=False)
        weight = F.avg_pool2d(beyond, 2 * window - 1, 1, 2 * radius, count_include_pad=False)
        fill = own & near_other & (weight > 0)
        out = torch.where(fill, total / weight.clamp_min(1e-6), out)
    return out
