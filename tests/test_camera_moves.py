"""Camera moves keep their defining property at every frame; framing hits its shot sizes; local edits survive.

Projections use an independent pinhole built from each sample's matrix_world: a world point goes to camera space,
then to picture coordinates in units of the frame height (origin at the centre, y up).
"""

import json
import math
import re

import numpy as np
import pytest

from cinepregen_addon.core.camera_moves import EASINGS, MOVE_PARAMS, HandheldShake, MoveSpec, ease, sample_move
from cinepregen_addon.core.camera_pose import (
    CameraPose,
    euler_to_matrix,
    look_at_rotation,
    matrix_to_euler,
    sample_to_matrix_world,
)
from cinepregen_addon.core.framing import CAMERA_ANGLES, SHOT_SIZES, frame_height_mm, frame_subject
from cinepregen_addon.core.local_adjustments import EditedKeyframe, LocalAdjustments, Offset

START = CameraPose((1.0, -8.0, 1.6), (math.radians(85.0), 0.0, math.radians(20.0)), 35.0)
FRAMES = (1, 49)
SUBJECT = np.array([2.0, 1.0, 1.2])  # off the start view axis on purpose
FRAME_H = 36.0 / (16 / 9)  # AUTO fit, 16:9: the 36 mm sensor width spans the picture width


def project(sample, point, frame_h_mm=FRAME_H):
    """Picture coordinates (units of frame height) and planar depth of a world point."""
    matrix = sample_to_matrix_world(sample)
    cam = matrix[:3, :3].T @ (np.asarray(point, float) - matrix[:3, 3])
    depth = -cam[2]
    assert depth > 0, "point behind the camera"
    return sample.lens_mm * cam[:2] / depth / frame_h_mm, depth


def axes(sample):
    rotation = euler_to_matrix(sample.rotation_euler)
    return rotation[:, 0], rotation[:, 1], -rotation[:, 2]  # right, up, view


def sample(kind, easing="ease_in_out", **params):
    return sample_move(MoveSpec(kind, params, easing), START, *FRAMES)


def assert_monotone(values, increasing=True):
    steps = np.diff(np.asarray(values))
    assert np.all(steps >= -1e-12) if increasing else np.all(steps <= 1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Rotations
# ----------------------------------------------------------------------------------------------------------------


def test_euler_round_trip_and_continuity():
    rng = np.random.default_rng(0)
    eulers = [tuple(rng.uniform(-3, 3, 3)) for _ in range(50)] + [(0.3, math.pi / 2, 0.7), (-0.2, -math.pi / 2, 1.0)]
    for euler in eulers:
        back = matrix_to_euler(euler_to_matrix(euler))
        np.testing.assert_allclose(euler_to_matrix(back), euler_to_matrix(euler), atol=1e-9)
        np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(euler), compat=euler), euler, atol=1e-7)
    # the angles nearest to compat, not the principal ones: a camera turned 3 full times stays turned
    wound = (0.4, 0.1, 6 * math.pi + 0.3)
    np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(wound), compat=(0.4, 0.1, 6 * math.pi)), wound)


def test_look_at_centres_the_target_level_and_rolled():
    eye, target = (3.0, -4.0, 2.0), (-1.0, 2.0, 0.5)
    for roll in (0.0, 0.4):
        pose = CameraPose(eye, look_at_rotation(eye, target, roll), 50.0)
        (x, y), _ = project(pose, target)
        assert abs(x) < 1e-9 and abs(y) < 1e-9
        right, up, _ = axes(pose)
        assert math.isclose(math.atan2(right[2], up[2]), roll, abs_tol=1e-9)  # level horizon when roll is 0
    down = CameraPose((0, 0, 5), look_at_rotation((0, 0, 5), (0, 0, 0)), 50.0)
    np.testing.assert_allclose(down.rotation_euler, (0.0, 0.0, 0.0), atol=1e-12)  # overhead: picture top faces +Y


# ----------------------------------------------------------------------------------------------------------------
# Moves
# ----------------------------------------------------------------------------------------------------------------


