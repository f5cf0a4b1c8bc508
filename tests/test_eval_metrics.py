"""Every evaluation metric on cases with known answers, and the eval harness end to end on a written bundle.

The temporal-consistency cases are rendered analytically: a textured wall with a textured box in front of it, seen
by two cameras; each pixel's colour is the texture at the world point its ray hits, so a consistent pair agrees
exactly along the ground-truth flow and any warping error comes from the metric, not from the scene.
"""

import json
import math

import numpy as np
import pytest

from backend.commands.eval import find_bundles
from backend.eval import metrics
from backend.eval.evaluate import POOLED_PSNR, evaluate_bundles, load_target_frames, write_report
from cinepregen_addon.core.camera_geometry import flow_from_depth, pixel_rays
from cinepregen_addon.core.shot_bundle import (
    BundleObject,
    FrameCamera,
    FramePasses,
    ShotBundle,
    read_bundle,
    write_bundle,
)

WIDTH, HEIGHT = 96, 64
K = np.array([[80.0, 0.0, WIDTH / 2 - 0.5], [0.0, 80.0, HEIGHT / 2 - 0.5], [0.0, 0.0, 1.0]])
WALL_Y, BOX_Y = 10.0, 6.0
WALL_ID, BOX_ID = 1, 2


def world_to_camera(centre, yaw_deg=0.0):
    """OpenCV world-to-camera for a camera at ``centre`` looking along world +Y (Z up), turned by ``yaw_deg``."""
    yaw = math.radians(yaw_deg)
    right = np.array([math.cos(yaw), -math.sin(yaw), 0.0])
    forward = np.array([math.sin(yaw), math.cos(yaw), 0.0])
    rotation = np.stack([right, [0.0, 0.0, -1.0], forward])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = -rotation @ np.asarray(centre, dtype=np.float64)
    return matrix


def texture(points, object_id):
    """Smooth colour of a world point: different patterns on the wall and on the box."""
    x, z = points[..., 0], points[..., 2]
    wall = np.stack(
        [0.5 + 0.3 * np.sin(1.3 * x + 0.7 * z), 0.5 + 0.3 * np.cos(1.1 * z - 0.5 * x), 0.4 + 0.2 * np.sin(0.9 * x)], -1
    )
    box = np.stack([0.15 + 0.1 * np.sin(3.0 * x), 0.8 + 0.1 * np.cos(2.5 * z), 0.1 + 0.05 * np.sin(2.0 * (x + z))], -1)
    return np.where((object_id == BOX_ID)[..., None], box, wall)


def render(w2c, box_x=0.0):
    """Depth (planar), object IDs, colour and the world points of every pixel, by ray casting the wall and box."""
    origins, directions = pixel_rays(K, w2c, HEIGHT, WIDTH)
    t_wall = (WALL_Y - origins[..., 1]) / directions[..., 1]
    t_box = (BOX_Y - origins[..., 1]) / directions[..., 1]
    on_box = origins + t_box[..., None] * directions
    hits_box = (np.abs(on_box[..., 0] - box_x) <= 1.2) & (np.abs(on_box[..., 2]) <= 0.8)
    t = np.where(hits_box, t_box, t_wall)
    points = origins + t[..., None] * directions
    object_id = np.where(hits_box, BOX_ID, WALL_ID).astype(np.int32)
    depth = (t * (directions @ w2c[2, :3])).astype(np.float32)
    box_local = points - np.array([box_x, 0.0, 0.0]) * hits_box[..., None]  # the box's texture moves with it
    return depth, object_id, texture(box_local, object_id), points


CAMERA0 = world_to_camera((0.0, 0.0, 0.0))
CAMERA1 = world_to_camera((0.4, 0.3, 0.1), yaw_deg=2.0)


@pytest.fixture(scope="module")
def two_views():
    return render(CAMERA0), render(CAMERA1)


