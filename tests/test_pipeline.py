"""PrevisPipeline and generate_shot on a small synthetic shot bundle written with the project's bundle writer."""

import json
import os
import re
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
from helpers import tiny_pipeline

from backend.pipelines.generate import GenerationCancelled, generate_shot
from backend.pipelines.previs_pipeline import PrevisPipeline, make_generate_fn
from cinepregen_addon.core.camera_geometry import intrinsics_from_blender
from cinepregen_addon.core.shot_bundle import (
    BundleObject,
    FrameCamera,
    FramePasses,
    ShotBundle,
    read_bundle,
    write_bundle,
    zip_bundle,
)

WIDTH, HEIGHT, FRAMES = 64, 32, 4


def synthetic_bundle(frames: int = FRAMES) -> ShotBundle:
    """Sky on top (background), a floor (no reference) below, two boxes with references; the camera trucks."""
    K = intrinsics_from_blender(35.0, 36.0, 24.0, "AUTO", WIDTH, HEIGHT)
    cameras, passes = [], []
    for i in range(frames):
        w2c = np.eye(4)
        w2c[0, 3] = -0.1 * i
        ids = np.zeros((HEIGHT, WIDTH), np.int32)
        ids[HEIGHT // 2:] = 3
        ids[8:24, 6 + 2 * i:22 + 2 * i] = 1
        ids[10:26, 40:56] = 2
        depth = np.where(ids > 0, 4.0, 0.0).astype(np.float32)
        depth[ids == 3] = np.linspace(6.0, 2.0, HEIGHT)[:, None].repeat(WIDTH, 1)[ids == 3]
        normal = np.zeros((HEIGHT, WIDTH, 3), np.float32)
        normal[ids > 0] = (0.0, 0.0, -1.0)
        cameras.append(FrameCamera(frame=1 + i, K=K, world_to_camera=w2c))
        passes.append(FramePasses(depth=depth, normal=normal, object_id=ids,
                                  vector=np.zeros((HEIGHT, WIDTH, 4), np.float32)))
    red = np.zeros((40, 30, 3), np.uint8)
    red[..., 0] = 220
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[::4, :, 2] = 255
    return ShotBundle(name="synthetic", fps=12, width=WIDTH, height=HEIGHT, frame_start=1, frame_end=frames,
                      cameras=cameras, passes=passes, seed=7,
                      objects=[BundleObject(1, "hero"), BundleObject(2, "prop"), BundleObject(3, "floor")],
                      reference_images={1: red, 2: stripes})


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return write_bundle(synthetic_bundle(), tmp_path_factory.mktemp("bundle") / "shot")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return tiny_pipeline().save_pretrained(tmp_path_factory.mktemp("weights") / "previs-test")


def test_pipeline_is_seeded_and_returns_the_bundles_shape(bundle_dir):
    pipe, bundle = tiny_pipeline(), read_bundle(bundle_dir)
    a = pipe(bundle, seed=3)
    assert a.shape == (FRAMES, HEIGHT, WIDTH, 3) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1 and a.std() > 0.01
    np.testing.assert_array_equal(pipe(bundle, seed=3), a)
    assert np.abs(pipe(bundle, seed=4) - a).mean() > 1e-3
    np.testing.assert_array_equal(pipe(bundle), pipe(bundle, seed=bundle.seed))  # default seed is the bundle's


def test_baselines_and_reference_controls_change_the_clip(bundle_dir):
    pipe, bundle = tiny_pipeline(), read_bundle(bundle_dir)
    base = pipe(bundle, seed=0)
    independent = pipe(bundle, seed=0, independent_frames=True)
    assert independent.shape == base.shape and np.abs(independent - base).mean() > 1e-3
    assert np.abs(pipe(bundle, seed=0, masked=False) - base).mean() > 1e-4
    swapped = pipe(bundle, seed=0, references_override={1: bundle.reference_images[2], 2: bundle.reference_images[1]})
    assert np.abs(swapped - base).mean() > 1e-4
    no_refs = pipe(bundle, seed=0, reference_strengths={1: 0.0, 2: 0.0})
    np.testing.assert_allclose(pipe(bundle, seed=0, references_override={}), no_refs, atol=1e-6)


def test_reference_guidance_acts_only_inside_the_referenced_masks(bundle_dir):
    """One Euler step: outside the referenced objects the guided and unguided clips agree; inside they differ; with
    unmasked attention, guidance acts on the whole frame. (Seam smoothing, which may carry a change up to a patch
    across an unmarked seam, is off here: its reach is ``test_patch_seams``'s business.)"""
    pipe, bundle = tiny_pipeline(), read_bundle(bundle_dir)
    referenced = np.isin(np.stack([p.object_id for p in bundle.passes]), [1, 2])

    def one_step(scale: float, masked: bool = True) -> np.ndarray:
        return pipe(bundle, seed=0, num_inference_steps=1, reference_guidance_scale=scale, masked=masked,
                    smooth_seams=False)

    change = np.abs(one_step(4.0) - one_step(1.0)).mean(-1)
    assert change[~referenced].max() < 1e-5 and change[referenced].mean() > 1e-4  # measured 6.4e-4
    unmasked = np.abs(one_step(4.0, masked=False) - one_step(1.0, masked=False)).mean(-1)
    assert unmasked[~referenced].mean() > 1e-3


def test_save_load_round_trip_gives_the_same_clip(bundle_dir, weights_dir):
    bundle = read_bundle(bundle_dir)
    loaded = PrevisPipeline.from_pretrained(weights_dir)
    assert loaded.sampling["num_inference_steps"] == 2
    np.testing.assert_allclose(loaded(bundle, seed=1), tiny_pipeline()(bundle, seed=1), atol=1e-4)


def test_generate_shot_writes_mp4_pngs_and_metrics(bundle_dir, weights_dir, tmp_path):
    stages = []
    zipped = zip_bundle(bundle_dir, tmp_path / "shot.zip")
    result = generate_shot(zipped, tmp_path / "out", weights=weights_dir, steps=3, seed=5,
                           progress=lambda fraction, stage: stages.append((fraction, stage)))
    video = iio.imread(result["mp4"], plugin="FFMPEG")
    assert video.shape == (FRAMES, HEIGHT, WIDTH, 3)
    pngs = sorted((tmp_path / "out" / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(FRAMES)]
    first = iio.imread(pngs[0])
    assert first.shape == (HEIGHT, WIDTH, 3)
    # the mp4 shows the same frames (the random tiny model makes pixel noise, which H.264 blurs: compare colours)
    np.testing.assert_allclose(video[0].mean((0, 1)), first.mean((0, 1)), atol=8)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics == result["metrics"] and metrics["steps"] == 3 and metrics["seed"] == 5
    assert metrics["frames"] == FRAMES and metrics["timings"]["total_s"] > 0
    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions) and stages[-1] == (1.0, "done")
    assert sum(stage == "denoise" for _, stage in stages) == 3


def test_generate_shot_cancels_between_steps(bundle_dir, weights_dir, tmp_path):
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 2  # once before the first step, then after each step

    with pytest.raises(GenerationCancelled, match="cancelled after 2/2 steps"):
        generate_shot(bundle_dir, tmp_path / "out", weights=weights_dir, should_cancel=should_cancel)
    assert not (tmp_path / "out" / "shot.mp4").exists()


def test_missing_weights_is_a_clear_error(bundle_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model folder at"):
        generate_shot(bundle_dir, tmp_path / "out", weights=tmp_path / "nowhere")


def test_generate_fn_for_the_evaluation_harness(bundle_dir, weights_dir):
    generate_fn = make_generate_fn(weights_dir, steps=1)
    clip = generate_fn(read_bundle(bundle_dir), seed=0, independent_frames=True, masked=False)
    assert clip.shape == (FRAMES, HEIGHT, WIDTH, 3)


def test_cli_generate(bundle_dir, weights_dir, tmp_path, capsys):
    from backend.cli import main

    assert main(["generate", str(bundle_dir), "--out", str(tmp_path / "cli"), "--steps", "1",
                 "--weights", str(weights_dir)]) == 0
    assert (tmp_path / "cli" / "shot.mp4").is_file()
    assert main(["generate", str(bundle_dir), "--out", str(tmp_path / "x"), "--weights", str(tmp_path / "no")]) == 2
    assert "no model folder at" in capsys.readouterr().err


def test_pipeline_serves_a_quantized_transformer_folder(bundle_dir, weights_dir, tmp_path, capsys):
    """`cinepregen quantize` on a pipeline folder gives a folder the pipeline (and so the server) loads as is."""
    from backend.cli import main
    from backend.quant import VQLinear

    out = tmp_path / "previs-test-vq3"
    assert main(["quantize", "--weights", str(weights_dir), "--out", str(out), "--bits", "3",
                 "--iterations", "20", "--samples", "2", "--batch-size", "1"]) == 0
    assert "3-bit" in capsys.readouterr().out
    quantized = PrevisPipeline.from_pretrained(out)
    assert any(isinstance(m, VQLinear) for m in quantized.transformer.modules())
    bundle = read_bundle(bundle_dir)
    clip, full = quantized(bundle, seed=1), PrevisPipeline.from_pretrained(weights_dir)(bundle, seed=1)
    assert clip.shape == full.shape and np.isfinite(clip).all()
    assert 0 < np.abs(clip - full).mean() < 0.1  # quantized: close to, but not bit-identical with, full precision


def test_bench_vq_measures_methods_against_full_precision_in_one_run(bundle_dir, weights_dir, tmp_path, capsys):
    from backend.cli import main

    assert main(["bench", "vq", "--bundles", str(bundle_dir), "--weights", str(weights_dir), "--bits", "3",
                 "--methods", "rtn", "kmeans", "vq4dit", "--iterations", "5", "--samples", "2",
                 "--out", str(tmp_path)]) == 0
    assert "| vq4dit | 3 |" in capsys.readouterr().out
    rows = {row["method"]: row for row in json.loads((tmp_path / "bench_vq.json").read_text())["rows"]}
    assert set(rows) == {"full precision", "rtn", "kmeans", "vq4dit"}
    for method in ("rtn", "kmeans", "vq4dit"):
        assert rows[method]["bytes"] < rows["full precision"]["bytes"]
        assert 3.0 <= rows[method]["bits_per_weight"] < 8.0  # 3 bits of codes plus codebook or scale overhead
        assert 10.0 < rows[method]["psnr_vs_full"] < float("inf")  # close to, not identical with, full precision
        assert rows[method]["path_error"] > rows[method]["block_error"] > 0  # block errors add up through the model
        assert rows[method]["leakage"] >= 0 and rows[method]["seconds_per_shot"] > 0  # the evaluation harness ran


def test_bench_generate_times_each_variant_in_its_own_process(bundle_dir, weights_dir, capsys):
    from backend.cli import main

    assert main(["bench", "generate", "--bundle", str(bundle_dir), "--weights", str(weights_dir),
                 "--repeats", "1"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith(weights_dir.name))
    seconds, ratio, peak, added = row.split()[1:5]
    assert float(seconds) > 0 and ratio == "1.00x" and float(peak) > float(added) >= 0


def test_cli_eval_writes_table_json_and_contact_sheet(bundle_dir, weights_dir, tmp_path):
    from PIL import Image

    from backend.cli import main

    assert main(["eval", "--bundles", str(bundle_dir), "--weights", str(weights_dir), "--steps", "1",
                 "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert "clip" not in saved["bundles"][0] and saved["bundles"][0]["leakage"]["object"] == "hero"
    assert "| warping error (lower is better) |" in (tmp_path / "eval.md").read_text()
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.height >= 144 and sheet.width > 5 * 200  # passes and three generated frames


def test_bench_service_compares_the_service_with_a_direct_generate(bundle_dir, weights_dir, capsys):
    from backend.cli import main

    assert main(["bench", "service", "--bundle", str(bundle_dir), "--weights", str(weights_dir),
                 "--poll-seconds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "direct generate_shot" in out and "through the service" in out and "status endpoint" in out


def test_clip_windows_cover_every_frame_once_with_context():
    from backend.pipelines.previs_pipeline import clip_windows

    assert clip_windows(10, 16, 4) == [(0, 10, 0)]
    for frames in (17, 28, 29, 240):
        windows = clip_windows(frames, 16, 4)
        new = [f for start, length, context in windows for f in range(start + context, start + length)]
        assert new == list(range(frames))  # each frame generated once, in order
        assert all(length <= 16 and context == (4 if i else 0) for i, (_, length, context) in enumerate(windows))


def test_a_window_is_conditioned_as_the_short_shot_it_would_be():
    """Depth normalisation and the rays' first frame are taken over the window: frames 3-5 of a shot give the
    conditions of a 3-frame shot made of those frames."""
    import dataclasses

    import torch

    from backend.conditioning import clip_conditions, shot_conditions, shot_passes

    bundle = synthetic_bundle(frames=6)
    bundle.passes[4].depth[bundle.passes[4].depth > 0] *= 0.5  # the nearest surface of the shot is in the window
    cut = dataclasses.replace(bundle, frame_start=4, frame_end=6, cameras=bundle.cameras[3:], passes=bundle.passes[3:])
    window = clip_conditions(shot_passes(bundle), 3, 3, WIDTH // 2, HEIGHT // 2)
    alone = shot_conditions(cut, 8, (WIDTH // 16) * (HEIGHT // 16))
    assert alone.guidance.shape == window.guidance.shape == (3, 11, HEIGHT // 2, WIDTH // 2)
    torch.testing.assert_close(window.guidance, alone.guidance)
    torch.testing.assert_close(window.object_masks, alone.object_masks)
    whole = clip_conditions(shot_passes(bundle), 0, 6, WIDTH // 2, HEIGHT // 2)
    assert not torch.allclose(whole.guidance[3:], window.guidance)  # a window is not a slice of the whole shot


def windowed_pipeline(sample_size=(32, 64), refiner: bool = False) -> PrevisPipeline:
    """tiny_pipeline's model with context inputs, generating in windows of 4 frames with 1 context frame."""
    from backend.models.frame_refiner import FrameRefiner

    pipe = tiny_pipeline(sample_size)
    assert pipe.transformer.config.context_channels == 4
    pipe.sampling.update(window_frames=4, context_frames=1)
    if refiner:
        albedo = pipe.transformer.config.prediction_type == "albedo"
        pipe.refiner = FrameRefiner(width=8, num_blocks=1, albedo=albedo).eval()
    return pipe


def test_long_shots_are_generated_window_by_window_from_the_frames_before():
    pipe, bundle = windowed_pipeline(), synthetic_bundle(frames=10)
    steps = []
    clip = pipe(bundle, seed=1, callback=lambda done, total: steps.append((done, total)))
    assert clip.shape == (10, HEIGHT, WIDTH, 3) and np.isfinite(clip).all()
    assert steps[-1] == (3 * 2, 3 * 2)  # 3 windows (0-3, 3-6 with frame 3 as context, 6-9), 2 steps each
    np.testing.assert_array_equal(pipe(bundle, seed=1), clip)
    # the context is read: without it (context_frames=0 changes the windows, so compare one model with its context
    # input zeroed) the later windows change, the first does not
    # (the colour lock holds each object to its mean over the whole shot, so the windows are compared before it)
    windows = pipe(bundle, seed=1, lock_colours=False)
    pipe.transformer.patch_embed.weight.data[:, -4:] = 0
    without = pipe(bundle, seed=1, lock_colours=False)
    np.testing.assert_array_equal(without[:4], windows[:4])
    assert np.abs(without[4:] - windows[4:]).mean() > 1e-5  # measured 8.9e-5 (one random block)


def test_the_refiner_brings_frames_to_the_bundles_size():
    """A fresh refiner is bilinear upsampling exactly; a trained one changes the frames at full resolution."""
    import torch

    pipe = windowed_pipeline(sample_size=(16, 32), refiner=True)
    bundle = synthetic_bundle(frames=3)
    refined = pipe(bundle, seed=2)
    assert refined.shape == (3, HEIGHT, WIDTH, 3)
    plain = windowed_pipeline(sample_size=(16, 32))
    np.testing.assert_allclose(refined, plain(bundle, seed=2), atol=1e-6)
    with torch.no_grad():
        pipe.refiner.conv_out.weight.normal_(0, 0.05)
    assert np.abs(pipe(bundle, seed=2) - refined).mean() > 1e-3


def test_an_albedo_model_takes_light_and_shadow_from_the_clay_pass():
    """A model that paints albedo at half the bundle's resolution delivers the clay pass's hard shadow at its exact
    full-resolution column (37: no patch or pixel-pair border), black inside whatever it paints; a model that paints
    frames, the same weights otherwise, leaves light in the shadow and blurs its edge."""
    import torch

    from backend.models.previs_dit import PrevisDiT

    bundle = synthetic_bundle(frames=5)
    for p in bundle.passes:
        p.clay = np.full((HEIGHT, WIDTH, 3), 180, np.uint8)
        p.clay[:, 37:] = 0
    pipe = windowed_pipeline(sample_size=(16, 32), refiner=True)
    assert pipe.transformer.config.prediction_type == "albedo" and pipe.refiner.config.albedo
    with torch.no_grad():
        pipe.refiner.conv_out.weight.normal_(0, 0.05)
    for lock in (True, False):
        clip = pipe(bundle, seed=3, lock_colours=lock)
        assert np.all(clip[:, :, 37:] == 0)
        assert clip[:, :, 36].mean() > 0.05 and (clip[:, :, 36].max(-1) > 0).mean() > 0.9

    frames_model = PrevisDiT.from_config({**pipe.transformer.config, "prediction_type": "sample"})
    frames_model.load_state_dict(pipe.transformer.state_dict())
    pipe.transformer = frames_model.eval()
    pipe.refiner = type(pipe.refiner).from_config({**pipe.refiner.config, "albedo": False}).eval()
    clip = pipe(bundle, seed=3, lock_colours=False)
    assert clip[:, :, 38:].mean() > 0.05


def test_pipeline_with_refiner_round_trips(tmp_path):
    pipe = windowed_pipeline(sample_size=(16, 32), refiner=True)
    import torch

    with torch.no_grad():
        pipe.refiner.conv_out.weight.normal_(0, 0.05)
    bundle = synthetic_bundle(frames=3)
    loaded = PrevisPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "weights"))
    assert loaded.refiner is not None and loaded.sampling["window_frames"] == 4
    np.testing.assert_array_equal(loaded(bundle, seed=5), pipe(bundle, seed=5))


def test_the_model_stays_loaded_between_shots_until_its_folder_changes(bundle_dir, weights_dir, tmp_path):
    from backend.adapters import load_model

    first, kept = load_model(weights_dir)
    again, kept_again = load_model(weights_dir)
    assert again is first and kept_again
    result = generate_shot(bundle_dir, tmp_path / "a", weights=weights_dir, steps=1)
    assert result["metrics"]["model_was_loaded"] is True
    config = weights_dir / "pipeline.json"
    config.write_text(config.read_text())  # new weights written over the folder: a new modification time
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    reloaded, kept = load_model(weights_dir)
    assert reloaded is not first and not kept
    other = tmp_path / "copy"
    shutil.copytree(weights_dir, other)
    swapped, kept = load_model(other)
    assert swapped is not reloaded and not kept
    assert load_model(weights_dir)[0] is not reloaded  # one model is kept: going back loads it again


@pytest.mark.parametrize("setting, value, named", [
    ("edge_snap_radius", "two", "edge_snap_radius must be an integer"),
    ("num_inference_steps", 0, "num_inference_steps must be an integer from 1"),
    ("context_frames", 16, "context_frames (16) must be below window_frames"),
    ("lock_colours", "yes", "lock_colours must be true or false"),
    ("reference_colours", {"weight": 2.0}, "reference_colours must be null or"),
    ("sharpen", 1, "'sharpen' is not a sampling setting"),
])
def test_a_weights_folder_with_bad_sampling_settings_is_refused_at_load(weights_dir, tmp_path, setting, value, named):
    """A folder trained or edited elsewhere: its pipeline.json is checked when it loads and when the server lists it,
    and the message names the setting."""
    from backend.server.catalogue import describe_model

    folder = tmp_path / "edited"
    shutil.copytree(weights_dir, folder)
    config = folder / "pipeline.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), setting: value}))
    with pytest.raises(ValueError, match=re.escape(named)):
        PrevisPipeline.from_pretrained(folder)
    assert named in describe_model("edited", folder)["error"]