def test_every_kind_starts_at_the_start_pose_and_has_one_sample_per_frame():
    path = [SUBJECT + [0.1 * i, 0, 0] for i in range(49)]
    for kind in MOVE_PARAMS:
        if kind in ("handheld", "follow"):
            continue
        samples = sample_move(MoveSpec(kind), START, *FRAMES, target_path=path)
        assert [s.frame for s in samples] == list(range(FRAMES[0], FRAMES[1] + 1))
        np.testing.assert_allclose(samples[0].location, START.location, atol=1e-9)
        np.testing.assert_allclose(samples[0].rotation_euler, START.rotation_euler, atol=1e-9)
        assert samples[0].lens_mm == pytest.approx(START.lens_mm)
    assert len(sample_move(MoveSpec("dolly"), START, 5, 5)) == 1


def test_static_holds_everything():
    assert all(s.location == START.location and s.rotation_euler == START.rotation_euler for s in sample("static"))


def test_pan_keeps_position_and_turns_yaw_monotonically():
    samples = sample("pan", angle_deg=40.0)
    for s in samples:
        assert s.location == START.location
        assert s.rotation_euler[:2] == pytest.approx(START.rotation_euler[:2], abs=1e-12)
    yaw = [s.rotation_euler[2] for s in samples]
    assert_monotone(yaw)
    assert yaw[-1] - yaw[0] == pytest.approx(math.radians(40.0), abs=1e-12)
    # a pan past 360 degrees stays one continuous curve (keyframes must not wrap)
    yaw = [s.rotation_euler[2] for s in sample("pan", easing="linear", angle_deg=-400.0)]
    assert_monotone(yaw, increasing=False)
    assert max(abs(np.diff(yaw))) < math.radians(10.0)
    assert yaw[-1] - yaw[0] == pytest.approx(math.radians(-400.0), abs=1e-9)


def test_tilt_keeps_position_and_turns_pitch_monotonically():
    samples = sample("tilt", angle_deg=-30.0)
    for s in samples:
        assert s.location == START.location
        assert (s.rotation_euler[1], s.rotation_euler[2]) == pytest.approx(START.rotation_euler[1:], abs=1e-12)
    pitch = [s.rotation_euler[0] for s in samples]
    assert_monotone(pitch, increasing=False)
    assert pitch[-1] - pitch[0] == pytest.approx(math.radians(-30.0), abs=1e-12)
    assert axes(samples[-1])[2][2] < axes(samples[0])[2][2]  # a negative tilt looks down


def test_roll_keeps_position_and_view_axis():
    samples = sample("roll", angle_deg=25.0)
    right0, up0, view0 = axes(samples[0])
    rolls = []
    for s in samples:
        right, _, view = axes(s)
        assert s.location == START.location
        np.testing.assert_allclose(view, view0, atol=1e-12)
        rolls.append(math.atan2(np.dot(right, up0), np.dot(right, right0)))
    assert_monotone(rolls)
    assert rolls[-1] == pytest.approx(math.radians(25.0), abs=1e-9)


@pytest.mark.parametrize("kind, axis, distance", [("truck", 0, 1.5), ("pedestal", 1, -0.7), ("dolly", 2, 2.0)])
def test_truck_pedestal_dolly_keep_orientation_and_move_along_their_axis(kind, axis, distance):
    samples = sample(kind, distance=distance)
    direction = axes(samples[0])[axis]
    travelled = []
    for s in samples:
        np.testing.assert_allclose(euler_to_matrix(s.rotation_euler), euler_to_matrix(START.rotation_euler), atol=1e-12)
        moved = np.subtract(s.location, START.location)
        along = float(np.dot(moved, direction))
        np.testing.assert_allclose(moved, along * direction, atol=1e-12)  # nothing off the axis
        travelled.append(along)
    assert_monotone(travelled, increasing=distance > 0)
    assert travelled[-1] == pytest.approx(distance, abs=1e-12)


@pytest.mark.parametrize("target", [None, SUBJECT.tolist()])
def test_orbit_keeps_distance_and_target_centred(target):
    samples = sample("orbit", angle_deg=120.0, target=target, target_distance=6.0)
    center = SUBJECT if target is not None else np.array(START.location) + axes(samples[0])[2] * 6.0
    radius = np.linalg.norm(np.subtract(START.location, center))
    headings = []
    for s in samples:
        assert np.linalg.norm(np.subtract(s.location, center)) == pytest.approx(radius, abs=1e-9)
        (x, y), _ = project(s, center)
        assert abs(x) < 1e-6 and abs(y) < 1e-6
        headings.append(math.atan2(s.location[1] - center[1], s.location[0] - center[0]))
    assert np.unwrap(headings)[-1] - headings[0] == pytest.approx(math.radians(120.0), abs=1e-9)
    assert s.location[2] == pytest.approx(START.location[2], abs=1e-12)


