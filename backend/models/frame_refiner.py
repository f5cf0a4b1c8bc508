"""FrameRefiner: the DiT's clip, upsampled to the bundle's resolution, made sharp where the engine passes say.

The DiT works on a small token budget (8x8 patches of a 128x72 frame), so its frames are soft and carry a faint
patch grid; upsampled to 256x144 that grid lands every 16 pixels. The guidance passes, though, are exact at the
bundle's own resolution. This small convolutional network reads the upsampled frame beside the full-resolution
inverse depth, normals, ID edges and clay pass (``backend.conditioning.FULL_RES_CHANNELS``) and predicts a residual,
so edges go where the ID, depth and normal discontinuities are and shading follows the clay pass. Its last layer
starts at zero: an untrained refiner is plain bilinear upsampling. It is fully convolutional (any size), and runs
frame by frame after sampling (``PrevisPipeline``); it is trained on the DiT's own clean-frame predictions
(``backend.training.losses``). With ``albedo`` (the DiT paints albedo) it refines the albedo and lights it with the
full-resolution clay pass (``backend.conditioning.lit_by_clay``), so the shading and shadow edges of the delivered
frame are the engine's own at the bundle's resolution.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from backend.conditioning import FULL_RES_CHANNELS, SHADING_CHANNELS, lit_by_clay


def upsampled_frames(frames: torch.Tensor, guidance: torch.Tensor, albedo: bool) -> torch.Tensor:
    """(N, 3, h, w) frames (or albedo) in [-1, 1] brought to the size of the full-resolution ``guidance`` (clay pass
    and its flag last) bilinearly, and lit by its clay pass when they are ``albedo``: the baseline a refiner is
    measured against in training, and what an albedo refiner starts as."""
    if frames.shape[-2:] != guidance.shape[-2:]:
        frames = F.interpolate(frames, size=guidance.shape[-2:], mode="bilinear", align_corners=False)
    return lit_by_clay(frames, guidance[:, -SHADING_CHANNELS:]) if albedo else frames


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(x)))


class FrameRefiner(ModelMixin, ConfigMixin):
    """(N, 3, h, w) frames (or albedo) in [-1, 1] + (N, guidance_channels, H, W) full-resolution guidance, the clay
    pass and its flag last -> (N, 3, H, W) frames."""

    @register_to_config
    def __init__(self, guidance_channels: int = FULL_RES_CHANNELS, width: int = 32, num_blocks: int = 4,
                 albedo: bool = False):
        super().__init__()
        self.conv_in = nn.Conv2d(3 + guidance_channels, width, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(width) for _ in range(num_blocks)])
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # starts as bilinear upsampling
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, frames: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        refined = self.paint(frames, guidance)
        if self.config.albedo:
            return lit_by_clay(refined, guidance[:, -SHADING_CHANNELS:])
        return refined

    def paint(self, frames: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """The refined frames, or in ``albedo`` mode the refined albedo before the clay pass lights it."""
        if guidance.shape[1] != self.config.guidance_channels or guidance.shape[0] != frames.shape[0]:
            raise ValueError(f"guidance must be ({frames.shape[0]}, {self.config.guidance_channels}, H, W), "
                             f"got {tuple(guidance.shape)}")
        upsampled = F.interpolate(frames, size=guidance.shape[-2:], mode="bilinear", align_corners=False)
        x = self.conv_in(torch.cat([upsampled, guidance.to(frames.dtype)], dim=1))
        return upsampled + self.conv_out(F.gelu(self.body(F.gelu(x))))
