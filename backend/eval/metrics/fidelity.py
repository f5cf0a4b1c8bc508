"""Fidelity to a target render: PSNR and SSIM, over the frame or inside a mask."""

from __future__ import annotations

import math

import numpy as np


def _masked_mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean of ``values`` over the pixels in ``mask`` (all when None; nan when the mask is empty)."""
    if mask is None:
        return float(values.mean())
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != values.shape[: mask.ndim]:
        raise ValueError(f"mask {mask.shape} does not match the image {values.shape}")
    return float(values[mask].mean()) if mask.any() else math.nan


def psnr(image: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """PSNR in dB over all pixels, or only those inside ``mask``; inf for identical images, nan for an empty mask."""
    image = np.asarray(image, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if image.shape != target.shape:
        raise ValueError(f"image {image.shape} and target {target.shape} differ in shape")
    mse = _masked_mean((image - target) ** 2, mask)
    if math.isnan(mse):
        return math.nan
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_blur(image: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """Separable Gaussian blur of the two leading axes with reflected borders."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    height, width = image.shape[:2]
    pad = [(radius, radius), (radius, radius)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="reflect")
    rows = sum(w * padded[k : k + height] for k, w in enumerate(taps))
    return sum(w * rows[:, k : k + width] for k, w in enumerate(taps))


def ssim_map(
    image: np.ndarray, target: np.ndarray, data_range: float = 1.0, sigma: float = 1.5, radius: int = 5
) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004, 11x11 Gaussian window with sigma 1.5), averaged over colour channels."""
    x = np.asarray(image, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise ValueError(f"image {x.shape} and target {y.shape} must be one (H, W) or (H, W, C) shape")
    if min(x.shape[:2]) <= radius:
        raise ValueError(f"images must be larger than {radius} pixels on each side for SSIM, got {x.shape[:2]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _gaussian_blur(x, sigma, radius), _gaussian_blur(y, sigma, radius)
    var_x = _gaussian_blur(x * x, sigma, radius) - mu_x**2
    var_y = _gaussian_blur(y * y, sigma, radius) - mu_y**2
    cov = _gaussian_blur(x * y, sigma, radius) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim.mean(axis=-1) if ssim.ndim == 3 else ssim


def ssim(image: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """Mean SSIM over the frame, or the mean of the SSIM map inside ``mask`` (nan for an empty mask)."""
    return _masked_mean(ssim_map(image, target, data_range), mask)