def test_crane_rises_and_keeps_target_centred_with_a_level_horizon():
    samples = sample("crane", rise=3.0, reach=1.0, target=SUBJECT.tolist())
    heights = [s.location[2] for s in samples]
    assert_monotone(heights)
    assert heights[-1] - heights[0] == pytest.approx(3.0, abs=1e-12)
    for s in samples:
        (x, y), _ = project(s, SUBJECT)
        assert abs(x) < 1e-6 and abs(y) < 1e-6
        assert abs(axes(s)[0][2]) < 1e-9  # right axis stays horizontal
    pitch = [s.rotation_euler[0] for s in samples]
    assert_monotone(pitch, increasing=False)  # tilts down as it rises


def test_zoom_changes_only_the_lens():
    samples = sample("zoom", lens_end_mm=85.0)
    for s in samples:
        assert s.location == START.location
        np.testing.assert_allclose(s.rotation_euler, START.rotation_euler, atol=1e-12)
    lenses = [s.lens_mm for s in samples]
    assert_monotone(lenses)
    assert lenses[-1] == pytest.approx(85.0)


@pytest.mark.parametrize("distance", [3.0, -4.0])
def test_dolly_zoom_keeps_subject_size_while_the_lens_changes(distance):
    samples = sample("dolly_zoom", distance=distance, target=SUBJECT.tolist())
    _, up, _ = axes(samples[0])
    top, bottom = SUBJECT + up * 0.9, SUBJECT - up * 0.9

    def height(s):
        return project(s, top)[0][1] - project(s, bottom)[0][1]

    for s in samples:
        assert height(s) == pytest.approx(height(samples[0]), rel=0.01)
    assert abs(samples[-1].lens_mm / samples[0].lens_mm - 1.0) > 0.2
    assert_monotone([s.lens_mm for s in samples], increasing=distance < 0)


def test_follow_keeps_a_moving_target_centred():
    def walk(frame):
        t = (frame - FRAMES[0]) / 10.0
        return (2.0 + 1.5 * math.sin(t), 1.0 + 0.3 * t, 1.2 + 0.1 * math.cos(2 * t))

    path = [walk(f) for f in range(FRAMES[0], FRAMES[1] + 1)]
    tracked = sample_move(MoveSpec("follow"), START, *FRAMES, target_path=walk)
    assert tracked == sample_move(MoveSpec("follow", {"target_path": path}), START, *FRAMES)
    offset = np.subtract(START.location, path[0])
    for s, target in zip(tracked, path, strict=True):
        (x, y), _ = project(s, target)
        assert abs(x) < 1e-6 and abs(y) < 1e-6
        np.testing.assert_allclose(np.subtract(s.location, target), offset, atol=1e-12)
        assert abs(axes(s)[0][2]) < 1e-9
    panning = sample_move(MoveSpec("follow", {"translate": False}), START, *FRAMES, target_path=walk)
    for s, target in zip(panning, path, strict=True):
        assert s.location == START.location
        (x, y), _ = project(s, target)
        assert abs(x) < 1e-6 and abs(y) < 1e-6


# ----------------------------------------------------------------------------------------------------------------
# Handheld shake
# ----------------------------------------------------------------------------------------------------------------


def test_handheld_shake_is_seeded_small_smooth_and_zero_mean():
    def shaken(seed):
        return sample_move(MoveSpec("handheld", shake=HandheldShake(0.02, 0.5, 1.5, seed)), START, 1, 240)

    first, again, other = shaken(3), shaken(3), shaken(4)
    assert first == again
    assert first != other
    rotation0 = euler_to_matrix(START.rotation_euler)
    offsets = np.array([rotation0.T @ np.subtract(s.location, START.location) for s in first])  # camera space
    turns = np.array([np.subtract(s.rotation_euler, START.rotation_euler) for s in first])
    assert 0.01 < np.sqrt((offsets**2).mean()) < 0.03
    assert np.abs(offsets).max() < 4 * 0.02 and np.abs(turns).max() < 4 * math.radians(0.5)
    assert np.all(np.abs(offsets.mean(0)) < 0.25 * 0.02)
    assert np.all(np.abs(turns.mean(0)) < 0.25 * math.radians(0.5))
    for channel in np.concatenate([offsets, turns], axis=1).T:  # smooth: white noise would be near 0
        assert np.corrcoef(channel[:-1], channel[1:])[0, 1] > 0.8


