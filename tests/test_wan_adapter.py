"""Wan 2.1 VACE behind the adapter interface, on a tiny real pipeline folder (diffusers' and transformers' classes),
and the per-object masked reference attention on Wan's own attention layers."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from test_pipeline import synthetic_bundle
from tiny_wan import tiny_wan_vace_folder

from backend.adapters import adapter_for
from backend.adapters.wan_vace import WanVaceAdapter, latent_frames_of, reference_layout
from backend.models.wan_reference_attention import MaskedReferenceWanProcessor, ReferenceLayout
from backend.pipelines.generate import generate_shot
from backend.server.catalogue import describe_model
from cinepregen_addon.core.shot_bundle import write_bundle

FRAMES = 6  # not 4k+1: generated as 9 and cut back


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    return tiny_wan_vace_folder(tmp_path_factory.mktemp("wan") / "Wan2.1-VACE-tiny")


def odd_bundle():
    """The pipeline tests' shot (two referenced boxes, one moving) cropped to 56x24: no multiple of 16."""
    bundle = synthetic_bundle(FRAMES)
    for p in bundle.passes:
        p.depth, p.normal, p.object_id, p.vector = (a[4:28, :56] for a in (p.depth, p.normal, p.object_id, p.vector))
    bundle.width, bundle.height = 56, 24
    bundle.prompt = "a red crate in a yard"
    return bundle


def test_the_folder_is_recognised_and_described_from_its_configs(wan_folder):
    adapter = adapter_for(wan_folder)
    assert isinstance(adapter, WanVaceAdapter)
    caps = adapter.capabilities()
    assert (caps.family, caps.frame_rule, caps.size_multiple, caps.reads_prompt) == ("wan-vace", "4k+1", 16, True)
    assert caps.default_steps == 2 and caps.default_frames == 81 and caps.quantization is None
    entry = describe_model("wan", wan_folder)
    assert entry["model_class"] == "WanVACETransformer3DModel" and "error" not in entry
    (wan_folder / "vae").rename(wan_folder / "vae-moved")
    try:
        with pytest.raises(FileNotFoundError, match="names vae in model_index.json but has no such folder"):
            adapter.check()
    finally:
        (wan_folder / "vae-moved").rename(wan_folder / "vae")


def test_a_bundle_maps_to_the_pipelines_inputs(wan_folder):
    model = adapter_for(wan_folder).load()
    bundle = odd_bundle()
    inputs = model.inputs(bundle)
    assert (inputs["width"], inputs["height"], inputs["num_frames"]) == (64, 32, 9)
    assert len(inputs["video"]) == len(inputs["mask"]) == 9 and inputs["prompt"] == "a red crate in a yard"
    assert all(np.asarray(m).min() == 255 for m in inputs["mask"])  # generate every pixel, following the control
    control = np.asarray(inputs["video"][0])[..., 0].astype(int)
    ids, depth = bundle.passes[0].object_id, bundle.passes[0].depth
    floor = ids == 3
    near, far = np.unravel_index(np.argmin(np.where(floor, depth, 99)), depth.shape), \
        np.unravel_index(np.argmax(np.where(floor, depth, 0)), depth.shape)
    assert control[near] > control[far] > 0 and control[:24, :56][ids == 0].max() == 0  # near bright, sky black
    assert len(inputs["reference_images"]) == 2  # hero and prop are bound; the floor has no reference
    processors = {type(m.processor).__name__ for m in model.pipeline.transformer.modules() if hasattr(m, "processor")}
    assert processors == {"MaskedReferenceWanProcessor"}


def test_reference_masks_follow_the_id_pass_per_latent_frame():
    bundle = odd_bundle()
    layout = reference_layout(bundle, [1, 2], 9, 64, 32, 16)
    assert layout.masks.shape == (2, 3 * 2 * 4) and layout.tokens_per_frame == 8
    assert latent_frames_of(9) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    for r, obj in enumerate((1, 2)):
        for t, covered in enumerate(latent_frames_of(9)):
            ids = np.stack([bundle.passes[min(f, FRAMES - 1)].object_id for f in covered])
            padded = np.full((len(covered), 32, 64), -1)
            padded[:, :24, :56] = ids
            expected = (padded == obj).any(0).reshape(2, 16, 4, 16).any((1, 3)).reshape(-1)
            assert np.array_equal(layout.masks[r, t * 8:(t + 1) * 8].numpy(), expected), (obj, t)


def test_generate_shot_crops_back_to_the_bundle_and_repeats_with_its_seed(wan_folder, tmp_path):
    bundle = write_bundle(odd_bundle(), tmp_path / "bundle")
    first = generate_shot(bundle, tmp_path / "a", weights=wan_folder, seed=3)
    generate_shot(bundle, tmp_path / "b", weights=wan_folder, seed=3)
    other = generate_shot(bundle, tmp_path / "c", weights=wan_folder, seed=4, steps=1)
    frames = [iio.imread(tmp_path / name / "frames" / "000000.png") for name in "abc"]
    assert first["metrics"]["frames"] == FRAMES and frames[0].shape == (24, 56, 3)
    assert first["metrics"]["steps"] == 2 and other["metrics"]["steps"] == 1  # the folder's default, then asked
    assert np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[0], frames[2])
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["weights"] == wan_folder.name


