"""Bit-packing of integer codes (codebook assignments, uniform levels) at any width from 1 to 16 bits.

Codes are laid out LSB-first in one continuous bit stream, so a layer of N codes at b bits costs exactly
ceil(N * b / 8) bytes: 2-bit VQ (k=256) is one byte per code, 3-bit VQ (k=64) packs four codes in three bytes.
"""

from __future__ import annotations

import torch


def packed_size(count: int, bits: int) -> int:
    """Bytes needed for `count` codes of `bits` bits each."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be between 1 and 16, got {bits}")


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative integer codes (any shape, flattened) into a uint8 tensor of `packed_size` bytes."""
    _check_bits(bits)
    codes = torch.as_tensor(codes).reshape(-1).to(torch.int32)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {(1 << bits) - 1}] to pack at {bits} bits")
    if bits == 8:
        return codes.to(torch.uint8)
    shifts = torch.arange(bits, dtype=torch.int32)
    stream = ((codes.unsqueeze(1) >> shifts) & 1).to(torch.uint8).reshape(-1)  # (N * bits,) bits, LSB first
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).view(-1, 8)
    byte_weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)
    return (stream * byte_weights).sum(1, dtype=torch.int32).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of `pack_codes`: the first `count` codes as int64 (ready for indexing)."""
    _check_bits(bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError("packed codes must be a 1-D uint8 tensor")
    if packed.numel() != packed_size(count, bits):
        raise ValueError(f"{packed.numel()} bytes cannot hold exactly {count} codes of {bits} bits")
    if bits == 8:
        return packed.long()
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    stream = ((packed.unsqueeze(1) >> shifts) & 1).reshape(-1)[: count * bits].view(count, bits)
    weights = torch.tensor([1 << i for i in range(bits)], dtype=torch.int32, device=packed.device)
    return (stream.to(torch.int32) * weights).sum(1).long()
