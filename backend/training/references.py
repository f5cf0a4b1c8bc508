"""Procedural reference images: the looks objects wear in training targets and in the demo.

Each look is a palette (two or three colours) and a pattern, so that "paint the object in its reference's look"
is learnable from a small image: mean colour, contrast and pattern scale all vary from look to look.
"""

from __future__ import annotations

import numpy as np

PATTERNS = ("solid", "stripes", "checker", "dots", "gradient", "noise")


def random_palette(rng: np.random.Generator, n_colours: int = 3) -> np.ndarray:
    """Saturated, well-separated colours (HSV with random hue and high value), as uint8 RGB rows."""
    hues = (rng.uniform(0, 1) + np.arange(n_colours) * rng.uniform(0.12, 0.45)) % 1.0
    sats = rng.uniform(0.45, 0.95, n_colours)
    vals = rng.uniform(0.55, 1.0, n_colours)
    return (hsv_to_rgb(hues, sats, vals) * 255).round().astype(np.uint8)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]


def make_reference(rng: np.random.Generator, size: int = 64, pattern: str | None = None) -> np.ndarray:
    """One reference image (size, size, 3) uint8."""
    pattern = pattern or PATTERNS[rng.integers(len(PATTERNS))]
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    palette = random_palette(rng).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    period = rng.uniform(0.12, 0.5)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    if pattern == "solid":
        weight = np.zeros_like(xx)
    elif pattern == "stripes":
        weight = (np.floor(u / period) % 2).astype(np.float32)
    elif pattern == "checker":
        weight = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    elif pattern == "dots":
        cx, cy = (xx % period) / period - 0.5, (yy % period) / period - 0.5
        weight = (cx**2 + cy**2 < 0.09).astype(np.float32)
    elif pattern == "gradient":
        weight = np.clip(u, 0, 1)
    else:
        coarse = rng.uniform(0, 1, (8, 8)).astype(np.float32)
        weight = np.kron(coarse, np.ones((size // 8, size // 8), np.float32))[:size, :size]
    image = palette[0] * (1 - weight[..., None]) + palette[1] * weight[..., None]
    if pattern in ("dots", "checker"):
        image = 0.85 * image + 0.15 * palette[2]
    return np.clip(image, 0, 255).round().astype(np.uint8)