def test_consistent_pair_has_near_zero_warping_error_and_a_shifted_one_does_not(two_views):
    (depth0, ids0, colour0, _), (depth1, ids1, colour1, _) = two_views
    flow, valid = metrics.ground_truth_flow(depth0, depth1, ids0, ids1, K, CAMERA0, K, CAMERA1)
    assert valid.mean() > 0.7
    consistent = metrics.warping_error(colour0, colour1, flow, valid)
    shifted = metrics.warping_error(colour0, np.roll(colour1, 3, axis=1), flow, valid)
    assert consistent < 0.003
    assert shifted > 0.02 and shifted > 10 * consistent

    clip = np.stack([colour0, colour1])
    report = metrics.temporal_warping_error(clip, [depth0, depth1], [ids0, ids1], [K, K], [CAMERA0, CAMERA1])
    assert report["mean"] == pytest.approx(consistent)
    assert report["per_pair"] == [pytest.approx(consistent)]


def test_occluded_pixels_are_masked(two_views):
    (depth0, ids0, colour0, points0), (depth1, ids1, colour1, _) = two_views
    flow, valid = metrics.ground_truth_flow(depth0, depth1, ids0, ids1, K, CAMERA0, K, CAMERA1)
    # a wall point seen in frame 0 is hidden in frame 1 when the ray from camera 1 to it crosses the box first
    centre1 = -CAMERA1[:3, :3].T @ CAMERA1[:3, 3]
    s = (BOX_Y - centre1[1]) / (points0[..., 1] - centre1[1])
    crossing = centre1 + s[..., None] * (points0 - centre1)
    hidden = (ids0 == WALL_ID) & (np.abs(crossing[..., 0]) <= 1.2) & (np.abs(crossing[..., 2]) <= 0.8)
    assert hidden.sum() > 20
    assert not (valid & hidden).any()
    # scoring those pixels anyway compares wall against box: the mask is what keeps the error near zero
    unmasked = metrics.warping_error(colour0, colour1, flow, depth0 > 0)
    assert unmasked > 5 * metrics.warping_error(colour0, colour1, flow, valid)


def test_moving_object_uses_the_vector_pass():
    depth0, ids0, colour0, _ = render(CAMERA0)
    depth1, ids1, colour1, _ = render(CAMERA0, box_x=0.3)  # static camera, the box moves right by 0.3 m
    box_shift_px = 80.0 * 0.3 / BOX_Y
    vector = np.zeros((HEIGHT, WIDTH, 4), np.float32)
    vector[..., 2] = np.where(ids0 == BOX_ID, -box_shift_px, 0.0)  # motion to the next frame, Blender's layout

    flow, valid = metrics.ground_truth_flow(depth0, depth1, ids0, ids1, K, CAMERA0, K, CAMERA0, vector0=vector)
    box = ids0 == BOX_ID
    assert np.allclose(flow[box & valid, 0], box_shift_px)
    assert (valid & box).sum() > 0.8 * box.sum()
    moving_error = metrics.warping_error(colour0, colour1, flow, valid & box)
    assert moving_error < 0.003
    # without the vector pass the box counts as static and its moved texture shows up as error
    still_flow, still_valid = metrics.ground_truth_flow(depth0, depth1, ids0, ids1, K, CAMERA0, K, CAMERA0)
    static_error = metrics.warping_error(colour0, colour1, still_flow, still_valid & box)
    assert static_error > 0.01 and static_error > 5 * moving_error


