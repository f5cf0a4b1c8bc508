"""Multi-masked IP-Adapter: one reference image per object, each allowed to act only inside its object's mask.

The processor runs on a diffusers ``Attention`` (self-attention over a frame's tokens in PrevisDiT) and adds a
decoupled cross-attention to reference tokens, IP-Adapter style (Ye et al. 2023, arXiv:2308.06721): the layer's
own query attends to keys/values made by this processor's ``to_k_ip``/``to_v_ip``. With R references the output is

    out = to_out( SDPA(q, k, v) + sum_r weight_r[token] * SDPA(q, to_k_ip(ref_r), to_v_ip(ref_r)) )

where ``weight_r`` is object r's token coverage (area-pooled from the ID pass, frame by frame) times its strength.
The branch is added before ``to_out``, a per-token linear map, so a token where ``weight_r == 0`` comes out
bit-identical with and without reference r in this layer (later layers mix tokens, as with diffusers' masked
IP-Adapter for images). One ``to_k_ip``/``to_v_ip`` pair serves every reference: shots have any number of
objects, and what tells references apart is their image and their mask, not a slot.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


class MaskedIPAttnProcessor(nn.Module):
    """Attention processor with the masked multi-reference branch; its weights live in the processor.

    Call-time inputs (through ``Attention.__call__`` kwargs, both names diffusers passes quietly):
      ``ip_hidden_states``: (B, R, T_ref, reference_dim) reference tokens, or None for plain attention;
      ``ip_adapter_masks``: (B, R, N) per-token weights (coverage x strength), or (B, R, 1) to apply a reference to
      every token (the unmasked leakage baseline), or None for weight 1 everywhere.
    """

    def __init__(self, hidden_size: int, reference_dim: int):
        super().__init__()
        self.to_k_ip = nn.Linear(reference_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(reference_dim, hidden_size, bias=False)

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, ip_hidden_states: torch.Tensor | None = None,
                 ip_adapter_masks: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        heads = attn.heads
        query = attn.to_q(hidden_states)
        key, value = attn.to_k(context), attn.to_v(context)
        head_dim = query.shape[-1] // heads

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, L, heads * hd) -> (B, heads, L, hd)
            return x.view(batch, -1, heads, head_dim).transpose(1, 2)

        query, key, value = split(query), split(key), split(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        out = out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)  # (B, N, inner)

        if ip_hidden_states is not None:
            out = out + self.reference_branch(query, ip_hidden_states, ip_adapter_masks, heads)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    def reference_branch(self, query: torch.Tensor, references: torch.Tensor, weights: torch.Tensor | None,
                         heads: int) -> torch.Tensor:
        """Sum over references of mask-weighted attention to each one's tokens. query: (B, heads, N, hd)."""
        batch, _, tokens, head_dim = query.shape
        if references.ndim != 4 or references.shape[0] != batch:
            raise ValueError(f"ip_hidden_states must be (batch={batch}, R, T_ref, dim), got {tuple(references.shape)}")
        n_refs, n_ref_tokens = references.shape[1], references.shape[2]
        if weights is not None and (weights.shape[:2] != (batch, n_refs) or weights.shape[2] not in (1, tokens)):
            raise ValueError(f"ip_adapter_masks must be (batch={batch}, R={n_refs}, {tokens} tokens or 1), "
                             f"got {tuple(weights.shape)}")
        out = torch.zeros(batch, tokens, heads * head_dim, dtype=query.dtype, device=query.device)
        for r in range(n_refs):  # one softmax per reference: references do not compete for attention
            # projected one reference at a time, so its numbers never depend on how many others are present
            key = self.to_k_ip(references[:, r]).view(batch, n_ref_tokens, heads, head_dim).transpose(1, 2)
            value = self.to_v_ip(references[:, r]).view(batch, n_ref_tokens, heads, head_dim).transpose(1, 2)
            o = F.scaled_dot_product_attention(query, key, value)  # (B, heads, N, hd)
            o = o.transpose(1, 2).reshape(batch, tokens, heads * head_dim)
            out = out + (o if weights is None else o * weights[:, r, :, None].to(o.dtype))
        return out


def install_masked_ip(model: nn.Module, hidden_size: int, reference_dim: int, name_filter: str = ".attn1.") -> int:
    """Give every ``Attention`` whose processor name contains ``name_filter`` a fresh MaskedIPAttnProcessor.

    Works on any model with diffusers' ``AttentionMixin`` (``attn_processors``/``set_attn_processor``); returns the
    number of layers changed.
    """
    processors = dict(model.attn_processors)
    names = [name for name in processors if name_filter in name]
    for name in names:
        processors[name] = MaskedIPAttnProcessor(hidden_size, reference_dim)
    model.set_attn_processor(processors)
    return len(names)
