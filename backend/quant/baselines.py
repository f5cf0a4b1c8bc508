"""Round-to-nearest (RTN) uniform quantization: the scale-setting baseline beside VQ4DiT.

Asymmetric min-max quantization with 2^bits levels, per output channel (one scale and offset per row) or
group-wise (one per `group_size` consecutive input weights of a row). Scales and offsets are stored in fp16 and
the levels are computed against those fp16 values, so what is stored dequantizes to exactly what was measured.
The k-means and codebook-only VQ baselines share VQ4DiT's code path (`backend.quant.vq4dit.quantize_model`).
"""

from __future__ import annotations

import torch
from torch import nn

from backend.quant.packing import pack_codes, packed_size, unpack_codes
from backend.quant.vq_linear import PackedLinear


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Levels (out, in) int64, scale and offset (out, in / group_size) fp16 for `weight` (out, in)."""
    out_features, in_features = weight.shape
    if in_features % group_size:
        raise ValueError(f"in_features={in_features} is not a multiple of group_size={group_size}")
    groups = weight.detach().float().reshape(out_features, in_features // group_size, group_size)
    low, high = groups.amin(-1), groups.amax(-1)  # (out, groups)
    levels = (1 << bits) - 1
    scale = ((high - low) / levels).clamp_min(1e-8).half()
    offset = low.half()
    q = torch.round((groups - offset.float().unsqueeze(-1)) / scale.float().unsqueeze(-1)).clamp(0, levels)
    return q.long().reshape(out_features, in_features), scale, offset


class UniformLinear(PackedLinear):
    """A linear layer stored as packed uniform levels with fp16 scale and offset per (row, group)."""

    def __init__(
        self, in_features: int, out_features: int, bits: int, group_size: int, bias: bool = True, mode: str = "cached"
    ) -> None:
        super().__init__()
        if in_features % group_size:
            raise ValueError(f"in_features={in_features} is not a multiple of group_size={group_size}")
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, bits, group_size
        groups = in_features // group_size
        self.register_buffer("codes", torch.zeros(packed_size(out_features * in_features, bits), dtype=torch.uint8))
        self.register_buffer("scale", torch.zeros(out_features, groups, dtype=torch.float16))
        self.register_buffer("offset", torch.zeros(out_features, groups, dtype=torch.float16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("_dense", None, persistent=False)
        self.set_mode(mode)

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int | None = None, mode: str = "cached"):
        """Quantize an nn.Linear; group_size None means one group per output channel."""
        group_size = group_size or linear.in_features
        layer = cls(linear.in_features, linear.out_features, bits, group_size, linear.bias is not None, mode)
        levels, scale, offset = rtn_quantize(linear.weight, bits, group_size)
        layer.codes.copy_(pack_codes(levels, bits))
        layer.scale.copy_(scale)
        layer.offset.copy_(offset)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer

    def dequantize(self) -> torch.Tensor:
        levels = unpack_codes(self.codes, self.bits, self.out_features * self.in_features).float()
        levels = levels.view(self.out_features, -1, self.group_size)  # (out, groups, group_size)
        weight = levels * self.scale.float().unsqueeze(-1) + self.offset.float().unsqueeze(-1)
        return weight.view(self.out_features, self.in_features)

    def storage_bits(self) -> int:
        """Bits stored for the weight: packed levels plus fp16 scales and offsets (the bias is counted apart)."""
        return self.codes.numel() * 8 + (self.scale.numel() + self.offset.numel()) * 16

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}, group_size={self.group_size}"