def test_shake_layered_on_a_pan_keeps_the_pan():
    clean = sample("pan", easing="linear", angle_deg=60.0)
    spec = MoveSpec("pan", {"angle_deg": 60.0}, "linear", shake=HandheldShake(0.01, 0.4, 2.0, 7))
    shaken = sample_move(spec, START, *FRAMES)
    yaw_clean = np.array([s.rotation_euler[2] for s in clean])
    yaw_shaken = np.array([s.rotation_euler[2] for s in shaken])
    assert np.abs(yaw_shaken - yaw_clean).max() < 4 * math.radians(0.4)
    assert np.abs(yaw_shaken - yaw_clean).max() > 0
    slope = np.polyfit(np.arange(len(yaw_shaken)), yaw_shaken, 1)[0]
    assert slope == pytest.approx(math.radians(60.0) / (len(yaw_shaken) - 1), rel=0.05)


# ----------------------------------------------------------------------------------------------------------------
# Easing
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EASINGS))
def test_easing_hits_the_ends_and_is_monotone(name):
    assert ease(name, 0.0) == 0.0 and ease(name, 1.0) == 1.0
    values = [ease(name, t) for t in np.linspace(0, 1, 1001)]
    assert_monotone(values)
    if name in ("ease_in_out", "smooth"):
        assert ease(name, 0.5) == pytest.approx(0.5)
        assert ease(name, 0.01) < 0.01 and ease(name, 0.99) > 0.99  # starts and stops gently


# ----------------------------------------------------------------------------------------------------------------
# Framing
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("angle", sorted(CAMERA_ANGLES))
@pytest.mark.parametrize("size", sorted(SHOT_SIZES))
def test_frame_subject_hits_the_shot_size_centred(size, angle):
    center, height = (0.5, 2.0, 0.9), 1.8
    pose = frame_subject(center, height, size, angle, 35.0, heading_deg=30.0)
    _, up, view = axes(pose)
    (x, y), _ = project(pose, center)
    assert abs(x) < 1e-9 and abs(y) < 1e-9
    top, bottom = (
        project(pose, np.add(center, up * height / 2))[0],
        project(pose, np.subtract(center, up * height / 2))[0],
    )
    assert (top[1] - bottom[1]) == pytest.approx(SHOT_SIZES[size], rel=0.01)
    down, roll = CAMERA_ANGLES[angle]
    assert math.degrees(math.asin(-view[2])) == pytest.approx(down, abs=1e-9)
    if angle in ("EYE_LEVEL", "DUTCH"):
        assert pose.location[2] == pytest.approx(center[2])
        assert math.degrees(math.atan2(view[1], view[0])) == pytest.approx(90.0 + 30.0)  # heading 30 from +Y
    if angle == "EYE_LEVEL":  # a standing figure's true vertical extent, no convention needed
        top, bottom = project(pose, np.add(center, (0, 0, 0.9)))[0], project(pose, np.subtract(center, (0, 0, 0.9)))[0]
        assert top[1] - bottom[1] == pytest.approx(SHOT_SIZES[size], rel=1e-9)
    right, _, _ = axes(pose)
    if angle != "OVERHEAD":
        assert math.degrees(math.asin(right[2])) == pytest.approx(roll, abs=1e-9)


@pytest.mark.parametrize("fit, aspect", [("VERTICAL", 16 / 9), ("AUTO", 9 / 16), ("HORIZONTAL", 2.39)])
def test_frame_subject_follows_sensor_fit(fit, aspect):
    frame_h = frame_height_mm(36.0, 24.0, fit, aspect)
    assert frame_h == {"VERTICAL": 24.0, "AUTO": 36.0, "HORIZONTAL": 36.0 / 2.39}[fit]
    pose = frame_subject((0, 0, 1), 1.8, "FS", "HIGH", 50.0, sensor_fit=fit, aspect=aspect)
    _, up, _ = axes(pose)
    top = project(pose, np.add((0, 0, 1), up * 0.9), frame_h)[0][1]
    bottom = project(pose, np.subtract((0, 0, 1), up * 0.9), frame_h)[0][1]
    assert top - bottom == pytest.approx(0.9, rel=0.01)


