"""PrevisDiT, the reference encoders, conditioning helpers and the training loss, on tiny configs."""

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from backend.conditioning import (
    CLAY_WHITE,
    id_edges,
    lit_by_clay,
    normalised,
    relative_cameras,
    working_resolution,
)
from backend.models.previs_dit import PRESETS, PrevisDiT, velocity_from_output
from backend.models.reference_encoder import CLIPReferenceAdapter, ReferenceEncoder
from backend.training.losses import training_loss


def tiny_model(**overrides) -> PrevisDiT:
    """tiny-test preset with random (not zero-initialised) weights, so outputs depend on every input."""
    torch.manual_seed(0)
    model = PrevisDiT.from_preset("tiny-test", **overrides).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model


def inputs(batch=1, frames=2, height=16, width=24, n_obj=2):
    g = torch.Generator().manual_seed(1)
    return dict(
        noisy_frames=torch.randn(batch, frames, 3, height, width, generator=g),
        timestep=torch.full((batch,), 400.0),
        guidance=torch.randn(batch, frames, 11, height, width, generator=g),
        reference_tokens=torch.randn(batch, n_obj, 16, 32, generator=g),
        object_masks=(torch.rand(batch, n_obj, frames, height, width, generator=g) > 0.5).float(),
    )


@pytest.mark.parametrize("attention", ["factorised", "full"])
@pytest.mark.parametrize("frames,height,width", [(1, 16, 24), (16, 72, 128), (3, 8, 40)])
def test_forward_shapes(attention, frames, height, width):
    model = tiny_model(attention=attention)
    with torch.no_grad():
        out = model(**inputs(batch=2, frames=frames, height=height, width=width))
    assert out.shape == (2, frames, 3, height, width)
    assert torch.isfinite(out).all()


def test_fresh_model_predicts_zero_adaln_zero():
    """adaLN-Zero and the zero output layer: a new model is the zero map whatever it is given."""
    model = PrevisDiT.from_preset("tiny-test")
    with torch.no_grad():
        assert model(**inputs()).abs().max() == 0


def test_frames_interact_through_temporal_attention_and_patches_stay_aligned():
    model = tiny_model()
    x = inputs(frames=3)
    x["noisy_frames"] = x["noisy_frames"].clone()
    with torch.no_grad():
        a = model(**x)
        x["noisy_frames"][:, 2, :, :8, :8] += 1.0  # one patch of the last frame
        b = model(**x)
    change = (a - b).abs().amax(dim=2)  # (B, F, H, W)
    assert change[0, 0].max() > 0  # reaches the first frame (temporal attention)
    assert change[0, 2, :8, :8].min() > 0  # and every pixel of its own patch


def test_zero_strength_equals_no_references_and_strength_matters():
    model = tiny_model()
    x = inputs()
    with torch.no_grad():
        none = model(**{**x, "reference_tokens": None})
        off = model(**x, reference_strengths=torch.zeros(1, 2))
        on = model(**x, reference_strengths=torch.ones(1, 2))
        unmasked = model(**{**x, "object_masks": None})
    assert torch.equal(none, off)
    assert not torch.allclose(on, none)
    assert not torch.allclose(unmasked, on)


def test_save_load_round_trip(tmp_path):
    model = tiny_model(attention="full", sample_size=(16, 24))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = PrevisDiT.from_pretrained(tmp_path).eval()
    assert loaded.config.attention == "full" and tuple(loaded.config.sample_size) == (16, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs()), model(**inputs()), atol=1e-5, rtol=1e-5)


def test_bad_inputs_are_clear_errors():
    model = tiny_model()
    x = inputs()
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(**inputs(height=12))
    with pytest.raises(ValueError, match="guidance must be"):
        model(**{**x, "guidance": x["guidance"][:, :, :5]})
    with pytest.raises(ValueError, match="object_masks must be"):
        model(**{**x, "object_masks": x["object_masks"][:, :1]})
    with pytest.raises(ValueError, match="unknown preset"):
        PrevisDiT.from_preset("huge")


def test_presets_sizes():
    with torch.device("meta"):  # sizes without allocating or initialising weights
        params = {name: sum(p.numel() for p in PrevisDiT(**cfg).parameters()) for name, cfg in PRESETS.items()}
    assert params["tiny-test"] < 100_000
    assert 2e6 < params["previs-tiny"] < 10e6
    assert params["previs-small"] > 3 * params["previs-tiny"]


def test_reference_encoder_tokens_and_round_trip(tmp_path):
    torch.manual_seed(0)
    encoder = ReferenceEncoder(reference_dim=32, width=16, num_heads=2).eval()
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        tokens = encoder(images)
    assert tokens.shape == (3, 16, 32)
    assert not torch.allclose(tokens[0], tokens[1])
    encoder.save_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(ReferenceEncoder.from_pretrained(tmp_path)(images), tokens, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="reference images must be"):
        encoder(torch.zeros(1, 3, 32, 32))


def test_clip_vision_adapter_path_with_a_tiny_config():
    torch.manual_seed(0)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, projection_dim=48, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=4)).eval()
    adapter = CLIPReferenceAdapter(clip_hidden_size=32, reference_dim=32, num_tokens=16)
    pixels = torch.randn(2, 3, 32, 32)
    tokens = adapter.encode(clip, pixels)
    assert tokens.shape == (2, 16, 32)
    model = tiny_model()
    x = inputs()
    with torch.no_grad():
        out = model(**{**x, "reference_tokens": tokens[None]})  # two objects' references from CLIP
    assert out.shape == x["noisy_frames"].shape
    tokens.sum().backward()  # the adapter trains, the CLIP model stays frozen
    assert adapter.proj.weight.grad is not None
    assert all(p.grad is None for p in clip.parameters())


