"""Sets built in other units: a file from a centimetre pipeline (unit scale 0.01, one Blender unit a centimetre) is
the same set as one built in metres, so every move of the library must key the same camera path there, a hundred
times larger in scene units, and the panel must show and take lengths in the scene's units."""

from __future__ import annotations

import json

import bpy
import numpy as np
import pytest

from backend.blender.scenes import shape_mesh
from cinepregen_addon import moves
from cinepregen_addon.core.camera_moves import MOVE_PARAMS, MoveSpec

START = ((0.5, -8.0, 1.6), (1.4, 0.0, 0.3))
SHAKE = {"amplitude_m": 0.05, "rotation_deg": 0.5, "frequency_hz": 1.5, "seed": 4}


def board_in_units(scene, units_per_metre: float):
    """One shot of 24 frames on a walking-pace subject, the whole set scaled to ``units_per_metre``."""
    scene.unit_settings.system = "METRIC"
    scene.unit_settings.scale_length = 1.0 / units_per_metre
    hero = bpy.data.objects.new("Hero", shape_mesh("Hero", "Cube", 1.0))
    scene.collection.objects.link(hero)
    hero.scale = tuple(v * units_per_metre for v in (0.5, 0.3, 1.75))
    for frame, x in ((1, 2.0), (24, 3.5)):
        hero.location = tuple(v * units_per_metre for v in (x, 3.0, 0.875))
        hero.keyframe_insert("location", frame=frame)
    bpy.ops.cinepregen.shot_add(name="A", length=24)
    shot = scene.cinepregen.shots[0]
    shot.subject = hero
    shot.start_location = tuple(v * units_per_metre for v in START[0])
    shot.start_rotation = START[1]
    return shot


def paths_of_every_move(scene, shot) -> dict[str, np.ndarray]:
    paths = {}
    for kind in MOVE_PARAMS:
        shot.move_json = json.dumps(MoveSpec.from_dict({"kind": kind, "easing": "smooth", "shake": SHAKE}).to_dict())
        samples = moves.shot_samples(scene, shot)
        paths[kind] = np.array([[*s.location, *s.rotation_euler, s.lens_mm] for s in samples])
    return paths


def test_every_library_move_keys_the_same_path_in_a_set_built_in_centimetres(scene):
    in_metres = paths_of_every_move(scene, board_in_units(scene, 1.0))
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = 24
    in_centimetres = paths_of_every_move(scene, board_in_units(scene, 100.0))
    for kind, path in in_metres.items():
        got = in_centimetres[kind]
        np.testing.assert_allclose(got[:, :3] / 100.0, path[:, :3], atol=1e-5, err_msg=kind)
        np.testing.assert_allclose(got[:, 3:], path[:, 3:], atol=1e-5, err_msg=kind)
    # and the moves do move: a dolly's default metre is a metre of the set, 100 units here
    travel = np.linalg.norm(in_centimetres["dolly"][-1, :3] - in_centimetres["dolly"][0, :3])
    assert travel == pytest.approx(100.0 * MOVE_PARAMS["dolly"]["distance"], rel=0.05)


def test_the_panel_shows_and_takes_lengths_in_the_scenes_units(scene):
    shot = board_in_units(scene, 100.0)
    shot.move_json = json.dumps(MoveSpec("crane", {"rise": 2.0}).to_dict())
    assert shot.move.rise == pytest.approx(200.0)  # 200 units of 1 cm: Blender shows "2 m"
    shot.move.rise = 350.0  # the artist types 3.5 m
    assert json.loads(shot.move_json)["params"]["rise"] == pytest.approx(3.5)
    assert "rise 3.5 m" in moves.shot_move_spec(shot).summary()
    shot.move.use_shake = True
    shot.move.shake_amplitude_m = 2.0  # 2 cm of wobble
    assert json.loads(shot.move_json)["shake"]["amplitude_m"] == pytest.approx(0.02)


def test_cameras_exported_from_a_set_built_in_centimetres_arrive_in_metres(scene, tmp_path):
    from backend.exports.cameras import ShotCamera, export_board_usd, export_shot_fbx

    shot = board_in_units(scene, 100.0)
    shot.move_json = json.dumps(MoveSpec("truck", {"distance": 2.0}).to_dict())
    moves.apply_shot_move(scene, shot)
    frames = range(shot.frame_start, shot.frame_end + 1)
    in_metres = []
    for frame in frames:
        scene.frame_set(frame)
        in_metres.append(np.array(shot.camera.matrix_world.translation) / 100.0)
    board = [ShotCamera("A", shot.camera, shot.frame_start, shot.frame_end)]
    usd, fbx = export_board_usd(scene, board, tmp_path / "board.usda"), export_shot_fbx(scene, board[0],
                                                                                        tmp_path / "a.fbx")
    assert "metersPerUnit = 1\n" in usd.read_text()
    for load in (lambda: bpy.ops.wm.usd_import(filepath=str(usd)),
                 lambda: bpy.ops.import_scene.fbx(filepath=str(fbx), anim_offset=0)):
        bpy.ops.wm.read_homefile(use_empty=True)  # a layout scene in metres
        load()
        camera = next(o for o in bpy.context.scene.objects if o.type == "CAMERA")
        for frame, expected in zip(frames, in_metres, strict=True):
            bpy.context.scene.frame_set(frame)
            np.testing.assert_allclose(camera.matrix_world.translation, expected, atol=1e-4, err_msg=str(frame))
        assert np.ptp([p[0] for p in in_metres]) > 1.0  # the truck moved it (2 m, eased)
