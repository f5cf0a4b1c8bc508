"""The multi-masked IP-Adapter processor: each reference acts only inside its object's token mask."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from backend.conditioning import masks_to_tokens
from backend.models.masked_ip_adapter import MaskedIPAttnProcessor, install_masked_ip
from backend.models.previs_dit import PrevisDiT

DIM, HEADS, REF_DIM, REF_TOKENS = 32, 4, 24, 5


def masked_layer() -> Attention:
    torch.manual_seed(0)
    return Attention(DIM, heads=HEADS, dim_head=DIM // HEADS, bias=True, out_bias=True, qk_norm="rms_norm",
                     processor=MaskedIPAttnProcessor(DIM, REF_DIM))


def two_object_masks(frames=2, height=16, width=24, patch=4):
    """Object 0 covers the left 8 pixel columns, object 1 the right 8 (2 token columns each of 6): token weights."""
    pixels = torch.zeros(1, 2, frames, height, width)
    pixels[:, 0, ..., :8] = 1
    pixels[:, 1, ..., 16:] = 1
    return masks_to_tokens(pixels, patch)  # (1, 2, F, N)


def test_outside_mask_tokens_are_bit_identical_with_and_without_that_reference():
    layer = masked_layer()
    weights = two_object_masks().flatten(2)  # full-attention layout (1, R, F*N)
    x = torch.randn(1, weights.shape[-1], DIM)
    refs = torch.randn(1, 2, REF_TOKENS, REF_DIM)
    with torch.no_grad():
        both = layer(x, ip_hidden_states=refs, ip_adapter_masks=weights)
        only_1 = layer(x, ip_hidden_states=refs[:, 1:], ip_adapter_masks=weights[:, 1:])
        ref_0_off = layer(x, ip_hidden_states=refs, ip_adapter_masks=weights * torch.tensor([0.0, 1.0])[:, None])
        none = layer(x)
    inside_0, inside_1 = weights[0, 0] > 0, weights[0, 1] > 0
    assert inside_0.any() and (~inside_0).any()
    # removing reference 0 leaves every token outside object 0 bit-identical
    assert torch.equal(both[:, ~inside_0], only_1[:, ~inside_0])
    assert (both[:, inside_0] - only_1[:, inside_0]).abs().amax(-1).min() > 1e-4
    # strength 0 is the same as removing it
    assert torch.equal(ref_0_off, only_1)
    # tokens of neither object are untouched by any reference
    neither = ~(inside_0 | inside_1)
    assert torch.equal(both[:, neither], none[:, neither])


def test_changing_one_reference_changes_only_its_object():
    layer = masked_layer()
    weights = two_object_masks().flatten(2)
    x = torch.randn(2, weights.shape[-1], DIM)
    refs = torch.randn(2, 2, REF_TOKENS, REF_DIM)
    edited = refs.clone()
    edited[:, 1] = torch.randn(2, REF_TOKENS, REF_DIM)
    weights = weights.expand(2, -1, -1)
    with torch.no_grad():
        a = layer(x, ip_hidden_states=refs, ip_adapter_masks=weights)
        b = layer(x, ip_hidden_states=edited, ip_adapter_masks=weights)
    inside_1 = weights[0, 1] > 0
    assert torch.equal(a[:, ~inside_1], b[:, ~inside_1])
    assert ((a - b)[:, inside_1].abs().amax(-1) > 1e-4).all()


def test_unmasked_mode_leaks_everywhere():
    layer = masked_layer()
    x = torch.randn(1, 12, DIM)
    refs = torch.randn(1, 2, REF_TOKENS, REF_DIM)
    with torch.no_grad():
        for weights in (None, torch.ones(1, 2, 1)):
            both = layer(x, ip_hidden_states=refs, ip_adapter_masks=weights)
            kept = None if weights is None else weights[:, 1:]
            only_1 = layer(x, ip_hidden_states=refs[:, 1:], ip_adapter_masks=kept)
            assert ((both - only_1).abs().amax(-1) > 1e-4).all()


def test_strength_scales_the_reference_branch_linearly():
    layer = masked_layer()
    x = torch.randn(1, 12, DIM)
    refs = torch.randn(1, 1, REF_TOKENS, REF_DIM)
    q = layer.to_q(x).view(1, -1, HEADS, DIM // HEADS).transpose(1, 2)
    q = layer.norm_q(q)
    branch = layer.processor.reference_branch
    with torch.no_grad():
        one = branch(q, refs, torch.ones(1, 1, 12), HEADS)
        two = branch(q, refs, torch.full((1, 1, 12), 2.0), HEADS)
    torch.testing.assert_close(two, 2 * one)


def test_bad_mask_shape_is_a_clear_error():
    layer = masked_layer()
    with pytest.raises(ValueError, match="ip_adapter_masks"):
        layer(torch.randn(1, 12, DIM), ip_hidden_states=torch.randn(1, 2, REF_TOKENS, REF_DIM),
              ip_adapter_masks=torch.ones(1, 2, 7))


def test_masks_to_tokens_area_pools_frame_by_frame():
    pixels = torch.zeros(1, 3, 16, 16)  # (N_obj, F, H, W) -> token coverage
    pixels[0, 0, :8, :8] = 1  # exactly token 0 of frame 0
    pixels[0, 1, :4, :] = 1  # half of every top-row token in frame 1
    tokens = masks_to_tokens(pixels, 8)
    assert tokens.shape == (1, 3, 4)
    torch.testing.assert_close(tokens[0, 0], torch.tensor([1.0, 0, 0, 0]))
    torch.testing.assert_close(tokens[0, 1], torch.tensor([0.5, 0.5, 0, 0]))
    assert tokens[0, 2].eq(0).all()


def test_processor_swap_through_attention_mixin():
    torch.manual_seed(0)
    model = PrevisDiT.from_preset("tiny-test", depth=2).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    names = list(model.attn_processors)
    assert sum(isinstance(p, MaskedIPAttnProcessor) for p in model.attn_processors.values()) == 2
    x, g = torch.randn(1, 2, 3, 16, 16), torch.randn(1, 2, 11, 16, 16)
    refs, masks = torch.randn(1, 1, 16, 32), torch.ones(1, 1, 2, 16, 16)
    with torch.no_grad():
        plain = model(x, torch.tensor([300.0]), g)
        with_refs = model(x, torch.tensor([300.0]), g, refs, masks)
        assert not torch.allclose(plain, with_refs)
        model.set_attn_processor(AttnProcessor2_0())  # stock processor: references are ignored
        assert all(isinstance(p, AttnProcessor2_0) for p in model.attn_processors.values())
        torch.testing.assert_close(model(x, torch.tensor([300.0]), g, refs, masks), plain)
        assert install_masked_ip(model, 32, 32) == 2  # fresh adapters on the spatial layers only
    assert list(model.attn_processors) == names
    assert isinstance(model.attn_processors["blocks.1.attn1.processor"], MaskedIPAttnProcessor)
    assert isinstance(model.attn_processors["blocks.1.attn_temporal.processor"], AttnProcessor2_0)