# ----------------------------------------------------------------------------------------------------------------
# Local adjustments
# ----------------------------------------------------------------------------------------------------------------

ORBIT = MoveSpec("orbit", {"angle_deg": 90.0, "target": SUBJECT.tolist()})
DOLLY = MoveSpec("dolly", {"distance": 3.0})
ADJUSTMENTS = LocalAdjustments(
    offsets=[Offset(10, location=(0.0, 0.0, 0.5)), Offset(20, rotation_euler=(0.0, 0.0, 0.1), lens_mm=5.0)],
    keyframes=[EditedKeyframe(35, location=(4.0, -3.0, 2.5), lens_mm=24.0)],
)


@pytest.mark.parametrize("spec", [DOLLY, ORBIT], ids=["dolly", "orbit"])
def test_offsets_and_edited_keyframes_survive_any_global_move(spec):
    base = sample_move(spec, START, *FRAMES)
    adjusted = ADJUSTMENTS.apply(base)
    at = {s.frame: s for s in adjusted}
    global_at = {s.frame: s for s in base}
    np.testing.assert_allclose(np.subtract(at[10].location, global_at[10].location), (0, 0, 0.5), atol=1e-12)
    np.testing.assert_allclose(
        np.subtract(at[20].rotation_euler, global_at[20].rotation_euler), (0, 0, 0.1), atol=1e-12
    )
    assert at[20].lens_mm - global_at[20].lens_mm == pytest.approx(5.0)
    np.testing.assert_allclose(at[35].location, (4.0, -3.0, 2.5), atol=1e-12)
    assert at[35].lens_mm == pytest.approx(24.0)
    # rotation is not edited at 35: the offset of frame 20, the last rotation key, holds
    np.testing.assert_allclose(
        np.subtract(at[35].rotation_euler, global_at[35].rotation_euler), (0, 0, 0.1), atol=1e-12
    )
    # between keys the nudge is smooth and never overshoots; before the first key it holds
    lift = [at[f].location[2] - global_at[f].location[2] for f in range(1, 21)]
    assert lift[:10] == pytest.approx([0.5] * 10, abs=1e-12)
    assert_monotone(lift[9:], increasing=False) and min(lift) >= -1e-12
    assert base == sample_move(spec, START, *FRAMES)  # the global samples are untouched


def test_reapplying_the_same_move_gives_the_same_shot():
    first = ADJUSTMENTS.apply(sample_move(ORBIT, START, *FRAMES))
    spec = MoveSpec.from_dict(json.loads(json.dumps(ORBIT.to_dict())))
    adjustments = LocalAdjustments.from_dict(json.loads(json.dumps(ADJUSTMENTS.to_dict())))
    assert adjustments.apply(sample_move(spec, START, *FRAMES)) == first


@pytest.mark.parametrize("spec", [DOLLY, ORBIT], ids=["dolly", "orbit"])
def test_time_remap_retimes_any_global_move(spec):
    base = sample_move(spec, START, *FRAMES)  # 49 frames: shot time 0.5 is index 24, move time 0.25 index 12
    retimed = LocalAdjustments(time_remap=[(0.5, 0.25)]).apply(base)
    assert retimed[24].location == pytest.approx(base[12].location, abs=1e-12)
    assert retimed[0] == base[0] and retimed[-1] == base[-1]
    np.testing.assert_allclose(retimed[24].rotation_euler, base[12].rotation_euler, atol=1e-12)
    progress = [np.linalg.norm(np.subtract(s.location, START.location)) for s in retimed]
    assert_monotone(progress)  # a retiming never runs the move backwards
    identity = LocalAdjustments().remap(np.linspace(0, 1, 11))
    np.testing.assert_allclose(identity, np.linspace(0, 1, 11), atol=1e-15)
    combined = LocalAdjustments(offsets=[Offset(10, location=(0, 0, 0.5))], time_remap=[(0.5, 0.25)]).apply(base)
    assert combined[9].location[2] - retimed[9].location[2] == pytest.approx(0.5)  # offsets live in shot frames


