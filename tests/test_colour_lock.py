"""Each object's colour held over the shot from the ID pass (`backend.pipelines.colour_lock`): drift and flicker go,
the clay pass's light changes and the texture inside an object stay."""

import numpy as np
from helpers import tiny_pipeline
from test_pipeline import synthetic_bundle

from backend.eval.metrics import colour_drift
from backend.pipelines.colour_lock import (
    MAX_GAIN,
    MIN_PIXELS,
    MIN_SHOT_PIXELS,
    lock_object_colours,
    reference_anchors,
    shot_albedos,
)

FRAMES, H, W = 12, 32, 48


def two_objects() -> np.ndarray:
    ids = np.zeros((FRAMES, H, W), np.int32)
    for f in range(FRAMES):  # object 1 slides right; 0 is the background
        ids[f, 8:24, 4 + 2 * f:20 + 2 * f] = 1
    return ids


def textured(ids: np.ndarray, albedo_by_frame, light=None) -> np.ndarray:
    """Frames whose object 1 has a stripe texture on an albedo that changes per frame, under ``light``."""
    rng = np.random.default_rng(0)
    stripes = 0.8 + 0.4 * (np.arange(W) % 4 < 2)  # x 0.8 / 1.2 around the mean
    frames = np.empty((FRAMES, H, W, 3), np.float32)
    for f in range(FRAMES):
        frames[f] = 0.3 + 0.02 * rng.standard_normal((H, W, 3))
        tint = np.asarray(albedo_by_frame(f), np.float32) * (1.0 if light is None else light[f, 12, 12 + 2 * f])
        frames[f][ids[f] == 1] = (tint[None] * stripes[None, :, None].repeat(H, 0))[ids[f] == 1]
    return np.clip(frames, 0, 1)


def object_means(frames, ids, obj):
    return np.stack([frames[f][ids[f] == obj].mean(0) for f in range(len(frames))])


def test_a_drifting_object_is_held_at_its_shot_colour_with_its_texture():
    ids = two_objects()
    frames = textured(ids, lambda f: (0.5 - 0.02 * f, 0.3, 0.2 + 0.02 * f))  # red fades, blue grows: 40%+ drift
    assert max(colour_drift(frames, ids).values()) > 0.3
    held = lock_object_colours(frames, ids)
    means = object_means(held, ids, 1)
    np.testing.assert_allclose(means, means.mean(0, keepdims=True).repeat(FRAMES, 0), atol=2e-3)
    assert max(colour_drift(held, ids).values()) < 0.01
    for f in (0, FRAMES - 1):  # the stripes are the model's: same contrast inside the object, per channel
        inside = ids[f] == 1
        before, after = frames[f][inside], held[f][inside]
        np.testing.assert_allclose(after / after.mean(0), before / before.mean(0), rtol=1e-4)


def test_the_clay_pass_light_still_changes_the_object():
    """A character walking into shadow: its clay shading falls to 40%; its generated albedo also wanders. Held, the
    albedo is steady and the colour follows the light."""
    ids = two_objects()
    light = np.ones((FRAMES, H, W, 3), np.float32)
    for f in range(FRAMES):
        light[f][ids[f] == 1] = 1.0 - 0.6 * f / (FRAMES - 1)
    frames = textured(ids, lambda f: (0.6, 0.4 + 0.03 * f, 0.2), light)
    held = lock_object_colours(frames, ids, light)
    means, shade = object_means(held, ids, 1), object_means(light, ids, 1)
    albedo = means / shade
    np.testing.assert_allclose(albedo, albedo.mean(0, keepdims=True).repeat(FRAMES, 0), rtol=5e-3)
    assert means[-1].mean() < 0.5 * means[0].mean()  # the shadow is kept
    # without the clay pass the same frames would be held at one brightness: the light is what keeps it
    flat = object_means(lock_object_colours(frames, ids), ids, 1)
    assert flat[-1].mean() > 0.9 * flat[0].mean()


def test_frames_where_the_light_goes_out_do_not_set_the_colour():
    """A lamp switched off for a third of the shot: the clay pass and the generated object are near black there, and
    their ratio is noise. The object keeps the colour it has in the lit frames."""
    ids = two_objects()
    light = np.ones((FRAMES, H, W, 3), np.float32)
    dark = range(8, FRAMES)
    rng = np.random.default_rng(1)
    for f in dark:
        light[f][ids[f] == 1] = 0.002
    frames = textured(ids, lambda f: (0.6, 0.4, 0.2), light)
    for f in dark:  # what the model paints in the dark: a little noise, unrelated to the albedo
        frames[f][ids[f] == 1] = 0.004 * rng.random((int((ids[f] == 1).sum()), 3))
    held = lock_object_colours(frames, ids, light)
    lit_before, lit_after = object_means(frames, ids, 1)[:8], object_means(held, ids, 1)[:8]
    np.testing.assert_allclose(lit_after, lit_before, rtol=0.05)
    assert held[list(dark)][ids[list(dark)] == 1].max() < 0.02


