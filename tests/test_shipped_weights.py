"""The shipped default model (``backend/weights/previs-tiny``) on a real held-out-style shot rendered here.

The figures it must reach are the model card's own (``eval_heldout.json`` beside the weights, written by
``cinepregen eval`` on the 16 held-out shots), with margins for a single short shot instead of a 16-shot mean.
"""

import json

import numpy as np
import pytest

from backend.eval.evaluate import evaluate_bundle, load_target_frames
from backend.pipelines.previs_pipeline import DEFAULT_WEIGHTS, PrevisPipeline, make_generate_fn
from cinepregen_addon.core.shot_bundle import read_bundle

FRAMES = 8
PSNR_MARGIN_DB = 3.0  # one 8-frame shot against the held-out mean
RATIO_MARGIN = 0.2  # warping-error and leakage ratios of one shot against their held-out means


def card_figures() -> dict:
    summary = json.loads((DEFAULT_WEIGHTS / "eval_heldout.json").read_text())["summary"]
    return {row["metric"]: row for row in summary}


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    """A procedural scene from the held-out seed range (never trained on), with its Cycles target."""
    from backend.training.dataset import HELDOUT_SEED_OFFSET, DatasetConfig, build_shot

    folder = tmp_path_factory.mktemp("shot") / "shot_00000"
    return build_shot(folder, HELDOUT_SEED_OFFSET + 99, DatasetConfig(frames=FRAMES, target_samples=4))


def test_shipped_weights_are_deterministic_in_range_and_of_the_bundles_shape(shot):
    pipeline = PrevisPipeline.from_pretrained()
    bundle = read_bundle(shot / "bundle")
    clip = pipeline(bundle, seed=0)
    assert clip.shape == (FRAMES, 72, 128, 3) and clip.dtype == np.float32
    assert clip.min() >= 0.0 and clip.max() <= 1.0 and clip.std() > 0.05
    np.testing.assert_array_equal(pipeline(bundle, seed=0), clip)


def test_shipped_weights_reach_the_model_cards_figures_within_margins(shot):
    card = card_figures()
    result = evaluate_bundle(read_bundle(shot / "bundle"), make_generate_fn(), seed=0,
                             target_frames=load_target_frames(shot / "bundle"))
    assert result["fidelity"]["psnr"] >= card["PSNR vs target (dB)"]["model"] - PSNR_MARGIN_DB
    row = card["warping error (lower is better)"]
    ratio = result["model"]["warping_error"] / result["independent_frames"]["warping_error"]
    assert ratio <= row["model"] / row["baseline"] + RATIO_MARGIN
    if result["leakage"] is not None:
        assert result["leakage"]["masked"]["ratio"] <= card["leakage: outside/inside change ratio"]["model"] \
            + RATIO_MARGIN
