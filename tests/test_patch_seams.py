"""The patch-seam smoother: it takes a patch grid out of frames and leaves the edges that the passes show alone."""

import numpy as np
import pytest
import torch

from backend.eval.metrics import patch_grid_ratio
from backend.pipelines.patch_seams import smooth_patch_seams, smooth_upsampled_seams

PATCH = 8


def smooth_picture() -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, 72), torch.linspace(-1, 1, 128), indexing="ij")
    return torch.stack([0.6 * x, 0.4 * y, 0.3 * x * y])[None].repeat(2, 1, 1, 1)


def gridded_frames(seed: int = 0, vary: str = "both") -> torch.Tensor:
    """(2, 3, 72, 128) smooth colour gradients with a random colour offset per 8x8 block (a DiT's patch grid);
    ``vary`` "columns" or "rows" makes the offsets change only from block column to column, or row to row."""
    generator = torch.Generator().manual_seed(seed)
    offsets = 0.05 * torch.randn(2, 3, 72 // PATCH, 128 // PATCH, generator=generator)
    if vary == "columns":
        offsets = offsets[:, :, :1].expand_as(offsets)
    elif vary == "rows":
        offsets = offsets[..., :1].expand_as(offsets)
    return smooth_picture() + offsets.repeat_interleave(PATCH, dim=2).repeat_interleave(PATCH, dim=3)


def as_clip(frames: torch.Tensor) -> np.ndarray:
    return ((frames.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


def test_a_patch_grid_goes_and_the_picture_stays():
    frames = gridded_frames()
    flat_passes = torch.zeros(2, 4, 72, 128)
    smoothed = smooth_patch_seams(frames, flat_passes, PATCH)
    before, after = patch_grid_ratio(as_clip(frames), (8,)), patch_grid_ratio(as_clip(smoothed), (8,))
    assert before > 3.0
    assert after < 1.2, (before, after)
    # the picture under the grid comes closer, not further (0.041 -> 0.026 mean error on this one)
    assert (smoothed - smooth_picture()).abs().mean() < 0.75 * (frames - smooth_picture()).abs().mean()


def test_seams_on_real_edges_keep_their_step():
    columns = gridded_frames(1, vary="columns")
    passes = torch.zeros(2, 4, 72, 128)
    passes[:, 0, :, 64:] = 0.8  # a depth discontinuity on the seam between columns 63 and 64
    smoothed = smooth_patch_seams(columns, passes, PATCH)
    assert torch.allclose(smoothed[..., 64] - smoothed[..., 63], columns[..., 64] - columns[..., 63], atol=1e-6)
    step = lambda f: (f[..., 16] - f[..., 15]).abs().mean()  # noqa: E731  (a seam without an edge)
    assert step(smoothed) < 0.5 * step(columns)

    rows = gridded_frames(2, vary="rows")
    masks = torch.zeros(2, 2, 72, 128)
    masks[:, 1, 32:] = 1.0  # an object whose mask starts on the seam between rows 31 and 32 (an ID boundary)
    smoothed = smooth_patch_seams(rows, torch.zeros(2, 4, 72, 128), PATCH, masks)
    assert torch.allclose(smoothed[:, :, 32] - smoothed[:, :, 31], rows[:, :, 32] - rows[:, :, 31], atol=1e-6)
    step = lambda f: (f[:, :, 16] - f[:, :, 15]).abs().mean()  # noqa: E731
    assert step(smoothed) < 0.5 * step(rows)


def test_the_grid_left_at_the_upsampled_pitch_goes_but_object_boundaries_stay():
    """The DiT's 8-pixel grid, upsampled 2x to 256x144, lies every 16 pixels; an object's edge on one of those seams
    (from the full-resolution ID pass) keeps its step."""
    x = torch.linspace(-1, 1, 256)
    offsets = 0.05 * torch.randn(2, 3, 1, 256 // (2 * PATCH), generator=torch.Generator().manual_seed(3))
    frames = 0.6 * x + offsets.repeat_interleave(2 * PATCH, dim=3).expand(2, 3, 144, 256)
    object_ids = np.zeros((2, 144, 256), np.int32)
    object_ids[:, :, 128:] = 5  # an object from column 128, a seam of the 16-pixel grid
    smoothed = smooth_upsampled_seams(frames, torch.zeros(2, 4, 144, 256), object_ids, 2 * PATCH)
    assert patch_grid_ratio(as_clip(frames), (16,)) > 3.0
    assert torch.allclose(smoothed[..., 128] - smoothed[..., 127], frames[..., 128] - frames[..., 127], atol=1e-6)
    step = lambda f: (f[..., 32] - f[..., 31]).abs().mean()  # noqa: E731  (a seam without an edge)
    assert step(smoothed) < 0.5 * step(frames)


def test_smoothly_changing_passes_are_no_edge():
    """A slanted floor or a curved body: its depth and normals change at every pixel, steadily; the grid on it goes."""
    frames = gridded_frames(4)
    y, x = torch.meshgrid(torch.linspace(0, 1, 72), torch.linspace(0, 1, 128), indexing="ij")
    passes = torch.stack([0.9 * y, torch.sin(6 * x), torch.cos(6 * x), 0.3 * x * y])[None].repeat(2, 1, 1, 1)
    before = patch_grid_ratio(as_clip(frames), (8,))
    after = patch_grid_ratio(as_clip(smooth_patch_seams(frames, passes, PATCH)), (8,))
    assert before > 3.0 and after < 1.2, (before, after)


def test_a_change_travels_at_most_a_patch():
    """A change to one region of a frame moves pixels at most one patch (plus the two pixels the seam reads) away."""
    frames = gridded_frames(3)
    changed = frames.clone()
    changed[:, :, 30:38, 50:60] += 0.3
    flat = torch.zeros(2, 4, 72, 128)
    moved = (smooth_patch_seams(changed, flat, PATCH) - smooth_patch_seams(frames, flat, PATCH)).abs().amax(dim=(0, 1))
    reach = PATCH // 2 + 2
    outside = torch.ones(72, 128, dtype=torch.bool)
    outside[30 - reach:38 + reach, 50 - reach:60 + reach] = False
    assert moved[outside].max() == 0 and moved[~outside].max() > 0


def test_small_patches_and_mismatched_guidance():
    frames = gridded_frames()
    assert torch.equal(smooth_patch_seams(frames, torch.zeros(2, 4, 72, 128), 2), frames)
    with pytest.raises(ValueError, match="do not match"):
        smooth_patch_seams(frames, torch.zeros(2, 4, 36, 64), PATCH)
    with pytest.raises(ValueError, match="masks"):
        smooth_patch_seams(frames, torch.zeros(2, 4, 72, 128), PATCH, torch.zeros(1, 2, 72, 128))
