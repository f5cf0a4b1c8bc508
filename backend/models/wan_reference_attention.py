"""Per-object masked references on Wan: our multi-masked IP-Adapter idea carried to Wan's attention.

Wan VACE takes reference images as extra latent frames in front of the video, and every token attends to every
other, so each reference's look leaks into the whole frame. ``MaskedReferenceWanProcessor`` (a processor for
diffusers' ``WanAttention``, which lets processors be swapped) restricts it: in self-attention a video token may
attend to reference ``r``'s tokens only where object ``r`` covers it at that latent frame (from the bundle's ID
pass, ``ReferenceLayout``); reference tokens attend only to their own frame, so each reference is read as it is.
Where a model has image cross-attention (Wan I2V's ``add_k_proj``/``add_v_proj``) with one block of image tokens
per reference, that branch is masked per object the same way.

The queries are grouped by the set of references they may see, and each group attends to exactly the keys it is
allowed (gathered, not masked with -inf): a token outside object ``r``'s mask gets the very same computation with
and without reference ``r`` in the layer, so its output is bit-identical (``tests/test_wan_adapter.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ReferenceLayout:
    """Where the references are in a Wan token sequence and which video tokens each may reach.

    The sequence is frame-major: ``num_references`` reference frames first, then the video's latent frames, each
    of ``tokens_per_frame`` tokens. ``masks`` is (num_references, video_tokens) bool: True where the reference's
    object covers the token. ``image_tokens_per_reference`` is the length of each reference's block in an image
    cross-attention context (0: no such branch).
    """

    num_references: int
    tokens_per_frame: int
    masks: torch.Tensor
    image_tokens_per_reference: int = 0

    def __post_init__(self):
        if self.masks.dtype != torch.bool or self.masks.ndim != 2 or self.masks.shape[0] != self.num_references:
            raise ValueError(f"masks: expected ({self.num_references}, video tokens) bool, got "
                             f"{tuple(self.masks.shape)} {self.masks.dtype}")

    @property
    def reference_tokens(self) -> int:
        return self.num_references * self.tokens_per_frame

    def without(self, index: int) -> ReferenceLayout:
        """The layout with reference ``index`` left out (its frame and its mask)."""
        keep = [r for r in range(self.num_references) if r != index]
        return ReferenceLayout(self.num_references - 1, self.tokens_per_frame, self.masks[keep],
                               self.image_tokens_per_reference)


def _rotary(hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on (B, N, heads, dim): interleaved pairs, as diffusers' WanAttnProcessor does."""
    x1, x2 = hidden.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(hidden)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden)


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """SDPA on (B, N, heads, dim) tensors, answered as (B, N, heads * dim)."""
    out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
    return out.transpose(1, 2).flatten(2, 3)