def test_json_round_trip_is_exact():
    spec = MoveSpec(
        "follow",
        {"translate": False, "offset": (0.1, -2.0, 0.3), "target_path": [(1.0 / 3.0, 2.0, 0.1)] * 3},
        "smooth",
        shake=HandheldShake(0.013, 0.27, 1.7, 42),
    )
    assert MoveSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    for kind in MOVE_PARAMS:
        plain = MoveSpec(kind)
        assert MoveSpec.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain
    adjustments = LocalAdjustments(
        offsets=[Offset(3, (0.1, 1.0 / 7.0, 0.0), (0.01, 0.0, -0.02), 1.5)],
        keyframes=[EditedKeyframe(12, rotation_euler=(1.2, 0.0, math.pi / 3))],
        time_remap=[(0.3, 0.1), (0.8, 0.9)],
    )
    assert LocalAdjustments.from_dict(json.loads(json.dumps(adjustments.to_dict()))) == adjustments


# ----------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: MoveSpec("whip_pan"), "kind"),
        (lambda: MoveSpec("dolly", easing="bouncy"), "easing"),
        (lambda: MoveSpec("dolly", {"speed": 2.0}), "params.speed"),
        (lambda: MoveSpec("dolly", {"distance": float("nan")}), "params.distance"),
        (lambda: MoveSpec("zoom", {"lens_end_mm": 0.0}), "params.lens_end_mm"),
        (lambda: MoveSpec("orbit", {"target": (1.0, 2.0)}), "params.target"),
        (lambda: MoveSpec("follow", {"translate": "yes"}), "params.translate"),
        (lambda: MoveSpec.from_dict({"kind": "pan", "shake": {"seed": 1, "wobble": 2}}), "shake.wobble"),
        (lambda: HandheldShake(amplitude_m=-0.1), "shake.amplitude_m"),
        (lambda: CameraPose((0, 0, 0), (0, 0, 0), 0.0), "lens_mm"),
        (lambda: CameraPose((0, 0, 0), (0, 0, 0), -35.0), "lens_mm"),
        (lambda: sample_move(MoveSpec("pan"), START, 10, 9), "frame_end"),
        (lambda: sample_move(MoveSpec("follow"), START, 1, 10), "target_path"),
        (lambda: sample_move(MoveSpec("follow"), START, 1, 10, target_path=[(0, 0, 0)] * 5), "target_path"),
        (lambda: sample_move(MoveSpec("dolly_zoom", {"distance": 9.0}), START, 1, 10), "params.distance"),
        (lambda: frame_subject((0, 0, 0), 1.8, "FS", "HIGH", lens_mm=0.0), "lens_mm"),
        (lambda: frame_subject((0, 0, 0), 1.8, "XXL"), "shot_size"),
        (lambda: frame_subject((0, 0, 0), 1.8, "FS", "WORMS_EYE"), "camera_angle"),
        (lambda: frame_subject((0, 0, 0), -1.0, "FS"), "subject_height"),
        (lambda: frame_subject((0, 0, 0), 1.8, "FS", sensor_fit="FILL"), "sensor_fit"),
        (lambda: LocalAdjustments(time_remap=[(0.5, 0.6), (0.6, 0.4)]), "time_remap"),
        (lambda: LocalAdjustments.from_dict({"offsets": [{"frame": 3, "lens": 2.0}]}), "offsets.lens"),
        (lambda: MoveSpec.from_dict({"kind": "pan", "speed": 2}), "move.speed"),
        (lambda: LocalAdjustments(offsets=[Offset(3), Offset(3)]), "offsets"),
        (lambda: Offset(2.5), "offsets.frame"),
        (lambda: EditedKeyframe(4, lens_mm=0.0), "keyframes[4].lens_mm"),
        (lambda: ease("snap", 0.5), "easing"),
    ],
)
def test_bad_input_names_the_field(make, field):
    with pytest.raises(ValueError, match="^" + re.escape(field)):
        make()


# ----------------------------------------------------------------------------------------------------------------
# Against Blender itself
# ----------------------------------------------------------------------------------------------------------------