def test_vector_pass_convention_on_a_cycles_render(tmp_path):
    """On a real render (camera trucking right, one prop moving right and up), the vector pass read with our
    convention matches the camera-induced flow on static surfaces and shows the prop's own motion."""
    from backend.blender.scenes import build_test_scene
    from cinepregen_addon.render_passes import ShotRenderSpec, render_shot_bundle

    scene = build_test_scene(n_objects=3, moving=True, camera_move="truck", frame_start=1, frame_end=3)
    spec = ShotRenderSpec("truck", scene["camera"], 1, 3, include_clay=True)
    bundle = read_bundle(render_shot_bundle(scene["scene"], spec, tmp_path / "truck"))
    moving_id = next(o.id for o in bundle.objects if o.name == scene["moving"])
    p0, p1 = bundle.passes[:2]
    c0, c1 = bundle.cameras[:2]
    camera_flow, in_view = flow_from_depth(p0.depth, c0.K, c0.world_to_camera, c1.K, c1.world_to_camera)
    vector_flow = metrics.flow_to_next_from_vector_pass(p0.vector)
    static = in_view & (p0.object_id != moving_id)
    assert np.median(camera_flow[static, 0]) < -1.0  # the camera trucks right, the world slides left
    assert np.percentile(np.abs(vector_flow - camera_flow)[static], 99) < 0.01
    prop = in_view & (p0.object_id == moving_id)
    own_motion = (vector_flow - camera_flow)[prop].mean(axis=0)
    assert own_motion[0] > 0.5 and own_motion[1] < -0.1

    flow, valid = metrics.ground_truth_flow(
        p0.depth,
        p1.depth,
        p0.object_id,
        p1.object_id,
        c0.K,
        c0.world_to_camera,
        c1.K,
        c1.world_to_camera,
        vector0=p0.vector,
    )
    assert np.allclose(flow[prop & valid], vector_flow[prop & valid])
    assert valid.mean() > 0.8
    # a clip rendered consistently by the engine (the clay pass)
    clip = np.stack([p.clay for p in bundle.passes]) / 255.0
    args = (
        [p.depth for p in bundle.passes],
        [p.object_id for p in bundle.passes],
        [c.K for c in bundle.cameras],
        [c.world_to_camera for c in bundle.cameras],
    )
    consistent = metrics.temporal_warping_error(clip, *args, vectors=[p.vector for p in bundle.passes])
    shifted = metrics.temporal_warping_error(
        np.roll(clip, 3, axis=2), *args, vectors=[p.vector for p in bundle.passes]
    )
    assert consistent["mean"] < 0.01 and shifted["mean"] > 1.8 * consistent["mean"]  # measured 0.0038 vs 0.0090


def test_psnr_known_answers():
    image = np.full((16, 24, 3), 0.5)
    assert metrics.psnr(image, image) == math.inf
    assert metrics.psnr(image + 0.1, image) == pytest.approx(20.0)
    noise = np.random.default_rng(0).normal(0, 0.05, image.shape)
    assert metrics.psnr(image + noise, image) == pytest.approx(10 * math.log10(1 / np.mean(noise**2)))

    mask = np.zeros((16, 24), bool)
    mask[4:12, 6:18] = True
    outside_only = image.copy()
    outside_only[~mask] += 0.3
    assert metrics.psnr(outside_only, image, mask) == math.inf
    assert metrics.psnr(outside_only, image) < 20
    inside_only = image.copy()
    inside_only[mask] += 0.1
    assert metrics.psnr(inside_only, image, mask) == pytest.approx(20.0)
    assert math.isnan(metrics.psnr(image, image, np.zeros_like(mask)))


def test_ssim_known_answers():
    rng = np.random.default_rng(1)
    image = np.clip(0.5 + 0.2 * rng.standard_normal((32, 48, 3)), 0, 1)
    assert metrics.ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    mild = metrics.ssim(np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1), image)
    strong = metrics.ssim(np.clip(image + rng.normal(0, 0.2, image.shape), 0, 1), image)
    assert 1.0 > mild > strong
    # flat images: only the luminance term remains, (2ab + c1) / (a^2 + b^2 + c1)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert metrics.ssim(np.full((20, 20), 0.5), np.full((20, 20), 0.6)) == pytest.approx(expected)
    # masked SSIM is the mean of the map inside the mask: an untouched region scores 1
    noisy = image.copy()
    noisy[:, 24:] = np.clip(noisy[:, 24:] + rng.normal(0, 0.2, noisy[:, 24:].shape), 0, 1)
    mask = np.zeros((32, 48), bool)
    mask[:, :12] = True  # more than the window radius away from the noisy half
    assert metrics.ssim(noisy, image, mask) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(noisy, image) < 0.9