class MaskedReferenceWanProcessor:
    """A ``WanAttention`` processor; with ``layout`` None it computes exactly what diffusers' WanAttnProcessor does
    (plain SDPA), so it can stay installed between shots."""

    def __init__(self, layout: ReferenceLayout | None = None):
        self.layout = layout

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, rotary_emb=None) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("MaskedReferenceWanProcessor builds its own masks; an attention_mask is not supported")
        self_attention = encoder_hidden_states is None
        image_context = None
        if attn.add_k_proj is not None:  # I2V: image tokens first, then the 512 text tokens
            image_length = encoder_hidden_states.shape[1] - 512
            image_context = encoder_hidden_states[:, :image_length]
            encoder_hidden_states = encoder_hidden_states[:, image_length:]
        context = hidden_states if self_attention else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        if rotary_emb is not None:
            query, key = _rotary(query, *rotary_emb), _rotary(key, *rotary_emb)

        if self_attention and self.layout is not None and self.layout.num_references:
            out = self._masked_self_attention(query, key, value)
        else:
            out = _attend(query, key, value)
        out = out.type_as(query)
        if image_context is not None:
            key_img = attn.norm_added_k(attn.add_k_proj(image_context)).unflatten(2, (attn.heads, -1))
            value_img = attn.add_v_proj(image_context).unflatten(2, (attn.heads, -1))
            if self.layout is not None and self.layout.image_tokens_per_reference:
                out = out + self._masked_image_attention(query, key_img, value_img).type_as(query)
            else:
                out = out + _attend(query, key_img, value_img).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    def _groups(self) -> list[tuple[torch.Tensor, list[int]]]:
        """(video token indices, the references they may see) for each distinct set of references."""
        masks = self.layout.masks
        weights = 2 ** torch.arange(masks.shape[0], dtype=torch.int64)
        codes = (masks.to(torch.int64) * weights[:, None]).sum(0)
        groups = []
        for code in torch.unique(codes).tolist():
            refs = [r for r in range(masks.shape[0]) if code >> r & 1]
            groups.append((torch.nonzero(codes == code).squeeze(1), refs))
        return groups

    def _masked_self_attention(self, query, key, value) -> torch.Tensor:
        layout = self.layout
        per_frame, ref_tokens = layout.tokens_per_frame, layout.reference_tokens
        if query.shape[1] != ref_tokens + layout.masks.shape[1]:
            raise ValueError(f"the layout describes {ref_tokens + layout.masks.shape[1]} tokens, the layer got "
                             f"{query.shape[1]}")
        out = torch.empty(query.shape[0], query.shape[1], query.shape[2] * query.shape[3], dtype=query.dtype,
                          device=query.device)
        for r in range(layout.num_references):  # each reference reads only itself
            own = slice(r * per_frame, (r + 1) * per_frame)
            out[:, own] = _attend(query[:, own], key[:, own], value[:, own])
        video_key, video_value = key[:, ref_tokens:], value[:, ref_tokens:]
        for tokens, refs in self._groups():
            rows = tokens + ref_tokens
            allowed = [torch.arange(r * per_frame, (r + 1) * per_frame, device=query.device) for r in refs]
            if allowed:
                index = torch.cat(allowed)
                group_key = torch.cat([key[:, index], video_key], dim=1)
                group_value = torch.cat([value[:, index], video_value], dim=1)
            else:
                group_key, group_value = video_key, video_value
            out[:, rows] = _attend(query[:, rows], group_key, group_value)
        return out

    def _masked_image_attention(self, query, key_img, value_img) -> torch.Tensor:
        """Image cross-attention where each video token reads only the image tokens of the references covering
        it (none: no image contribution); reference tokens read their own reference's image tokens."""
        layout = self.layout
        per_image, per_frame, ref_tokens = layout.image_tokens_per_reference, layout.tokens_per_frame, \
            layout.reference_tokens
        if key_img.shape[1] != layout.num_references * per_image:
            raise ValueError(f"the layout describes {layout.num_references} x {per_image} image tokens, the layer got "
                             f"{key_img.shape[1]}")
        out = torch.zeros(query.shape[0], query.shape[1], query.shape[2] * query.shape[3], dtype=query.dtype,
                          device=query.device)
        for r in range(layout.num_references):
            own, image = slice(r * per_frame, (r + 1) * per_frame), slice(r * per_image, (r + 1) * per_image)
            out[:, own] = _attend(query[:, own], key_img[:, image], value_img[:, image])
        for tokens, refs in self._groups():
            if not refs:
                continue
            index = torch.cat([torch.arange(r * per_image, (r + 1) * per_image, device=query.device) for r in refs])
            rows = tokens + ref_tokens
            out[:, rows] = _attend(query[:, rows], key_img[:, index], value_img[:, index])
        return out


def install(transformer, layout: ReferenceLayout | None) -> int:
    """Put a ``MaskedReferenceWanProcessor`` with ``layout`` on every self- and cross-attention of a Wan (VACE)
    transformer, its VACE blocks included; returns how many layers got it."""
    count = 0
    for module in transformer.modules():
        if type(module).__name__ == "WanAttention":
            module.set_processor(MaskedReferenceWanProcessor(layout))
            count += 1
    return count
