"""The v2 model in training (``backend/weights/previs-tiny-v2``) on a real bundle rendered here: a held-out scene
whose subject is a rigged, walking glTF character training never saw, at the bundle's 256x144 with the clay pass,
long enough for two windows. Its figures must fall within its card's per-shot spread (``eval_heldout.json``)."""

import json

import numpy as np
import pytest

from backend.bundle_io import read_shot_bundle
from backend.eval.evaluate import evaluate_bundle, load_target_frames
from backend.pipelines.previs_pipeline import DEFAULT_WEIGHTS, PrevisPipeline, make_generate_fn

WEIGHTS = DEFAULT_WEIGHTS.parent / "previs-tiny-v2"
FRAMES = 20  # a window of 16, then 4 new frames after 4 of context
MARGIN_DB = 1.0  # below the worst held-out shot's PSNR
RATIO_MARGIN = 0.1  # above the worst held-out shot's warping-error and patch-grid ratios


@pytest.fixture(scope="module")
def character_shot(tmp_path_factory):
    from backend.training.assets import default_asset_dir
    from backend.training.dataset import HELDOUT_SEED_OFFSET, DatasetConfig, build_shot

    config = DatasetConfig(frames=FRAMES, target_samples=4, asset_share=1.0, asset_dir=str(default_asset_dir()))
    return build_shot(tmp_path_factory.mktemp("character") / "shot_00000", HELDOUT_SEED_OFFSET + 77, config,
                      heldout=True)


def test_output_at_the_bundles_size_and_frame_count_and_deterministic(character_shot):
    bundle = read_shot_bundle(character_shot / "bundle")
    assert bundle.shot["subject_asset"] and all(p.clay is not None for p in bundle.passes)
    pipeline = PrevisPipeline.from_pretrained(WEIGHTS)
    assert pipeline.refiner is not None and pipeline.transformer.config.context_channels == 4
    clip = pipeline(bundle, seed=0)
    assert clip.shape == (FRAMES, 144, 256, 3) and clip.dtype == np.float32
    assert clip.min() >= 0.0 and clip.max() <= 1.0 and clip.std() > 0.02
    np.testing.assert_array_equal(pipeline(bundle, seed=0), clip)


def test_figures_stay_within_the_cards_held_out_spread(character_shot):
    card = json.loads((WEIGHTS / "eval_heldout.json").read_text())["bundles"]
    result = evaluate_bundle(read_shot_bundle(character_shot / "bundle"), make_generate_fn(WEIGHTS), seed=0,
                             target_frames=load_target_frames(character_shot / "bundle"))

    def ratio(r):
        return r["model"]["warping_error"] / r["independent_frames"]["warping_error"]

    assert result["fidelity"]["psnr"] >= min(b["fidelity"]["psnr"] for b in card) - MARGIN_DB
    assert ratio(result) <= max(ratio(b) for b in card) + RATIO_MARGIN
    assert result["model"]["patch_grid_ratio"] <= max(b["model"]["patch_grid_ratio"] for b in card) + RATIO_MARGIN
