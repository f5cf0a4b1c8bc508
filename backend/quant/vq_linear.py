"""`VQLinear`: a linear layer stored as bit-packed codebook assignments plus an fp16 codebook.

The weight (out, in) is cut into sub-vectors of d consecutive input weights along each row; sub-vector j of the
flattened weight is `codebook[codes[j]]`, times its row's fp16 scale where the layer has them; several layers may
share one codebook tensor (`tie_codebooks`). Two modes trade memory for speed (measured in diffusers-probe.md §5: at
few tokens the gather dominates, at thousands of tokens it adds 5-10 %):
  - "cached": dequantize once on first use and keep the dense weight (fast);
  - "per_call": dequantize inside every forward (least memory: only the packed codes stay resident).
Either way the output equals `F.linear(x, dequantized_weight, bias)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from backend.quant.packing import pack_codes, packed_size, unpack_codes

MODES = ("cached", "per_call")


class PackedLinear(nn.Module):
    """Shared runtime of packed linear layers: subclasses define `dequantize()` and `storage_bits()`."""

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self._dense = None

    def dequantize(self) -> torch.Tensor:
        raise NotImplementedError

    def storage_bits(self) -> int:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "per_call":
            weight = self.dequantize()
        else:
            if self._dense is None:
                self._dense = self.dequantize()
            weight = self._dense
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight.to(x.dtype), bias)


class VQLinear(PackedLinear):
    def __init__(
        self, in_features: int, out_features: int, d: int, k: int, bias: bool = True, mode: str = "cached",
        row_scale: bool = False,
    ) -> None:
        super().__init__()
        if in_features % d:
            raise ValueError(f"in_features={in_features} is not a multiple of the sub-vector size d={d}")
        if k < 2 or k & (k - 1):
            raise ValueError(f"codebook size k must be a power of two >= 2, got {k}")
        self.in_features, self.out_features, self.d, self.k = in_features, out_features, d, k
        self.code_bits = int(math.log2(k))
        self.num_subvectors = out_features * in_features // d
        self.register_buffer("codes", torch.zeros(packed_size(self.num_subvectors, self.code_bits), dtype=torch.uint8))
        self.register_buffer("codebook", torch.zeros(k, d, dtype=torch.float16))  # (k, d)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        # fp16 scale of each output row (rows were quantized scaled to unit RMS), or None
        self.register_buffer("row_scale", torch.ones(out_features, dtype=torch.float16) if row_scale else None)
        self.register_buffer("_dense", None, persistent=False)
        self.codebook_users = 1  # layers sharing this codebook (`tie_codebooks`); each counts its share of the bits
        self.set_mode(mode)

    @classmethod
    def from_assignments(
        cls, assignments: torch.Tensor, codebook: torch.Tensor, bias: torch.Tensor | None, in_features: int,
        mode: str = "cached", row_scale: torch.Tensor | None = None,
    ) -> VQLinear:
        """Build from integer assignments (out * in / d,), a codebook (k, d) and optionally row scales (out,)."""
        k, d = codebook.shape
        out_features = assignments.numel() * d // in_features
        layer = cls(in_features, out_features, d, k, bias=bias is not None, mode=mode, row_scale=row_scale is not None)
        layer.codes.copy_(pack_codes(assignments, layer.code_bits))
        layer.codebook.copy_(codebook.detach())
        if bias is not None:
            layer.bias.copy_(bias.detach())
        if row_scale is not None:
            layer.row_scale.copy_(row_scale.detach())
        return layer

    def assignments(self) -> torch.Tensor:
        return unpack_codes(self.codes, self.code_bits, self.num_subvectors)  # (out * in / d,)

    def dequantize(self) -> torch.Tensor:
        """The dense weight (out, in) in float32."""
        weight = F.embedding(self.assignments(), self.codebook.float()).view(self.out_features, self.in_features)
        return weight if self.row_scale is None else weight * self.row_scale.float().unsqueeze(1)

    def storage_bits(self) -> float:
        """Bits stored for the weight: packed codes, the fp16 codebook (or this layer's share of a shared one) and
        the fp16 row scales if any (the bias is counted apart)."""
        scales = 0 if self.row_scale is None else self.row_scale.numel() * 16
        return self.codes.numel() * 8 + self.codebook.numel() * 16 / self.codebook_users + scales

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, d={self.d}, k={self.k}, "
                f"row_scale={self.row_scale is not None}, mode={self.mode}")


def tie_codebooks(layers: list[VQLinear]) -> None:
    """Make the layers use the first one's codebook tensor (their codes index one shared codebook)."""
    for layer in layers:
        if layer.codebook.shape != layers[0].codebook.shape:
            raise ValueError(f"cannot share a {tuple(layers[0].codebook.shape)} codebook with a layer of "
                             f"{tuple(layer.codebook.shape)}")
        layer.codebook = layers[0].codebook
        layer.codebook_users = len(layers)
        layer._dense = None


def set_quantized_mode(model: nn.Module, mode: str) -> None:
    """Switch every quantized layer of a model between "cached" and "per_call"."""
    for module in model.modules():
        if isinstance(module, PackedLinear):
            module.set_mode(mode)
