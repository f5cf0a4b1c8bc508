"""Reference image -> reference tokens for the masked IP-Adapter.

``ReferenceEncoder`` is our own small encoder, trained together with the previs model: a strided conv stem keeps
colour, contrast and pattern scale (what a procedural look is made of), then one transformer layer lets the tokens
share context. ``CLIPReferenceAdapter`` is the path for larger models: it projects the penultimate hidden states
of a ``transformers.CLIPVisionModelWithProjection`` (the per-patch features IP-Adapter Plus uses) to the same
token format, so the DiT's IP processors do not care which encoder made the tokens.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class ReferenceEncoder(ModelMixin, ConfigMixin):
    """(B, 3, S, S) images in [-1, 1] -> (B, (S / 16)^2, reference_dim) tokens (16 tokens at the default S = 64)."""

    @register_to_config
    def __init__(self, reference_dim: int = 128, width: int = 64, num_heads: int = 4, image_size: int = 64):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, reference_dim, 4, stride=4),
        )
        grid = image_size // 16
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, reference_dim))
        nn.init.normal_(self.pos, std=0.02)
        self.mix = nn.TransformerEncoderLayer(reference_dim, num_heads, 2 * reference_dim, dropout=0.0,
                                              activation="gelu", batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(reference_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(f"reference images must be (B, 3, {size}, {size}), got {tuple(images.shape)}")
        x = self.stem(images).flatten(2).transpose(1, 2) + self.pos  # (B, T_ref, D)
        return self.norm(self.mix(x))


class CLIPReferenceAdapter(ModelMixin, ConfigMixin):
    """CLIP vision outputs -> (B, num_tokens, reference_dim): project the penultimate layer's patch tokens and pool
    them to a fixed count so the IP branch's cost does not grow with the CLIP resolution."""

    @register_to_config
    def __init__(self, clip_hidden_size: int, reference_dim: int = 128, num_tokens: int = 16):
        super().__init__()
        self.proj = nn.Linear(clip_hidden_size, reference_dim)
        self.norm = nn.LayerNorm(reference_dim)

    def forward(self, clip_outputs) -> torch.Tensor:
        """``clip_outputs``: what ``CLIPVisionModelWithProjection(pixels, output_hidden_states=True)`` returns."""
        if clip_outputs.hidden_states is None:
            raise ValueError("call the CLIP vision model with output_hidden_states=True")
        patches = clip_outputs.hidden_states[-2][:, 1:]  # (B, P, clip_hidden) without the class token
        pooled = F.adaptive_avg_pool1d(patches.transpose(1, 2), self.config.num_tokens).transpose(1, 2)
        return self.norm(self.proj(pooled))

    def encode(self, clip_model, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run ``clip_model`` (kept frozen) on preprocessed ``pixel_values`` and adapt its outputs."""
        with torch.no_grad():
            outputs = clip_model(pixel_values, output_hidden_states=True)
        return self(outputs)