def test_change_ratio_zero_for_leakage_free_edit_and_one_for_a_global_edit():
    rng = np.random.default_rng(2)
    clip = rng.uniform(0.2, 0.8, (3, 16, 24, 3))
    mask = np.zeros((3, 16, 24), bool)
    mask[:, 4:10, 5:15] = True
    local = clip.copy()
    local[mask] = 1.0 - local[mask]
    assert metrics.change_ratio(clip, local, mask)["ratio"] == 0.0
    assert metrics.change_ratio(clip, clip + 0.15, mask)["ratio"] == pytest.approx(1.0)
    leaky = local + 0.05 * ~mask[..., None]
    assert 0.0 < metrics.change_ratio(clip, leaky, mask)["ratio"] < 0.5
    with pytest.raises(ValueError, match="mask"):
        metrics.change_ratio(clip, local, np.ones_like(mask))


def test_swap_test_detects_swapped_colours():
    ids = np.zeros((2, 16, 24), np.int32)
    ids[:, 2:8, 2:10] = 1
    ids[:, 9:15, 12:22] = 2
    references = {1: np.array([0.86, 0.1, 0.1]), 2: np.array([0.1, 0.1, 0.78])}

    def paint(assignment, light=np.ones(3)):
        clip = np.zeros((*ids.shape, 3))
        for object_id, reference_id in assignment.items():
            clip[ids == object_id] = references[reference_id] * light
        return clip

    original, swapped = paint({1: 1, 2: 2}), paint({1: 2, 2: 1})
    assert metrics.binding_accuracy(original, ids, references, {1: 1, 2: 2}) == 1.0
    assert metrics.binding_accuracy(swapped, ids, references, {1: 2, 2: 1}) == 1.0
    assert metrics.binding_accuracy(swapped, ids, references, {1: 1, 2: 2}) == 0.0
    ignored_swap = paint({1: 1, 2: 2})
    assert metrics.binding_accuracy(ignored_swap, ids, references, {1: 2, 2: 1}) == 0.0
    assert np.isnan(metrics.binding_accuracy(original, ids[:, :8], references, {1: 1, 2: 2}))  # object 2 off screen


def test_binding_reads_colours_under_dim_tinted_light():
    """A red object in dim blue light is darker and bluer than its reference, nearer the blue reference in absolute
    RGB; relative to the other object in the same light it is still the red one."""
    ids = np.zeros((1, 8, 16), np.int32)
    ids[:, :, 8:] = 2
    ids[:, :, :8] = 1
    references = {1: np.array([0.8, 0.35, 0.3]), 2: np.array([0.3, 0.35, 0.8])}
    light = np.array([0.15, 0.2, 0.7])
    clip = np.zeros((*ids.shape, 3))
    clip[ids == 1] = references[1] * light
    clip[ids == 2] = references[2] * light
    own, other = (np.linalg.norm(metrics.mean_colour(clip, ids == 1) - references[r]) for r in (1, 2))
    assert other < own  # the absolute test would call this a miss
    assert metrics.binding_accuracy(clip, ids, references, {1: 1, 2: 2}) == 1.0
    assert metrics.binding_accuracy(clip, ids, references, {1: 2, 2: 1}) == 0.0


def _rectangle_scene():
    ids = np.zeros((48, 64), np.int32)
    ids[12:36, 16:44] = 1
    depth = np.where(ids > 0, 3.0, 8.0)
    palette = np.array([[0.1, 0.2, 0.6], [0.9, 0.8, 0.2]])
    return ids, depth, palette[ids]


def test_edge_f_score_exact_on_id_boundaries_tolerant_of_small_shifts():
    ids, depth, image = _rectangle_scene()
    reference = metrics.guidance_edges(ids, depth)
    assert metrics.edge_f_score(metrics.image_edges(image), reference)["f_score"] == 1.0

    def f_score_shifted(shift):
        edges = metrics.image_edges(np.roll(image, shift, axis=(0, 1)))
        return metrics.edge_f_score(edges, reference)["f_score"]

    for shift in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 1)]:
        assert f_score_shifted(shift) > 0.98, shift  # only the corners of a 2 px shift fall out of tolerance
    assert f_score_shifted((0, 4)) < 0.6 and f_score_shifted((4, 0)) < 0.6
    assert f_score_shifted((4, 4)) < 0.2
    blank = metrics.edge_f_score(metrics.image_edges(np.full_like(image, 0.5)), reference)
    assert blank["f_score"] == 0.0 and blank["precision"] == 0.0


