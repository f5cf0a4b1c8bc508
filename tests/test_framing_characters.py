"""Framing real rigged characters: a glTF walker from the shared asset pack (skinned, animated, its origin at its
feet) framed by the add-on's own code and rendered to real ID passes; a LOW angle over a floor."""

from __future__ import annotations

import json

import bpy
import numpy as np
import pytest

from backend.blender.addon import enable_addon_in_process
from backend.training.assets import HELDOUT_ASSETS, default_asset_dir, import_asset

FRAMES = 24


@pytest.fixture(scope="module")
def walker_scene():
    enable_addon_in_process()
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 64, 36
    floor = bpy.data.meshes.new("Floor")
    floor.from_pydata([(-30, -30, 0), (30, -30, 0), (30, 30, 0), (-30, 30, 0)], [], [(0, 1, 2, 3)])
    scene.collection.objects.link(bpy.data.objects.new("Floor", floor))
    walker = next(a for a in HELDOUT_ASSETS if a.file == "cesium_man.glb")
    fast = type(walker)(walker.file, walker.kind, walker.height_m, walker.clip, 0.08)  # 1.8 m across the shot
    meshes, _root = import_asset(bpy, scene, default_asset_dir(), fast, "Walker", (0.0, 0.0), np.pi / 2, 1.7, 1,
                                 FRAMES)
    armature = next(o for o in scene.objects if o.type == "ARMATURE")
    return scene, armature, meshes


def _mask_centres(scene, shot, meshes, tmp_path) -> list[tuple[float, float] | None]:
    from cinepregen_addon.core import shot_bundle
    from cinepregen_addon.render_passes import ShotRenderSpec, ensure_object_ids, render_shot_bundle

    ids = ensure_object_ids(scene)
    walker_ids = [ids[m.name] for m in meshes]
    spec = ShotRenderSpec(shot.name.replace(" ", "_"), shot.camera.name, shot.frame_start, shot.frame_end,
                          resolution=(64, 36))
    bundle = shot_bundle.read_bundle(render_shot_bundle(scene, spec, tmp_path / spec.name, overwrite=True))
    centres = []
    for passes in bundle.passes:
        ys, xs = np.nonzero(np.isin(passes.object_id, walker_ids))
        centres.append((xs.mean() / 64, ys.mean() / 36) if len(xs) else None)
    return centres


@pytest.mark.parametrize("move", [
    {"kind": "follow"},
    {"kind": "orbit", "params": {"angle_deg": 90.0}},
    {"kind": "dolly_zoom", "params": {"distance": 1.5}},
])
def test_a_walking_rigged_character_stays_in_the_middle_of_the_frame(walker_scene, move, tmp_path):
    """The subject is the armature (its origin at the feet, no geometry of its own); in at least 90% of the frames
    the character's mask centre lies in the middle half of the picture."""
    from cinepregen_addon import moves, shots

    scene, armature, meshes = walker_scene
    shot = shots.add_shot(scene, f"Walk {move['kind']}", length=FRAMES)
    shot.frame_start, shot.frame_end = 1, FRAMES
    shot.subject, shot.shot_size, shot.camera_angle, shot.lens_mm = armature, "FS", "EYE_LEVEL", 35.0
    shot.start_rotation = (0.0, 0.0, 0.0)
    shot.move_json = json.dumps(move)
    moves.frame_shot_subject(scene, shot)
    centres = _mask_centres(scene, shot, meshes, tmp_path)
    inside = [c is not None and 0.25 <= c[0] <= 0.75 and 0.25 <= c[1] <= 0.75 for c in centres]
    assert sum(inside) >= 0.9 * len(inside), centres