def _layer_inputs(transformer, references: int, frames: int, grid=(3, 4), seed: int = 0):
    """Hidden states and Wan's rotary embedding for a frame-major sequence of reference and video frames."""
    torch.manual_seed(seed)
    per_frame = grid[0] * grid[1]
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    hidden = torch.randn(1, (references + frames) * per_frame, dim)
    rotary = transformer.rope(torch.zeros(1, 16, references + frames, 2 * grid[0], 2 * grid[1]))
    return hidden, rotary, per_frame


def _drop_reference(hidden, rotary, per_frame: int, r: int):
    keep = torch.cat([torch.arange(0, r * per_frame), torch.arange((r + 1) * per_frame, hidden.shape[1])])
    return hidden[:, keep], tuple(t[:, keep] for t in rotary)


def test_tokens_outside_an_objects_mask_do_not_see_its_reference(wan_folder):
    """In every self-attention layer of the tiny VACE model (main and VACE blocks): tokens outside object r's mask
    are bit-identical with and without reference r; inside it they change; without a layout the processor is
    exactly diffusers' own."""
    from diffusers import WanVACETransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    transformer = WanVACETransformer3DModel.from_pretrained(wan_folder / "transformer").eval()
    hidden, rotary, per_frame = _layer_inputs(transformer, references=2, frames=3)
    masks = torch.zeros(2, 3 * per_frame, dtype=torch.bool)
    masks[0, 2:9] = True
    masks[1, 6:20] = True  # overlaps object 0 on tokens 6-8
    layout = ReferenceLayout(2, per_frame, masks)
    layers = [b.attn1 for b in [*transformer.blocks, *transformer.vace_blocks]]
    assert len(layers) == 5
    with torch.no_grad():
        for attn in layers:
            plain = MaskedReferenceWanProcessor(None)(attn, hidden, None, None, rotary)
            assert torch.equal(plain, WanAttnProcessor()(attn, hidden, None, None, rotary))
            with_both = MaskedReferenceWanProcessor(layout)(attn, hidden, None, None, rotary)[:, 2 * per_frame:]
            for r in (0, 1):
                dropped_hidden, dropped_rotary = _drop_reference(hidden, rotary, per_frame, r)
                without = MaskedReferenceWanProcessor(layout.without(r))(attn, dropped_hidden, None, None,
                                                                          dropped_rotary)[:, per_frame:]
                outside, inside = ~masks[r], masks[r]
                assert _same(with_both[:, outside], without[:, outside]), r
                assert (with_both[:, inside] - without[:, inside]).abs().amax(-1).min() > 0, r
            assert not torch.equal(with_both, plain[:, 2 * per_frame:])  # masking changes what tokens see


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float rounding: attention over the masked and over the shortened key set sums in another order
    (a CPU's kernel may split them differently; 1.2e-7 apart on an AMD EPYC), while a reference that leaks moves a
    token by 1e-2 or more."""
    return bool((a - b).abs().amax() <= 1e-5)


def test_image_cross_attention_is_masked_per_object_too():
    """Wan I2V's image branch (add_k_proj/add_v_proj) with one block of image tokens per reference."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                        num_layers=1, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32, image_dim=4, added_kv_proj_dim=24).eval()
    attn = transformer.blocks[0].attn2
    assert attn.add_k_proj is not None
    hidden, _, per_frame = _layer_inputs(transformer, references=2, frames=2)
    images, text = torch.randn(1, 2 * 5, 24), torch.randn(1, 512, 24)
    masks = torch.zeros(2, 2 * per_frame, dtype=torch.bool)
    masks[0, :10], masks[1, 5:] = True, True
    layout = ReferenceLayout(2, per_frame, masks, image_tokens_per_reference=5)
    with torch.no_grad():
        both = MaskedReferenceWanProcessor(layout)(attn, hidden, torch.cat([images, text], 1))[:, 2 * per_frame:]
        for r in (0, 1):
            keep = torch.cat([torch.arange(0, r * per_frame), torch.arange((r + 1) * per_frame, hidden.shape[1])])
            other_images = images[:, [i for i in range(10) if i // 5 != r]]
            without = MaskedReferenceWanProcessor(layout.without(r))(
                attn, hidden[:, keep], torch.cat([other_images, text], 1))[:, per_frame:]
            assert _same(both[:, ~masks[r]], without[:, ~masks[r]]), r
            assert (both[:, masks[r]] - without[:, masks[r]]).abs().amax() > 1e-2, r


def test_the_server_serves_wan_beside_the_default_model(wan_folder, tmp_path):
    from test_server import LiveServer, finished, read_mp4

    from backend.server.app import Settings
    from cinepregen_addon.core.shot_bundle import zip_bundle

    bundle = zip_bundle(write_bundle(odd_bundle(), tmp_path / "bundle"), tmp_path / "bundle.zip")
    with LiveServer(Settings(data_dir=tmp_path / "data", models=(wan_folder,)), None) as server:
        models = {m["name"]: m for m in server.http.get("/v1/health").json()["models"]}
        assert list(models) == ["previs-tiny", wan_folder.name] and models[wan_folder.name]["frame_rule"] == "4k+1"
        job = server.wait_for(server.submit(bundle, model=wan_folder.name), finished, timeout=120)
        assert job["status"] == "done", job["error"]
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(server.http.get(f"/v1/jobs/{job['id']}/result.mp4").content)
        frames = read_mp4(clip)
        assert len(frames) == FRAMES and frames[0].shape == (24, 56, 3)


@pytest.mark.parametrize("bits", [3, 2])
def test_quantize_a_wan_folder_with_no_model_class_and_generate_from_it(wan_folder, tmp_path, capsys, bits):
    """`cinepregen quantize` on the plain diffusers pipeline folder: the transformer (its VACE blocks too) is
    calibrated on inputs made from its own config, the rest of the pipeline is copied, and the quantized folder
    generates through the same adapter."""
    from backend.cli import main

    out = tmp_path / f"wan-vq{bits}"
    assert main(["quantize", "--weights", str(wan_folder), "--out", str(out), "--bits", str(bits),
                 "--iterations", "4", "--samples", "2"]) == 0
    report = capsys.readouterr().out
    assert "bits/weight in the" in report and "bits/parameter for the whole file" in report
    saved = json.loads((out / "transformer" / "quantization_config.json").read_text())
    assert saved["bits"] == bits and any(name.startswith("vace_blocks.") for name in saved["layers"])
    assert any(name.startswith("blocks.") for name in saved["layers"])
    assert saved["bits_per_weight"] < 16 and saved["run"]["mean_block_error"] > 0
    assert {"model_index.json", "cinepregen.json", "vae", "text_encoder", "tokenizer", "scheduler"} <= \
        {p.name for p in out.iterdir()}
    assert adapter_for(out).capabilities().quantization["bits"] == bits
    result = generate_shot(write_bundle(odd_bundle(), tmp_path / "bundle"), tmp_path / "clip", weights=out, seed=3)
    assert result["metrics"]["frames"] == FRAMES and iio.imread(tmp_path / "clip" / "frames" / "000000.png").shape \
        == (24, 56, 3)


def test_quantize_a_class_conditional_dit_takes_its_class_count_from_the_config(tmp_path):
    """A 10-class diffusers DiT: calibration class labels come from num_embeds_ada_norm, not a hard-coded 1000."""
    from diffusers import DiTTransformer2DModel

    from backend.cli import main
    from backend.quant import load_quantized

    torch.manual_seed(0)
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=4,
                          num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10).save_pretrained(
        tmp_path / "dit")
    assert main(["quantize", "--weights", str(tmp_path / "dit"), "--out", str(tmp_path / "q"), "--bits", "3",
                 "--iterations", "4", "--samples", "2"]) == 0
    model = load_quantized(DiTTransformer2DModel, tmp_path / "q")
    out = model(torch.randn(1, 4, 8, 8), timestep=torch.tensor([10]), class_labels=torch.tensor([9])).sample
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_the_wan_benchmark_measures_every_variant_at_a_given_shape(monkeypatch):
    """`bench wan`'s machinery on a small shape of the same architecture (the real ones need a GPU's time)."""
    from backend.quant import wan_benchmark

    monkeypatch.setitem(wan_benchmark.WAN_SHAPES, "test", dict(num_attention_heads=2, attention_head_dim=32,
                                                               ffn_dim=128, num_layers=2, vace_layers=[0]))
    result = wan_benchmark.run("test", "cpu", frames=5, height=32, width=32, variants=[None, 3, 2], iterations=2)
    rows = {row["variant"]: row for row in result["rows"]}
    assert list(rows) == ["fp32", "VQ4DiT 3-bit", "VQ4DiT 2-bit"]
    # (at this size the text embedder, kept in full precision, and the codebooks weigh most; see the README)
    assert max(rows["VQ4DiT 2-bit"]["parameter_bytes"], rows["VQ4DiT 3-bit"]["parameter_bytes"]) \
        < rows["fp32"]["parameter_bytes"]
    assert all(row["seconds_per_step"] > 0 and row["peak_memory_bytes"] > 0 for row in rows.values())
    calibration = result["calibration"]
    assert calibration["blocks"] == 3 and calibration["kmeans_seconds"] > 0 and calibration["calibration_seconds"] > 0
    assert calibration["peak_memory_bytes"] > 0 and calibration["bits"] == 2
    assert "| VQ4DiT 2-bit |" in wan_benchmark.format_wan_table(result)