def test_guidance_edges_follow_depth_jumps_inside_one_object():
    ids = np.ones((10, 10), np.int32)
    depth = np.full((10, 10), 4.0)
    depth[:, 5:] = 6.0
    edges = metrics.guidance_edges(ids, depth)
    assert edges[:, 4:6].all() and edges.sum() == 20
    depth[:, 5:] = 4.1  # a slope, not a discontinuity
    assert not metrics.guidance_edges(ids, depth).any()


# ----------------------------------------------------------------------------------------------------------------
# The harness end to end
# ----------------------------------------------------------------------------------------------------------------


def paint_references(bundle, *, references_override=None, independent_frames=False, masked=True, seed=0):
    """A simple, deterministic previs generator: each object's region takes its reference's mean colour.

    Unmasked IP attention is modelled as every region taking half of the mean of all references (so an edit of one
    reference leaks everywhere); independent frames get a fresh brightness offset per frame from the seed.
    """
    references = bundle.reference_images if references_override is None else references_override
    colours = {object_id: metrics.mean_colour(image) for object_id, image in references.items()}
    everything = np.mean(list(colours.values()), axis=0)
    rng = np.random.default_rng(seed)
    frames = []
    for passes in bundle.passes:
        frame = np.zeros((bundle.height, bundle.width, 3))
        for object_id, colour in colours.items():
            frame[passes.object_id == object_id] = colour if masked else 0.5 * colour + 0.5 * everything
        if independent_frames:
            frame = np.clip(frame + rng.uniform(-0.1, 0.1), 0, 1)
        frames.append(frame)
    return np.stack(frames)


@pytest.fixture(scope="module")
def bundle_folder(tmp_path_factory):
    """A 3-frame bundle of the wall-and-box scene, the camera trucking right, with a target clip."""
    from PIL import Image

    cameras, passes = [], []
    for i in range(3):
        w2c = world_to_camera((0.15 * i, 0.0, 0.0), yaw_deg=0.5 * i)
        depth, ids, _, _ = render(w2c)
        cameras.append(FrameCamera(frame=1 + i, K=K.copy(), world_to_camera=w2c))
        passes.append(
            FramePasses(
                depth=depth,
                normal=np.zeros((HEIGHT, WIDTH, 3), np.float32),
                object_id=ids,
                vector=np.zeros((HEIGHT, WIDTH, 4), np.float32),
            )
        )
    references = {
        WALL_ID: np.tile(np.array([40, 90, 200], np.uint8), (8, 8, 1)),
        BOX_ID: np.tile(np.array([230, 120, 30], np.uint8), (8, 8, 1)),
    }
    bundle = ShotBundle(
        name="wall_and_box",
        fps=24,
        width=WIDTH,
        height=HEIGHT,
        frame_start=1,
        frame_end=3,
        cameras=cameras,
        passes=passes,
        objects=[
            BundleObject(WALL_ID, "wall", "references/wall.png"),
            BundleObject(BOX_ID, "box", "references/box.png"),
        ],
        prompt="a box in front of a wall",
        seed=0,
        style={},
        shot={},
        reference_images=references,
    )
    folder = write_bundle(bundle, tmp_path_factory.mktemp("bundles") / "wall_and_box")
    target = paint_references(read_bundle(folder))
    (folder / "target").mkdir()
    for i, frame in enumerate(target):
        Image.fromarray(np.round(frame * 255).astype(np.uint8)).save(folder / "target" / f"{i:06d}.png")
    return folder