def test_framing_sizes_a_long_subject_by_its_width(walker_scene):
    """A 4 m long, 1 m tall box seen from the side: framed FS by height alone it would overflow sideways."""
    from cinepregen_addon import moves, shots

    scene, _, _ = walker_scene
    mesh = bpy.data.meshes.new("Long")
    mesh.from_pydata([(x, y, z) for x in (-2, 2) for y in (-0.3, 0.3) for z in (0, 1)], [],
                     [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
    long = bpy.data.objects.new("Long", mesh)
    long.location = (0, 20, 0)
    scene.collection.objects.link(long)
    shot = shots.add_shot(scene, "Long side", length=2)
    shot.subject, shot.shot_size, shot.lens_mm, shot.start_rotation = long, "FS", 35.0, (0.0, 0.0, 0.0)
    pose = moves.frame_shot_subject(scene, shot)
    from cinepregen_addon.core.camera_geometry import (
        intrinsics_from_blender,
        project_points,
        world_to_camera_from_matrix_world,
    )
    from cinepregen_addon.core.camera_pose import sample_to_matrix_world

    w2c = world_to_camera_from_matrix_world(sample_to_matrix_world(pose))
    K = intrinsics_from_blender(35.0, 36.0, 24.0, "AUTO", 64, 36)
    uv, _ = project_points(K, w2c, np.array([(-2.0, 20.0, 0.5), (2.0, 20.0, 0.5)]))
    assert uv[:, 0].min() >= 0 and uv[:, 0].max() <= 64  # both ends inside the picture


def test_low_angle_on_a_small_subject_stays_above_the_floor(walker_scene):
    from cinepregen_addon import moves, shots

    scene, _, _ = walker_scene
    mesh = bpy.data.meshes.new("Toy")
    mesh.from_pydata([(x, y, z) for x in (-0.15, 0.15) for y in (-0.15, 0.15) for z in (0, 0.3)], [],
                     [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
    toy = bpy.data.objects.new("Toy", mesh)
    toy.location = (5, 5, 0)
    scene.collection.objects.link(toy)
    shot = shots.add_shot(scene, "Low toy", length=2)
    shot.subject, shot.shot_size, shot.camera_angle, shot.lens_mm = toy, "LS", "LOW", 24.0
    pose = moves.frame_shot_subject(scene, shot)
    assert pose.location[2] >= moves.MIN_CAMERA_CLEARANCE_M - 1e-6
    assert "under the ground" in shot.framing_note
    shot.camera_angle = "EYE_LEVEL"
    moves.frame_shot_subject(scene, shot)
    assert shot.framing_note == ""


def test_a_linked_character_arriving_as_a_collection_instance_is_framed_head_to_toe(walker_scene):
    """File > Link brings a character as an empty that instances its collection: Frame Subject frames what the empty
    shows (here a 1.8 m figure, placed, scaled and nested one level), and a plain empty (an aim null) frames too."""
    from cinepregen_addon import moves, shots
    from cinepregen_addon.core.camera_geometry import intrinsics_from_blender, project_points
    from cinepregen_addon.core.camera_geometry import world_to_camera_from_matrix_world as w2c_of
    from cinepregen_addon.core.camera_pose import sample_to_matrix_world

    scene, _, _ = walker_scene
    figure = bpy.data.collections.new("Figure")
    mesh = bpy.data.meshes.new("Body")
    mesh.from_pydata([(x, y, z) for x in (-0.25, 0.25) for y in (-0.15, 0.15) for z in (0, 1.8)], [],
                     [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
    figure.objects.link(bpy.data.objects.new("Body", mesh))
    hero = bpy.data.collections.new("Hero")  # the linked collection holds an instance of the figure
    inner = bpy.data.objects.new("Figure instance", None)
    inner.instance_type, inner.instance_collection = "COLLECTION", figure
    hero.objects.link(inner)
    linked = bpy.data.objects.new("Hero", None)
    linked.instance_type, linked.instance_collection, linked.location = "COLLECTION", hero, (-6.0, 15.0, 0.0)
    scene.collection.objects.link(linked)
    shot = shots.add_shot(scene, "Linked hero", length=2)
    shot.subject, shot.shot_size, shot.lens_mm, shot.start_rotation = linked, "FS", 35.0, (0.0, 0.0, 0.0)
    pose = moves.frame_shot_subject(scene, shot)
    K = intrinsics_from_blender(35.0, 36.0, 24.0, "AUTO", 64, 36)
    uv, depth = project_points(K, w2c_of(sample_to_matrix_world(pose)), np.array([(-6.0, 15.0, 0.0),
                                                                                 (-6.0, 15.0, 1.8)]))
    assert np.all(depth > 0) and uv[:, 1].min() >= 0 and uv[:, 1].max() <= 36  # head and feet inside
    assert uv[:, 1].max() - uv[:, 1].min() > 0.6 * 36  # and it fills the height, as a full shot does

    null = bpy.data.objects.new("Aim", None)
    null.location = (4.0, 12.0, 1.0)
    scene.collection.objects.link(null)
    for size in ("MS", "CU"):  # a read-only centre made these fail
        shot.subject, shot.shot_size = null, size
        moves.frame_shot_subject(scene, shot)
