"""Camera moves on cameras in rigs: a camera parented to a layout empty (rotated, scaled, parented with or without
Blender's keep-transform inverse) plays the same move in the set as a free camera, a rig that travels carries the
move along, and hand-made offsets and the camera-path overlay work in the set's space too (Frame Subject:
``test_addon``)."""

from __future__ import annotations

import json

import bpy
import numpy as np
import pytest
from mathutils import Euler, Matrix

from cinepregen_addon import keyframes
from cinepregen_addon.overlay import camera_path_points

ORBIT = {"kind": "orbit", "params": {"angle_deg": 120.0, "target": [0.5, 1.0, 1.0]}, "easing": "smooth"}


def world_poses(scene, camera, frames) -> list[tuple[np.ndarray, np.ndarray]]:
    """(location, 3x3 rotation without scale) of the camera in the set at each frame."""
    poses = []
    for frame in frames:
        scene.frame_set(frame)
        location, rotation, _scale = camera.matrix_world.decompose()
        poses.append((np.array(location), np.array(rotation.to_matrix())))
    return poses


def assert_same_poses(got, expected, atol=1e-4):
    for i, ((loc, rot), (loc_e, rot_e)) in enumerate(zip(got, expected, strict=True)):
        np.testing.assert_allclose(loc, loc_e, atol=atol, err_msg=f"location, frame {i}")
        np.testing.assert_allclose(rot, rot_e, atol=atol, err_msg=f"rotation, frame {i}")


def orbit_on_a_free_camera(scene):
    """A 24-frame shot whose camera, parented to nothing, orbits: the shot, its camera, frames and poses in the set."""
    bpy.ops.cinepregen.shot_add(name="A", length=24)
    shot = scene.cinepregen.shots[0]
    shot.move_json = json.dumps(ORBIT)
    assert bpy.ops.cinepregen.apply_move() == {"FINISHED"}
    frames = range(shot.frame_start, shot.frame_end + 1)
    return shot, shot.camera, frames, world_poses(scene, shot.camera, frames)


def layout_rig(scene, keep_transform: bool, camera, bone: bool = False):
    """Parent ``camera`` to a rotated, scaled empty where it stands, as Ctrl+P does with or without its inverse; or,
    with ``bone``, to a tilted bone of an armature standing there (as camera-rig add-ons do)."""
    rig = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig") if bone else None)
    scene.collection.objects.link(rig)
    rig.location, rig.rotation_euler, rig.scale = (3.0, -2.0, 0.5), (0.2, -0.1, 0.9), (2.0, 2.0, 2.0)
    if bone:
        bpy.context.view_layer.objects.active = rig
        bpy.ops.object.mode_set(mode="EDIT")
        arm = rig.data.edit_bones.new("Boom")
        arm.head, arm.tail, arm.roll = (0.0, 0.0, 0.0), (0.3, 0.4, 1.0), 0.5
        bpy.ops.object.mode_set(mode="OBJECT")
    bpy.context.view_layer.update()
    world = camera.matrix_world.copy()
    camera.parent = rig
    if bone:
        camera.parent_type, camera.parent_bone = "BONE", "Boom"
    camera.matrix_parent_inverse = rig.matrix_world.inverted() if keep_transform else Matrix.Identity(4)
    bpy.context.view_layer.update()
    camera.matrix_world = world
    return rig


def keyed_in_a_rig(scene, length: int, move: dict):
    """A shot whose camera, parented to a layout rig (keep-transform), is keyed with ``move``: the shot, its camera."""
    bpy.ops.cinepregen.shot_add(name="A", length=length)
    shot = scene.cinepregen.shots[0]
    layout_rig(scene, True, shot.camera)
    shot.move_json = json.dumps(move)
    assert bpy.ops.cinepregen.apply_move(capture_start=True) == {"FINISHED"}
    return shot, shot.camera


@pytest.mark.parametrize(("keep_transform", "bone"), [(True, False), (False, False), (False, True)])
def test_a_move_on_a_camera_in_a_rig_plays_in_the_set_as_on_a_free_camera(scene, keep_transform, bone):
    shot, camera, frames, free = orbit_on_a_free_camera(scene)

    scene.frame_set(shot.frame_start)
    layout_rig(scene, keep_transform, camera, bone)
    assert bpy.ops.cinepregen.apply_move(capture_start=True) == {"FINISHED"}
    assert_same_poses(world_poses(scene, camera, frames), free)
    assert keyframes.move_warnings(scene, shot) == []  # a rig that stands still needs no warning
    # the start pose is the camera's place in the set, which the move's maths and the panel read
    np.testing.assert_allclose(shot.start_location, free[0][0], atol=1e-4)


def test_a_rig_that_travels_carries_the_move_along_and_says_so(scene):
    shot, camera, frames, free = orbit_on_a_free_camera(scene)

    scene.frame_set(shot.frame_start)
    rig = layout_rig(scene, True, camera)
    start = rig.location.copy()
    rig.keyframe_insert("location", frame=shot.frame_start)
    rig.location = start + type(start)((4.0, 0.0, 0.0))
    rig.keyframe_insert("location", frame=shot.frame_end)
    for fcurve in keyframes.fcurves_of(rig):
        for point in fcurve.keyframe_points:
            point.interpolation = "LINEAR"
    scene.frame_set(shot.frame_start)
    assert bpy.ops.cinepregen.apply_move(capture_start=True) == {"FINISHED"}
    carried = [(loc + np.array([4.0 * i / (len(frames) - 1), 0.0, 0.0]), rot) for i, (loc, rot) in enumerate(free)]
    assert_same_poses(world_poses(scene, camera, frames), carried)
    warnings = keyframes.move_warnings(scene, shot)
    assert len(warnings) == 1 and "'Rig', which moves during the shot" in warnings[0]


def test_hand_made_offsets_and_pins_on_a_camera_in_a_rig_stay_where_they_were_made(scene):
    shot, camera = keyed_in_a_rig(scene, 20, {"kind": "dolly", "params": {"distance": 3.0}})

    for frame, pin in ((8, False), (14, True)):
        scene.frame_set(frame)
        hand_made = Matrix.LocRotScale((1.0, -6.0, 2.0 + frame / 10), Euler((1.3, 0.05, 0.4 + frame / 50)), None)
        camera.matrix_world = hand_made
        assert bpy.ops.cinepregen.add_local_offset(pin=pin) == {"FINISHED"}
        assert bpy.ops.cinepregen.apply_move() == {"FINISHED"}  # re-applied: still there
        expected = (np.array(hand_made.translation), np.array(hand_made.to_3x3()))
        assert_same_poses(world_poses(scene, camera, [frame]), [expected])
    assert not np.allclose(world_poses(scene, camera, [1])[0][0], world_poses(scene, camera, [20])[0][0])


def test_the_camera_path_overlay_is_drawn_where_a_camera_in_a_rig_goes(scene):
    shot, camera = keyed_in_a_rig(scene, 12, {"kind": "truck", "params": {"distance": 2.0}})
    frames = range(shot.frame_start, shot.frame_end + 1)
    drawn = camera_path_points(camera, shot.frame_start, shot.frame_end)
    np.testing.assert_allclose(drawn, [loc for loc, _rot in world_poses(scene, camera, frames)], atol=1e-4)