def test_harness_end_to_end_writes_markdown_and_json(bundle_folder, tmp_path):
    assert load_target_frames(bundle_folder).shape == (3, HEIGHT, WIDTH, 3)
    assert find_bundles([str(bundle_folder.parent)]) == [bundle_folder]
    assert find_bundles([f"{bundle_folder},{bundle_folder}"]) == [bundle_folder, bundle_folder]

    evaluation = evaluate_bundles([bundle_folder], paint_references, seed=3)
    result = evaluation["bundles"][0]
    assert result["model"]["warping_error"] < 1e-3  # flat colours that follow the objects
    assert result["independent_frames"]["warping_error"] > 0.01
    assert result["model"]["edge_f_score"] > 0.9
    assert result["fidelity"]["psnr"] > 45 and result["fidelity"]["masked_ssim"] > 0.99
    assert set(result["fidelity"]["objects"]) == {"wall", "box"}
    assert result["leakage"]["object"] == "wall"  # the largest referenced object on screen
    assert result["leakage"]["masked"]["ratio"] == 0.0
    assert result["leakage"]["unmasked"]["ratio"] > 0.1
    assert result["binding"]["before_swap"] == 1.0 and result["binding"]["after_swap"] == 1.0
    assert result["binding"]["target"] == 1.0  # the target is the same painter

    markdown, report = write_report(evaluation, tmp_path / "eval")
    table = markdown.read_text()
    assert "| warping error (lower is better) |" in table and "wall_and_box" in table
    saved = json.loads(report.read_text())
    assert saved["bundles"][0]["fidelity"]["psnr"] == "inf"  # the target is the same painting, saved losslessly
    assert saved["bundles"][0]["leakage"]["masked"]["ratio"] == 0.0
    rows = {row["metric"]: row for row in saved["summary"]}
    assert rows["warping error (lower is better)"]["baseline"] > rows["warping error (lower is better)"]["model"]


def test_a_black_target_is_left_out_of_the_shot_means_but_not_the_pooled_psnr(bundle_folder):
    """A black target (a night shot with nothing lit in view) would score any dark clip tens of dB and an exactly
    black one infinitely many: the per-shot means leave it out, the PSNR of the pooled squared error keeps it."""
    painted = load_target_frames(bundle_folder)

    def off_by(bundle, **options):  # 0.1 off the painting: 20 dB
        return np.clip(paint_references(bundle) + 0.1, 0, 1)

    black = np.zeros_like(painted)
    evaluation = evaluate_bundles([bundle_folder, bundle_folder], off_by, target_frames=[painted, black])
    psnrs = [b["fidelity"]["psnr"] for b in evaluation["bundles"]]
    assert evaluation["bundles"][1]["fidelity"]["target_black"] and not evaluation["bundles"][0]["fidelity"][
        "target_black"]
    rows = {row["metric"]: row for row in evaluation["summary"]}
    shot_mean = rows["PSNR vs target (dB)"]
    assert shot_mean["bundles"] == 1 and shot_mean["model"] == pytest.approx(psnrs[0])
    pooled = rows[POOLED_PSNR]
    errors = [b["fidelity"]["mse"] for b in evaluation["bundles"]]
    assert pooled["bundles"] == 2 and pooled["model"] == pytest.approx(10 * np.log10(2 / sum(errors)))
    assert min(psnrs) < pooled["model"] < max(psnrs)
    assert evaluation["bundles"][1]["drift"]["max"] is None and evaluation["bundles"][0]["drift"]["max"] is not None
    grid = rows["patch-grid ratio on the delivered mp4 (aim <= 1.15)"]
    assert grid["bundles"] == 1 and grid["model"] == evaluation["bundles"][0]["model"]["patch_grid_ratio"]
    assert evaluation["bundles"][1]["model"]["patch_grid_ratio"] is not None  # still reported for the shot
    inside = rows["patch-grid ratio inside objects (outlines left out)"]
    assert inside["bundles"] == 1
    assert inside["baseline"] == evaluation["bundles"][0]["fidelity"]["target_patch_grid_ratio_inside_objects"]