def test_training_loss_reaches_the_model_and_the_reference_encoder():
    torch.manual_seed(0)
    model = PrevisDiT.from_preset("tiny-test")
    encoder = ReferenceEncoder(reference_dim=32, width=16, num_heads=2)
    batch = {
        "frames": torch.rand(2, 2, 3, 16, 24) * 2 - 1,
        "guidance": torch.randn(2, 2, 11, 16, 24),
        "references": torch.rand(2, 2, 3, 64, 64) * 2 - 1,
        "object_masks": torch.ones(2, 2, 2, 16, 24),
        "reference_strengths": torch.ones(2, 2),
    }
    loss = training_loss(model, encoder, batch, reference_dropout=0.0, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert model.proj_out.weight.grad.abs().sum() > 0  # zero-init output layer learns first
    # zero-init opens up layer by layer: after two steps the IP weights and the reference encoder learn too
    opt = torch.optim.SGD([*model.parameters(), *encoder.parameters()], lr=1e-1)
    for _ in range(2):
        opt.step()
        opt.zero_grad()
        training_loss(model, encoder, batch, reference_dropout=0.0).backward()
    assert model.blocks[0].attn1.processor.to_k_ip.weight.grad.abs().sum() > 0
    assert encoder.stem[0].weight.grad.abs().sum() > 0


def test_conditioning_helpers():
    inverse = torch.tensor([[[0.0, 2.0], [1.0, 0.5]]])
    torch.testing.assert_close(normalised(inverse), torch.tensor([[[0.0, 1.0], [0.5, 0.25]]]))
    ids = np.array([[[0, 0, 1], [0, 0, 1]]])
    assert id_edges(ids).tolist() == [[[0, 1, 1], [0, 1, 1]]]
    assert working_resolution(128, 72, 8, 144) == (128, 72)
    assert working_resolution(256, 144, 8, 144) == (128, 72)
    assert working_resolution(64, 64, 8, 144) == (64, 64)
    # rays relative to the first camera: moving the whole shot in the world changes nothing
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    cams = [np.eye(4), np.eye(4)]
    cams[1][:3, 3] = [0.5, 0, 0]
    world_move = np.eye(4)
    world_move[:3, :3], world_move[:3, 3] = q, [3, -2, 7]
    moved = [c @ np.linalg.inv(world_move) for c in cams]
    depth0 = np.full((4, 4), 2.0)
    for a, b in zip(relative_cameras(cams, depth0), relative_cameras(moved, depth0), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    np.testing.assert_allclose(relative_cameras(cams, depth0)[1][:3, 3], [0.25, 0, 0])


@pytest.mark.parametrize("prediction_type", ["sample", "velocity", "albedo"])
def test_velocity_from_output_gives_the_flow_velocity_for_a_perfect_prediction(prediction_type):
    model = PrevisDiT.from_preset("tiny-test", prediction_type=prediction_type)
    albedo = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    shading = torch.cat([torch.rand(2, 3, 3, 16, 16), torch.ones(2, 3, 1, 16, 16)], dim=2)
    shading[1, :, 3] = 0  # the second clip has no clay pass: its albedo is its frames
    clean = torch.stack([lit_by_clay(albedo[0], shading[0]), albedo[1]])
    noise = torch.randn(2, 3, 3, 16, 16)
    sigma = torch.tensor([0.3, 0.9])
    noisy = (1 - sigma[:, None, None, None, None]) * clean + sigma[:, None, None, None, None] * noise
    perfect = {"sample": clean, "velocity": noise - clean, "albedo": albedo}[prediction_type]
    torch.testing.assert_close(velocity_from_output(model, perfect, noisy, sigma, shading), noise - clean)
    with pytest.raises(ValueError, match="prediction_type"):
        PrevisDiT.from_preset("tiny-test", prediction_type="epsilon")
    with pytest.raises(ValueError, match="clay pass"):
        PrevisDiT.from_preset("tiny-test", prediction_type="albedo", shading_channels=0)


def test_lit_by_clay_takes_light_and_shadow_from_the_clay_pass():
    clay = torch.rand(4, 3, 8, 8)
    clay[:, :, :, :3] = 0.0  # a hard shadow
    shading = torch.cat([clay, torch.ones(4, 1, 8, 8)], dim=1)
    grey = torch.full((4, 3, 8, 8), 2 * CLAY_WHITE - 1)
    torch.testing.assert_close(lit_by_clay(grey, shading), clay * 2 - 1)  # clay-grey surfaces look like the clay pass
    albedo = torch.rand(4, 3, 8, 8) * 2 - 1
    lit = lit_by_clay(albedo, shading)
    assert torch.all(lit[..., :3] == -1)  # black in the shadow whatever the albedo
    torch.testing.assert_close((lit + 1) / 2, (albedo + 1) / 2 * clay / CLAY_WHITE)  # light in proportion
    no_clay = torch.cat([clay, torch.zeros(4, 1, 8, 8)], dim=1)
    torch.testing.assert_close(lit_by_clay(albedo, no_clay), albedo)