def test_conventions_match_blender():
    """Euler order and compat, the -Z view axis and the framing all agree with real Blender cameras."""
    import bpy
    import mathutils
    from bpy_extras.object_utils import world_to_camera_view

    rng = np.random.default_rng(1)
    for _ in range(50):
        euler, compat = rng.uniform(-4, 4, 3), rng.uniform(-8, 8, 3)
        matrix = euler_to_matrix(euler)
        np.testing.assert_allclose(np.array(mathutils.Euler(euler, "XYZ").to_matrix()), matrix, atol=1e-6)
        blender = mathutils.Matrix(matrix.tolist()).to_euler("XYZ", mathutils.Euler(compat))
        np.testing.assert_allclose(matrix_to_euler(matrix, compat=compat), tuple(blender), atol=1e-5)

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(camera)
    camera.data.sensor_width, camera.data.sensor_fit = 36.0, "AUTO"

    def place(pose):
        camera.location, camera.rotation_euler, camera.data.lens = pose.location, pose.rotation_euler, pose.lens_mm
        bpy.context.view_layer.update()
        np.testing.assert_allclose(np.array(camera.matrix_world), sample_to_matrix_world(pose), atol=1e-5)

    def view(point):
        return np.array(world_to_camera_view(scene, camera, mathutils.Vector(point)))

    for s in sample("orbit", angle_deg=120.0, target=SUBJECT.tolist())[::12]:
        place(s)
        np.testing.assert_allclose(view(SUBJECT)[:2], (0.5, 0.5), atol=1e-5)
    for angle in ("EYE_LEVEL", "HIGH", "OVERHEAD", "DUTCH"):
        pose = frame_subject((0.5, 2.0, 0.9), 1.8, "MS", angle, 35.0, heading_deg=30.0)
        place(pose)
        up = euler_to_matrix(pose.rotation_euler)[:, 1]
        top, bottom = view(np.add((0.5, 2.0, 0.9), up * 0.9)), view(np.subtract((0.5, 2.0, 0.9), up * 0.9))
        assert top[1] - bottom[1] == pytest.approx(SHOT_SIZES["MS"], rel=1e-4)


@pytest.mark.parametrize("kind", ["orbit", "dolly_zoom", "crane"])
def test_moves_around_a_walking_subject_keep_it_centred(kind):
    """With the subject's path, an orbit, crane or dolly zoom is made around where the subject is at each frame: a
    subject walking 3 m sideways stays at the picture's centre (and, in a dolly zoom, at its size)."""
    from cinepregen_addon.core.camera_geometry import (
        intrinsics_from_blender,
        project_points,
        world_to_camera_from_matrix_world,
    )

    subject = np.array([0.0, 0.0, 1.0])
    pose = frame_subject(subject, 1.8, "MS", "EYE_LEVEL", 35.0, heading_deg=10.0)
    path = [subject + [3.0 * i / 48, 0.0, 0.0] for i in range(49)]
    params = {"angle_deg": 60.0} if kind == "orbit" else {"distance": 1.0} if kind == "dolly_zoom" else {"rise": 1.0}
    spec = MoveSpec(kind, {**params, "target": list(subject)})
    K = intrinsics_from_blender(35.0, 36.0, 24.0, "AUTO", 256, 144)
    for samples, walking in ((sample_move(spec, pose, *FRAMES, target_path=path), True),
                             (sample_move(spec, pose, *FRAMES), False)):
        centre = []
        for sample, point in zip(samples, path, strict=True):
            lens_K = intrinsics_from_blender(sample.lens_mm, 36.0, 24.0, "AUTO", 256, 144)
            w2c = world_to_camera_from_matrix_world(sample_to_matrix_world(sample))
            uv, _ = project_points(lens_K, w2c, np.array([point]))
            centre.append(uv[0])
        drift = np.abs(np.array(centre) - K[:2, 2]).max()
        if walking:
            assert drift < 1.0, (kind, drift)  # within a pixel of the centre at every frame
        else:
            assert drift > 20.0  # without the path the subject walks out of the centre


def test_a_move_reads_as_words_for_shot_lists():

    assert MoveSpec().summary() == "Static"
    orbit = MoveSpec(kind="orbit", params={"angle_deg": -90.0, "target": [1.0, 2.5, 0.0]}, easing="linear",
                     shake=HandheldShake())
    assert orbit.summary() == "Orbit: angle -90°, target (1.00, 2.50, 0.00), target distance 5 m, linear, handheld"
    assert MoveSpec(kind="zoom", params={"lens_end_mm": 24.0}).summary() == "Zoom: end lens 24 mm, ease in out"