def test_harness_rejects_a_clip_of_the_wrong_size(bundle_folder):
    def half_size(bundle, **options):
        return np.zeros((len(bundle.passes), bundle.height // 2, bundle.width // 2, 3))

    with pytest.raises(ValueError, match="expected"):
        evaluate_bundles([bundle_folder], half_size)


def test_dataset_shot_folders_are_bundles_with_their_target_beside(bundle_folder, tmp_path):
    """The layout of `cinepregen dataset build`: split/shot_XXXXX/bundle/ with target.npz beside it."""
    import shutil

    shot = tmp_path / "heldout" / "shot_00000"
    shutil.copytree(bundle_folder, shot / "bundle", ignore=shutil.ignore_patterns("target"))
    target = load_target_frames(bundle_folder)
    np.savez_compressed(shot / "target.npz", frames=np.round(target * 255).astype(np.uint8))

    assert find_bundles([str(tmp_path / "heldout")]) == [shot / "bundle"]
    assert find_bundles([str(shot)]) == [shot / "bundle"]
    np.testing.assert_allclose(load_target_frames(shot / "bundle"), target, atol=1e-9)
    assert load_target_frames(bundle_folder.parent) is None


def test_patch_grid_ratio_sees_an_upsampled_patch_grid_and_not_a_smooth_picture():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:144, 0:256] / 40.0
    smooth = np.stack([np.sin(xx + t) * np.cos(yy) * 0.4 + 0.5 for t in range(4)])[..., None].repeat(3, -1)
    assert 0.9 < metrics.patch_grid_ratio(smooth) < 1.1
    blocks = rng.uniform(0.2, 0.8, (4, 9, 16, 3)).repeat(16, axis=1).repeat(16, axis=2)  # 16x16 patches
    noisy = np.clip(blocks * 0.3 + smooth * 0.7 + rng.normal(0, 0.01, blocks.shape), 0, 1)
    assert metrics.patch_grid_ratio(noisy) > 2.0
    assert metrics.patch_grid_ratio((noisy * 255).astype(np.uint8)) > 2.0  # uint8 clips as the mp4 gives them


def test_patch_grid_ratio_inside_objects_leaves_out_outlines_on_grid_lines_but_not_a_grid():
    """A box whose outline lies along 16-pixel lines raises the plain ratio like a grid would; inside objects it is
    gone, while a real patch grid inside the objects stays."""
    yy, xx = np.mgrid[0:144, 0:256] / 40.0
    smooth = np.stack([np.sin(xx + t) * np.cos(yy) * 0.2 + 0.4 for t in range(4)])[..., None].repeat(3, -1)
    ids = np.zeros((4, 144, 256), np.int32)
    ids[:, 32:96, 64:160] = 1  # outline on rows 32/96 and columns 64/160: all multiples of 16
    boxed = np.where(ids[..., None] == 1, smooth * 0.5 + 0.45, smooth)
    assert metrics.patch_grid_ratio(boxed) > 1.5
    assert 0.9 < metrics.patch_grid_ratio(boxed, object_ids=ids) < 1.1
    blocks = np.random.default_rng(0).uniform(0.2, 0.8, (4, 9, 16, 3)).repeat(16, axis=1).repeat(16, axis=2)
    assert metrics.patch_grid_ratio(blocks * 0.3 + boxed * 0.7, object_ids=ids) > 2.0


def test_colour_drift_per_object():
    ids = np.zeros((8, 10, 10), np.int32)
    ids[:, :5] = 1
    ids[:, 5:] = 2
    clip = np.full((8, 10, 10, 3), 0.5)
    clip[:, 5:] *= np.linspace(1.0, 0.2, 8)[:, None, None, None]  # object 2 darkens over the shot
    drift = metrics.colour_drift(clip, ids)
    assert drift[1] == pytest.approx(0.0, abs=1e-9)
    assert drift[2] == pytest.approx(1 - np.mean(np.linspace(1.0, 0.2, 8)[-2:]) / np.mean(np.linspace(1.0, 0.2, 8)[:2]),
                                     rel=1e-6)