def test_small_fleeting_and_black_objects_are_left_or_bounded():
    ids = two_objects()
    ids[3, 0:2, 0:10] = 7  # 20 pixels, one frame: nothing to hold to
    ids[:, 31, 0:MIN_PIXELS - 1] = 8  # under MIN_PIXELS in every frame: a sliver of edge blend
    ids[:3, 30, 40:40 + MIN_PIXELS] = 9  # enough in each of 3 frames, too few over the shot
    ids[:, 0, 30:30 + 2 * MIN_PIXELS] = 10  # as few a frame, but seen all shot long: held
    assert 3 * MIN_PIXELS < MIN_SHOT_PIXELS <= FRAMES * 2 * MIN_PIXELS
    frames = textured(ids, lambda f: (0.5, 0.3, 0.2))
    frames[5][ids[5] == 1] = 0.01  # one frame came out near black
    rng = np.random.default_rng(2)
    frames[ids == 10] = rng.uniform(0.2, 0.6, (int((ids == 10).sum()), 1))  # a small object that flickers
    held = lock_object_colours(frames, ids)
    for obj in (7, 8, 9):
        np.testing.assert_array_equal(held[ids == obj], frames[ids == obj])
    means = object_means(held, ids, 10)
    assert np.ptp(means, axis=0).max() < 0.01 < np.ptp(object_means(frames, ids, 10), axis=0).max()
    assert held[5][ids[5] == 1].max() <= 0.01 * MAX_GAIN + 1e-6  # lifted at most MAX_GAIN x, not to the mean


def test_the_pipeline_holds_colours_by_default_and_shows_the_drift_without():
    """The tiny random pipeline drifts as it likes; its delivered clip is the held one."""
    pipeline, bundle = tiny_pipeline(), synthetic_bundle(8)
    raw = pipeline(bundle, num_inference_steps=2, lock_colours=False)
    held = pipeline(bundle, num_inference_steps=2)
    ids = np.stack([p.object_id for p in bundle.passes])
    np.testing.assert_array_equal(held, lock_object_colours(raw, ids))
    assert max(colour_drift(held, ids).values()) < 0.01 < max(colour_drift(raw, ids).values())


def test_an_anchor_pulls_an_objects_albedo_towards_it_by_its_weight():
    """Under the clay pass's light: weight 1 takes the anchor's albedo, 0.5 the geometric mean with the model's own,
    0 leaves the lock as it was; the texture and the light stay the model's and the engine's."""
    ids = two_objects()
    light = np.ones((FRAMES, H, W, 3), np.float32)
    for f in range(FRAMES):
        light[f][ids[f] == 1] = 1.0 - 0.4 * f / (FRAMES - 1)
    frames = textured(ids, lambda f: (0.3, 0.4, 0.3), light)
    own, anchor = shot_albedos(frames, ids, light)[1], np.array([0.5, 0.3, 0.45])
    np.testing.assert_allclose(own, (0.3, 0.4, 0.3), rtol=2e-3)
    for weight, expected in ((1.0, anchor), (0.5, np.sqrt(own * anchor)), (0.0, own)):
        held = lock_object_colours(frames, ids, light, {1: anchor}, weight)
        np.testing.assert_allclose(shot_albedos(held, ids, light)[1], expected, rtol=5e-3)
        np.testing.assert_array_equal(held[ids == 0], lock_object_colours(frames, ids, light)[ids == 0])
        inside = ids[3] == 1
        np.testing.assert_allclose(held[3][inside] / held[3][inside].mean(0),
                                   frames[3][inside] / frames[3][inside].mean(0), rtol=1e-4)
    np.testing.assert_array_equal(lock_object_colours(frames, ids, light, {1: anchor}, 0.0),
                                  lock_object_colours(frames, ids, light))


def test_reference_anchors_scale_a_pictures_subject_and_a_swatch_by_their_own_gains():
    page = np.full((96, 96, 3), 235, np.uint8)
    yy, xx = np.mgrid[:96, :96]
    page[(yy - 48) ** 2 + (xx - 48) ** 2 < 20**2] = (100, 50, 150)
    swatch = np.full((32, 32, 3), 80, np.uint8)
    gains = {"picture_gain": [1.5, 1.0, 1.0], "swatch_gain": [1.0, 2.0, 1.0]}
    anchors = reference_anchors({4: page, 5: swatch}, gains)
    np.testing.assert_allclose(anchors[4], np.array([150, 50, 150]) / 255, atol=3e-3)
    np.testing.assert_allclose(anchors[5], np.array([80, 160, 80]) / 255, atol=1e-6)


def test_the_pipeline_anchors_referenced_objects_only_where_masks_bind_them():
    """With reference_colours in its pipeline.json the tiny pipeline's red-referenced hero comes out redder than
    the lock alone leaves it; the unmasked baseline and a reference switched off go without the anchor."""
    pipeline, bundle = tiny_pipeline(), synthetic_bundle(8)
    ids = np.stack([p.object_id for p in bundle.passes])
    plain = pipeline(bundle, num_inference_steps=2)
    pipeline.sampling["reference_colours"] = {"weight": 1.0, "picture_gain": [1, 1, 1], "swatch_gain": [1, 1, 1]}
    anchored = pipeline(bundle, num_inference_steps=2)
    red = np.array([220, 0, 0]) / 255
    distance = [np.abs(object_means(clip, ids, 1).mean(0) - red).sum() for clip in (plain, anchored)]
    assert distance[1] < 0.8 * distance[0]
    np.testing.assert_array_equal(anchored[ids == 3], plain[ids == 3])  # the floor has no reference
    np.testing.assert_array_equal(pipeline(bundle, num_inference_steps=2, masked=False),
                                  _unanchored(pipeline, bundle, masked=False))
    off = pipeline(bundle, num_inference_steps=2, reference_strengths={1: 0.0})
    np.testing.assert_array_equal(off[ids == 1], _unanchored(pipeline, bundle, reference_strengths={1: 0.0})[ids == 1])


def _unanchored(pipeline, bundle, **options):
    calibration = pipeline.sampling.pop("reference_colours")
    try:
        return pipeline(bundle, num_inference_steps=2, **options)
    finally:
        pipeline.sampling["reference_colours"] = calibration
