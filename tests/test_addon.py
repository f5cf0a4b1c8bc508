"""The add-on's Blender layer, in real bpy, headless: install, storyboard operators, camera keys, animatic, panels.

``tests/blender45`` runs the core of these tests again under bpy 4.5 LTS.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import bpy
import numpy as np
import pytest

from backend.blender.scenes import shape_mesh
from cinepregen_addon.core import camera_moves
from cinepregen_addon.core.camera_pose import CameraPose, euler_to_matrix

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def view3d_override():
    area = next(a for a in bpy.context.screen.areas if a.type == "VIEW_3D")
    region = next(r for r in area.regions if r.type == "WINDOW")
    return bpy.context.temp_override(area=area, region=region), area


def camera_state(camera, frame):
    bpy.context.scene.frame_set(frame)
    return np.array([*camera.location, *camera.rotation_euler, camera.data.lens])


def sample_state(sample):
    return np.array([*sample.location, *sample.rotation_euler, sample.lens_mm])


def test_install_built_zip_in_fresh_user_folder(tmp_path):
    """`make extension`'s zip installs and enables with Blender's own installer; the installed copy works."""
    script = textwrap.dedent(f"""
        import json, os, sys
        os.environ["BLENDER_USER_RESOURCES"] = {str(tmp_path / "user")!r}
        import bpy
        from backend.blender.extension import build_extension
        zip_path = build_extension({str(tmp_path / "dist")!r})
        result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                          enable_on_install=True)
        module = sys.modules["bl_ext.user_default.cinepregen"]
        bpy.ops.wm.read_homefile(use_empty=True)
        added = bpy.ops.cinepregen.shot_add(name="Opening")
        board = bpy.context.scene.cinepregen
        print("RESULT" + json.dumps({{
            "zip": zip_path.name, "install": sorted(result), "added": sorted(added),
            "module_file": module.__file__, "shots": [s.name for s in board.shots],
            "camera": board.shots[0].camera.name,
            "operators": sorted(dir(bpy.ops.cinepregen)),
            "shaders": sorted(os.listdir(os.path.join(os.path.dirname(module.__file__), "shaders"))),
            "overlay_shaders": str(module.overlay.shaders_folder()),
            "addon_enabled": "bl_ext.user_default.cinepregen" in bpy.context.preferences.addons,
        }}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line is not None, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(line[len("RESULT"):])
    assert result["zip"] == f"cinepregen-{cinepregen_addon_version()}.zip"
    assert result["install"] == ["FINISHED"] and result["addon_enabled"]
    user = str(tmp_path / "user")
    assert result["module_file"].startswith(user), "the installed copy, not the repository, must be in use"
    assert result["added"] == ["FINISHED"] and result["shots"] == ["Opening"] and result["camera"] == "CAM_Opening"
    assert {"shot_add", "apply_move", "layout_board", "render_passes", "bind_reference"} <= set(result["operators"])
    assert {"camera_path.vert.glsl", "camera_path.frag.glsl"} <= set(result["shaders"])
    assert result["overlay_shaders"].startswith(user)


def cinepregen_addon_version() -> str:
    from backend.blender.extension import manifest_version

    return manifest_version()


def test_storyboard_operators_add_duplicate_remove_reorder(scene):
    assert bpy.ops.cinepregen.shot_add(name="A", length=10) == {"FINISHED"}
    assert bpy.ops.cinepregen.shot_add(name="B", length=20) == {"FINISHED"}
    board = scene.cinepregen
    assert [(s.name, s.frame_start, s.frame_end) for s in board.shots] == [("A", 1, 10), ("B", 11, 30)]
    assert board.shots[0].camera != board.shots[1].camera and board.shots[0].camera.type == "CAMERA"

    board.active_shot_index = 0
    board.shots[0].move_json = json.dumps({"kind": "truck", "params": {"distance": 2.0}})
    assert bpy.ops.cinepregen.apply_move() == {"FINISHED"}
    assert bpy.ops.cinepregen.shot_duplicate() == {"FINISHED"}
    names = [s.name for s in board.shots]
    assert names == ["A", "A copy", "B"] and board.active_shot_index == 1
    copy = board.shots[1]
    assert (copy.frame_start, copy.frame_end) == (31, 40)  # same length, after the last shot
    assert copy.camera not in (board.shots[0].camera, board.shots[2].camera)
    assert copy.move_json == board.shots[0].move_json
    # the copy's camera has its own keys at its own frames: the same truck, shifted in time
    for offset in (0, 5, 9):
        np.testing.assert_allclose(camera_state(copy.camera, 31 + offset),
                                   camera_state(board.shots[0].camera, 1 + offset), atol=1e-4)
    assert board.shots[0].camera.animation_data.action != copy.camera.animation_data.action

    assert bpy.ops.cinepregen.shot_move(direction="UP") == {"FINISHED"}
    assert [s.name for s in board.shots] == ["A copy", "A", "B"] and board.active_shot_index == 0
    assert bpy.ops.cinepregen.shot_move(direction="UP") == {"FINISHED"}  # already first: stays
    assert [s.name for s in board.shots] == ["A copy", "A", "B"]
    board.active_shot_index = 2
    assert bpy.ops.cinepregen.shot_move(direction="DOWN") == {"FINISHED"}
    assert [s.name for s in board.shots] == ["A copy", "A", "B"]

    board.active_shot_index = 0
    assert bpy.ops.cinepregen.shot_remove(delete_camera=True) == {"FINISHED"}
    assert [s.name for s in board.shots] == ["A", "B"]
    assert "CAM_A copy" not in bpy.data.objects
    board.shots.clear()
    with pytest.raises(RuntimeError):  # poll fails: nothing to remove
        bpy.ops.cinepregen.shot_remove()


def test_selecting_a_shot_sets_scene_camera_and_preview_range(scene):
    bpy.ops.cinepregen.shot_add(name="A", length=10)
    bpy.ops.cinepregen.shot_add(name="B", length=15)
    board = scene.cinepregen
    board.active_shot_index = 0
    assert scene.camera == board.shots[0].camera
    assert scene.use_preview_range and (scene.frame_preview_start, scene.frame_preview_end) == (1, 10)
    assert bpy.ops.cinepregen.shot_select(index=1) == {"FINISHED"}
    assert scene.camera == board.shots[1].camera
    assert (scene.frame_preview_start, scene.frame_preview_end) == (11, 25)
    assert 11 <= scene.frame_current <= 25


def test_new_shot_from_view_matches_the_viewport(scene):
    override, area = view3d_override()
    space = area.spaces.active
    rv3d = space.region_3d
    rv3d.view_perspective = "PERSP"
    rv3d.view_location = (1.0, 2.0, 0.5)
    rv3d.view_distance = 7.0
    rv3d.view_rotation = camera_moves_quaternion((1.1, 0.0, 0.7))
    space.lens = 60.0
    with override:
        assert bpy.ops.cinepregen.shot_new_from_view(name="View") == {"FINISHED"}
    shot = scene.cinepregen.shots[0]
    camera = shot.camera
    np.testing.assert_allclose(np.array(camera.matrix_world), np.array(rv3d.view_matrix.inverted()), atol=1e-5)
    assert camera.data.lens == pytest.approx(30.0) and camera.data.sensor_width == pytest.approx(36.0)
    assert scene.camera == camera
    # without a 3D View the operator refuses through poll instead of failing inside
    assert not bpy.ops.cinepregen.shot_new_from_view.poll()


def camera_moves_quaternion(euler):
    from mathutils import Euler

    return Euler(euler, "XYZ").to_quaternion()


def test_apply_move_keys_match_camera_move_samples_at_every_frame(scene):
    bpy.ops.cinepregen.shot_add(name="Pre", length=5)
    bpy.ops.cinepregen.shot_add(name="Orbit", length=30)
    board = scene.cinepregen
    shot = board.shots[1]
    camera = shot.camera
    # a key outside the shot's range must survive re-keying the shot
    camera.location = (9.0, 9.0, 9.0)
    camera.keyframe_insert("location", frame=50)
    shot.start_location, shot.start_rotation, shot.lens_mm = (0.0, -8.0, 2.0), (1.3, 0.0, 0.2), 35.0
    move = {"kind": "orbit", "params": {"angle_deg": 90.0, "target": [0.0, 0.0, 1.0]}, "easing": "smooth",
            "shake": {"amplitude_m": 0.02, "rotation_deg": 0.5, "frequency_hz": 2.0, "seed": 3}}
    shot.move_json = json.dumps(move)
    board.active_shot_index = 1
    assert bpy.ops.cinepregen.apply_move() == {"FINISHED"}
    expected = camera_moves.sample_move(camera_moves.MoveSpec.from_dict(move),
                                        CameraPose((0.0, -8.0, 2.0), (1.3, 0.0, 0.2), 35.0), 6, 35)
    for sample in expected:
        np.testing.assert_allclose(camera_state(camera, sample.frame), sample_state(sample), atol=1e-4,
                                   err_msg=f"frame {sample.frame}")
    np.testing.assert_allclose(camera_state(camera, 50)[:3], (9.0, 9.0, 9.0))
    # re-applying a different move replaces the keys of the range, one key per frame
    shot.move_json = json.dumps({"kind": "zoom", "params": {"lens_end_mm": 70.0}})
    assert bpy.ops.cinepregen.apply_move() == {"FINISHED"}
    from cinepregen_addon.keyframes import fcurves_of

    lens_keys = [k.co.x for k in fcurves_of(camera.data).find("lens").keyframe_points]
    assert lens_keys == list(range(6, 36))
    assert camera_state(camera, 35)[6] == pytest.approx(70.0, rel=1e-5)
    np.testing.assert_allclose(camera_state(camera, 20)[:3], (0.0, -8.0, 2.0), atol=1e-5)
    np.testing.assert_allclose(camera_state(camera, 50)[:3], (9.0, 9.0, 9.0))


def test_a_camera_in_quaternion_mode_pans_and_what_overrides_a_move_is_named(scene):
    """glTF imports leave cameras in quaternion mode, which ignores the keyed Euler rotation: the camera is put in
    XYZ Euler with its orientation kept, and the pan turns it. A Track To constraint is named."""
    from cinepregen_addon import keyframes

    bpy.ops.cinepregen.shot_add(name="Quat", length=4)
    shot = scene.cinepregen.shots[0]
    camera = shot.camera
    facing = camera.matrix_world.to_quaternion()
    camera.rotation_mode = "QUATERNION"
    camera.rotation_quaternion = facing
    shot.move_json = json.dumps({"kind": "pan", "params": {"angle_deg": 30.0}, "easing": "linear"})
    assert bpy.ops.cinepregen.apply_move(capture_start=True) == {"FINISHED"}
    assert camera.rotation_mode == "XYZ"
    turned = []
    for frame in (shot.frame_start, shot.frame_end):
        scene.frame_set(frame)
        turned.append(camera.matrix_world.to_quaternion())
    assert turned[0].rotation_difference(facing).angle < 1e-4  # it starts where it was
    assert math.degrees(turned[0].rotation_difference(turned[1]).angle) == pytest.approx(30.0, abs=0.5)
    assert keyframes.move_warnings(scene, shot) == []
    aim = camera.constraints.new("TRACK_TO")
    assert any(aim.name in w and "mute it" in w for w in keyframes.move_warnings(scene, shot))
    aim.mute = True
    assert keyframes.move_warnings(scene, shot) == []


def test_add_shot_gives_the_new_camera_what_the_scene_camera_sees(scene):
    """Sensor, fit, shift and clipping come along with the lens (a set at 300 m was clipped at the default 100 m,
    and another sensor changed the field of view); the copy is perspective and keys its own lens."""
    source = bpy.data.objects.new("Set camera", bpy.data.cameras.new("Set camera"))
    scene.collection.objects.link(source)
    scene.camera = source
    data = source.data
    data.lens, data.sensor_width, data.sensor_height, data.sensor_fit = 32.0, 24.89, 18.66, "VERTICAL"
    data.shift_x, data.clip_start, data.clip_end = 0.1, 0.5, 800.0
    data.keyframe_insert("lens", frame=1)
    bpy.ops.cinepregen.shot_add(name="Wide", length=3)
    new = scene.cinepregen.shots[-1].camera.data
    assert new != data and new.type == "PERSP" and new.animation_data is None
    assert (new.lens, new.sensor_fit, new.clip_end) == (32.0, "VERTICAL", 800.0)
    assert (new.sensor_width, new.sensor_height, new.shift_x, new.clip_start) == pytest.approx(
        (24.89, 18.66, 0.1, 0.5))


def test_bad_move_json_is_reported_not_raised(scene):
    bpy.ops.cinepregen.shot_add(name="A", length=5)
    shot = scene.cinepregen.shots[0]
    shot.move_json = json.dumps({"kind": "teleport"})
    # an ERROR report (the operator returned CANCELLED) surfaces as RuntimeError when called from Python
    with pytest.raises(RuntimeError, match="unknown camera move 'teleport'"):
        bpy.ops.cinepregen.apply_move()
    shot.move_json = "{not json"
    with pytest.raises(RuntimeError, match="not valid JSON"):
        bpy.ops.cinepregen.apply_move()


def test_local_offset_survives_reapply_and_a_new_global_move(scene):
    bpy.ops.cinepregen.shot_add(name="A", length=24)
    shot = scene.cinepregen.shots[0]
    camera = shot.camera
    start = CameraPose(tuple(shot.start_location), tuple(shot.start_rotation), shot.lens_mm)
    shot.move_json = json.dumps({"kind": "dolly", "params": {"distance": 3.0}})
    assert bpy.ops.cinepregen.apply_move() == {"FINISHED"}
    scene.frame_set(10)
    nudged = np.array(camera.location) + (0.5, 0.0, -0.25)
    camera.location = nudged
    camera.data.lens += 5.0
    assert bpy.ops.cinepregen.add_local_offset() == {"FINISHED"}
    np.testing.assert_allclose(camera_state(camera, 10)[:3], nudged, atol=1e-5)

    assert bpy.ops.cinepregen.apply_move() == {"FINISHED"}  # re-applying does not apply the offset twice
    np.testing.assert_allclose(camera_state(camera, 10)[:3], nudged, atol=1e-5)

    truck = {"kind": "truck", "params": {"distance": 2.0}, "easing": "linear"}
    shot.move_json = json.dumps(truck)
    assert bpy.ops.cinepregen.apply_move() == {"FINISHED"}
    global_move = camera_moves.sample_move(camera_moves.MoveSpec.from_dict(truck), start, 1, 24)
    for sample in global_move:  # a single offset is held over the whole shot
        np.testing.assert_allclose(camera_state(camera, sample.frame),
                                   sample_state(sample) + (0.5, 0.0, -0.25, 0, 0, 0, 5.0), atol=1e-4,
                                   err_msg=f"frame {sample.frame}")
    assert bpy.ops.cinepregen.clear_local_adjustments() == {"FINISHED"}
    np.testing.assert_allclose(camera_state(camera, 10), sample_state(global_move[9]), atol=1e-5)


def test_pinned_pose_stays_exact_when_the_global_move_changes(scene):
    bpy.ops.cinepregen.shot_add(name="A", length=20)
    shot = scene.cinepregen.shots[0]
    shot.move_json = json.dumps({"kind": "pedestal", "params": {"distance": 2.0}})
    bpy.ops.cinepregen.apply_move()
    scene.frame_set(8)
    shot.camera.location = (3.0, -4.0, 1.0)
    shot.camera.rotation_euler = (1.2, 0.0, 0.3)
    assert bpy.ops.cinepregen.add_local_offset(pin=True) == {"FINISHED"}
    pinned = camera_state(shot.camera, 8)
    shot.move_json = json.dumps({"kind": "orbit", "params": {"angle_deg": 60.0}})
    bpy.ops.cinepregen.apply_move()
    np.testing.assert_allclose(camera_state(shot.camera, 8), pinned, atol=1e-5)
    np.testing.assert_allclose(pinned[:6], (3.0, -4.0, 1.0, 1.2, 0.0, 0.3), atol=1e-6)
    assert not np.allclose(camera_state(shot.camera, 1)[:3], camera_state(shot.camera, 20)[:3])  # the move still runs


@pytest.mark.parametrize("in_rig", [False, True])
def test_frame_subject_puts_subject_in_the_middle(scene, in_rig):
    """Also for a camera parented to a rotated, scaled layout empty: it is framed in the set, not in the rig."""
    from test_camera_rigs import layout_rig

    hero = bpy.data.objects.new("Hero", shape_mesh("Hero", "Cube", 1.0))
    hero.location, hero.scale = (2.0, 3.0, 0.875), (0.5, 0.3, 1.75)
    scene.collection.objects.link(hero)
    bpy.ops.cinepregen.shot_add(name="A", length=5)
    shot = scene.cinepregen.shots[0]
    if in_rig:
        layout_rig(scene, False, shot.camera)
    shot.subject, shot.shot_size, shot.camera_angle, shot.lens_mm = hero, "FS", "HIGH", 35.0
    assert bpy.ops.cinepregen.frame_subject() == {"FINISHED"}
    camera = shot.camera
    scene.frame_set(3)
    view = -np.array(camera.matrix_world.to_3x3().normalized(), dtype=np.float64)[:, 2]  # (a rig scales it)
    to_subject = np.array([2.0, 3.0, 0.875]) - np.array(camera.matrix_world.translation)
    assert np.linalg.norm(np.cross(view, to_subject / np.linalg.norm(to_subject))) < 1e-5  # looks at its centre
    assert math.degrees(math.asin(-view[2])) == pytest.approx(30.0, abs=1e-3)  # HIGH looks 30 degrees down
    assert camera.data.lens == pytest.approx(35.0)
    shot.subject = None
    with pytest.raises(RuntimeError, match="has no subject"):
        bpy.ops.cinepregen.frame_subject()


def test_layout_board_plays_as_an_animatic(scene):
    board = scene.cinepregen
    for name, length in (("A", 10), ("B", 5), ("C", 8)):
        bpy.ops.cinepregen.shot_add(name=name, length=length)
    board.shots[1].frame_start, board.shots[1].frame_end = 40, 44  # out of order on the timeline
    board.shots[0].move_json = json.dumps({"kind": "pedestal", "params": {"distance": 1.0}})
    board.shots[0].adjustments_json = json.dumps({"offsets": [{"frame": 5, "location": [0.0, 0.0, 0.3]}]})
    scene.frame_start = 3
    assert bpy.ops.cinepregen.layout_board() == {"FINISHED"}
    ranges = [(s.frame_start, s.frame_end) for s in board.shots]
    assert ranges == [(3, 12), (13, 17), (18, 25)]
    assert json.loads(board.shots[0].adjustments_json)["offsets"][0]["frame"] == 7  # local layer moved along
    markers = sorted((m.frame, m.camera.name) for m in scene.timeline_markers)
    assert markers == [(3, "CAM_A"), (13, "CAM_B"), (18, "CAM_C")]
    assert (scene.frame_start, scene.frame_end) == (3, 25)
    for frame in range(3, 26):
        scene.frame_set(frame)
        expected = next(s.camera for s in board.shots if s.frame_start <= frame <= s.frame_end)
        assert scene.camera == expected, f"frame {frame}"
    # shot A's pedestal now starts at frame 3
    np.testing.assert_allclose(camera_state(board.shots[0].camera, 3)[:3], np.array(board.shots[0].start_location)
                               + (0, 0, 0.3), atol=1e-5)
    assert bpy.ops.cinepregen.layout_board() == {"FINISHED"}  # again: markers replaced, not doubled
    assert len(scene.timeline_markers) == 3


def test_reference_binding_reaches_the_pass_renderer(scene, tmp_path):
    from cinepregen_addon.core.png_codec import write_png
    from cinepregen_addon.render_passes import REFERENCE_PROPERTY

    image = tmp_path / "hero.png"
    write_png(image, np.full((8, 8, 3), 200, np.uint8))
    (tmp_path / "notes.png").write_text("not a picture")
    hero = bpy.data.objects.new("Hero", shape_mesh("Hero", "Cube", 1.0))
    scene.collection.objects.link(hero)
    assert bpy.ops.cinepregen.bind_reference(filepath=str(image), object_name="Hero") == {"FINISHED"}
    assert hero.cinepregen_reference == str(image)
    assert hero[REFERENCE_PROPERTY] == str(image)
    with pytest.raises(RuntimeError, match="reference image not found"):
        bpy.ops.cinepregen.bind_reference(filepath=str(tmp_path / "missing.png"), object_name="Hero")
    with pytest.raises(RuntimeError, match="notes.png is not an image Blender can read"):  # refused when bound
        bpy.ops.cinepregen.bind_reference(filepath=str(tmp_path / "notes.png"), object_name="Hero")
    assert hero.cinepregen_reference == str(image)
    assert bpy.ops.cinepregen.clear_reference(object_name="Hero") == {"FINISHED"}
    assert REFERENCE_PROPERTY not in hero.keys() or hero[REFERENCE_PROPERTY] == ""


def _cube_object(name: str, location, size: float, collection) -> bpy.types.Object:
    obj = bpy.data.objects.new(name, shape_mesh(name, "Cube", size))
    obj.location = location
    collection.objects.link(obj)
    return obj


def test_linked_characters_and_overrides_keep_their_ids_and_references_after_reopening(scene, tmp_path):
    """The studio way: a character linked from a library file and made editable by a library override, and a prop
    linked as it is, each beside a local object of the same name. Every one gets its own ID; the reference bound to
    the override and the IDs of linked and overridden objects (which Blender does not save on those objects) come
    back when the file is reopened, and a second render names every object with the same ID."""
    from cinepregen_addon.core import shot_bundle
    from cinepregen_addon.core.png_codec import write_png
    from cinepregen_addon.render_passes import ShotRenderSpec, render_shot_bundle

    character = bpy.data.collections.new("Character")
    scene.collection.children.link(character)
    _cube_object("Body", (0.0, 0.0, 0.6), 1.2, character)
    _cube_object("Crate", (2.0, 0.0, 0.4), 0.8, scene.collection)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "library.blend"))

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    _cube_object("Body", (-2.0, 0.0, 0.4), 0.8, scene.collection)  # local objects named like the library's
    _cube_object("Crate", (-4.0, 0.0, 0.4), 0.8, scene.collection)
    with bpy.data.libraries.load(str(tmp_path / "library.blend"), link=True) as (source, linked):
        linked.collections, linked.objects = ["Character"], ["Crate"]
    scene.collection.objects.link(linked.objects[0])
    linked.collections[0].override_hierarchy_create(scene, bpy.context.view_layer, do_fully_editable=True)
    body = next(o for o in bpy.data.objects if o.override_library is not None)
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.location, camera.rotation_euler = (-1.0, -12.0, 1.0), (1.5708, 0.0, 0.0)
    scene.collection.objects.link(camera)
    write_png(tmp_path / "body.png", np.full((8, 8, 3), 180, np.uint8))
    assert bpy.ops.cinepregen.bind_reference(filepath=str(tmp_path / "body.png"), object_name=body.name) == {"FINISHED"}
    with pytest.raises(RuntimeError, match="Crate is linked from library.blend, so a reference bound to it is not "
                                           "saved; make it editable"):  # the linked one, not the local 'Crate'
        bpy.ops.cinepregen.bind_reference(filepath=str(tmp_path / "body.png"), object_name=linked.objects[0].name_full)
    spec = ShotRenderSpec("linked", "Camera", 1, 1, resolution=(96, 54))

    def render(folder: str) -> tuple[dict[str, int], list[int], np.ndarray]:
        bundle = shot_bundle.read_bundle(render_shot_bundle(bpy.context.scene, spec, tmp_path / folder))
        return {o.name: o.id for o in bundle.objects}, sorted(bundle.reference_images), bundle.passes[0].object_id

    ids, references, id_pass = render("first")
    names = {"Body", body.name, "Crate", "Crate [library.blend]"}
    assert names <= set(ids) and len({ids[name] for name in names}) == 4, ids
    assert all(np.any(id_pass == ids[name]) for name in names)  # each seen under its own ID
    assert references == [ids[body.name]]
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "shot.blend"))
    again, references_again, _ = render("second")
    assert again == ids and references_again == references


def test_a_camera_linked_from_a_library_is_refused_for_moves_and_its_override_keeps_them(scene, tmp_path):
    """Keys set on a linked camera play until the file is reopened, then are gone: keying one is refused in one
    line saying what to do, before the shot changes; its passes render from it, not from this file's camera of the
    same name; the camera made a library override keeps its keyed move."""
    from cinepregen_addon import render_passes
    from cinepregen_addon.core import shot_bundle

    camera = bpy.data.objects.new("LayoutCam", bpy.data.cameras.new("LayoutCam"))
    camera.location, camera.rotation_euler = (0.0, -10.0, 1.6), (1.5708, 0.0, 0.0)
    scene.collection.objects.link(camera)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "layout.blend"))
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    with bpy.data.libraries.load(str(tmp_path / "layout.blend"), link=True) as (source, linked):
        linked.objects = ["LayoutCam"]
    local = bpy.data.objects.new("LayoutCam", bpy.data.cameras.new("LocalCam"))  # this file's own, same name
    local.location = (6.0, -6.0, 3.0)
    scene.collection.objects.link(local)
    camera = linked.objects[0]
    scene.collection.objects.link(camera)
    subject = _cube_object("Hero", (0.0, 0.0, 0.9), 1.8, scene.collection)
    assert bpy.ops.cinepregen.shot_add(name="S1", length=12) == {"FINISHED"}
    shot = scene.cinepregen.shots[0]
    shot.camera, shot.subject = camera, subject
    shot.move_json = json.dumps({"kind": "dolly", "params": {"distance": 1.0}, "easing": "linear"})
    start_pose = (tuple(shot.start_location), tuple(shot.start_rotation), shot.lens_mm)
    for operator in (bpy.ops.cinepregen.apply_move, bpy.ops.cinepregen.frame_subject):
        with pytest.raises(RuntimeError, match="'LayoutCam': it is linked from layout.blend, so keys on it are not "
                                               "saved; make it editable"):
            operator()
    assert camera.animation_data is None
    assert (tuple(shot.start_location), tuple(shot.start_rotation), shot.lens_mm) == start_pose
    spec = render_passes.storyboard_shot_specs(scene, resolution=(32, 18))[0]  # its passes: from the linked camera
    first = shot_bundle.read_bundle(render_passes.render_shot_bundle(scene, spec, tmp_path / "passes")).cameras[0]
    rotation, translation = first.world_to_camera[:3, :3], first.world_to_camera[:3, 3]
    np.testing.assert_allclose(-rotation.T @ translation, camera.matrix_world.translation, atol=1e-4)
    override = camera.override_create(remap_local_usages=True)
    override.data = override.data.override_create(remap_local_usages=True)
    shot.camera = override
    assert bpy.ops.cinepregen.apply_move(capture_start=True) == {"FINISHED"}
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "shot.blend"))
    scene = bpy.context.scene
    reopened = scene.cinepregen.shots[0].camera
    scene.frame_set(1)
    start = reopened.matrix_world.translation.copy()
    scene.frame_set(12)
    assert (reopened.matrix_world.translation - start).length == pytest.approx(1.0, abs=1e-3)


class RecordingLayout:
    """Stands in for ``UILayout``: checks every property and operator name the panels use exists."""

    def __init__(self, log):
        self.log = log
        self.use_property_split = False

    def _sub(self, *args, **kwargs):
        return RecordingLayout(self.log)

    row = column = box = split = grid_flow = _sub

    def separator(self, **kwargs):
        pass

    def label(self, text="", **kwargs):
        self.log.append(("label", text))

    def progress(self, factor=0.0, text="", **kwargs):
        assert 0.0 <= factor <= 1.0
        self.log.append(("progress", text))

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        self.log.append(("prop", name))

    def operator(self, idname, **kwargs):
        namespace, name = idname.split(".")
        assert name in dir(getattr(bpy.ops, namespace)), f"unknown operator {idname}"
        self.log.append(("operator", idname))
        return _OperatorProperties(getattr(getattr(bpy.ops, namespace), name).get_rna_type().properties, idname)

    def operator_menu_enum(self, idname, property, **kwargs):
        self.operator(idname).__setattr__(property, None)
        self.log.append(("menu", f"{idname}.{property}"))

    def prop_search(self, data, name, search_data, search_name, **kwargs):
        self.prop(data, name)
        assert search_name in search_data.bl_rna.properties, search_name
        self.log.append(("search", f"{name} in {search_name}"))

    def template_list(self, listtype, list_id, data, propname, active_data, active_propname, **kwargs):
        assert hasattr(bpy.types, listtype), listtype
        assert propname in data.bl_rna.properties and active_propname in active_data.bl_rna.properties
        self.log.append(("list", listtype))


class _OperatorProperties:
    def __init__(self, properties, idname):
        object.__setattr__(self, "_names", set(properties.keys()))
        object.__setattr__(self, "_idname", idname)

    def __setattr__(self, name, value):
        assert name in self._names, f"{self._idname} has no property {name!r}"
        object.__setattr__(self, name, value)


def draw_panels(scene):
    from cinepregen_addon import ui

    log = []
    for panel in ui.classes:
        if not issubclass(panel, bpy.types.Panel):
            continue
        if hasattr(panel, "poll") and not panel.poll(bpy.context):
            continue
        panel.draw(type("PanelSelf", (), {"layout": RecordingLayout(log)})(), bpy.context)
    board = scene.cinepregen
    for index, shot in enumerate(board.shots):
        ui.CINEPREGEN_UL_shots.draw_item(None, bpy.context, RecordingLayout(log), board, shot, 0, board,
                                         "active_shot_index", index)
    return log


def test_panels_and_list_draw_against_a_recording_layout(scene):
    empty = draw_panels(scene)
    assert ("list", "CINEPREGEN_UL_shots") in empty  # empty board: the storyboard list and where to start
    assert any(entry[0] == "label" and "No shots yet" in entry[1] for entry in empty)
    bpy.ops.cinepregen.shot_add(name="A", length=5)
    hero = bpy.data.objects.new("Hero", None)
    scene.collection.objects.link(hero)
    bpy.context.view_layer.objects.active = hero
    hero.cinepregen_reference = "//hero.png"
    scene.cinepregen.shots[0].move_json = "{still typing"
    scene.cinepregen.shots[0].status = "RUNNING"
    scene.cinepregen.shots[0].bundle_path = "/tmp/bundle"
    log = draw_panels(scene)
    operators = {entry[1] for entry in log if entry[0] == "operator"}
    props = {entry[1] for entry in log if entry[0] == "prop"}
    assert {"cinepregen.shot_add", "cinepregen.apply_move", "cinepregen.render_passes", "cinepregen.bind_reference",
            "cinepregen.layout_board", "cinepregen.cancel_shot", "cinepregen.random_seed", "cinepregen.open_board",
            "cinepregen.check_backend"} <= operators
    assert {"shot_size", "camera_angle", "easing", "use_shake", "cinepregen_reference", "steps",
            "show_camera_path", "progress", "bundle_path", "pass_resolution", "render_clay"} <= props
    assert not {"move_json", "adjustments_json"} & props  # the stored JSON is never what the artist edits
    assert any(entry[0] == "label" and "Check Backend tells whether" in entry[1] for entry in log)
    assert ("label", "hero.png") in log
    assert ("menu", "cinepregen.set_move.kind") in log


def test_tooltips_are_one_line_and_say_what_each_button_does(scene):
    import cinepregen_addon.generate as generate
    from cinepregen_addon import moves

    assert "\n" not in generate.CINEPREGEN_OT_generate_shot.__doc__
    pinned = moves.CINEPREGEN_OT_add_local_offset.description(bpy.context, SimpleNamespace(pin=True))
    offset = moves.CINEPREGEN_OT_add_local_offset.description(bpy.context, SimpleNamespace(pin=False))
    from_camera = moves.CINEPREGEN_OT_apply_move.description(bpy.context, SimpleNamespace(capture_start=True))
    apply = moves.CINEPREGEN_OT_apply_move.description(bpy.context, SimpleNamespace(capture_start=False))
    assert len({pinned, offset, from_camera, apply}) == 4 and "Pin" in pinned and "where the camera is" in from_camera
    bpy.ops.cinepregen.shot_add(name="A", length=5)
    seeds = set()
    for _ in range(3):
        assert bpy.ops.cinepregen.random_seed() == {"FINISHED"}
        seeds.add(scene.cinepregen.shots[0].seed)
    assert len(seeds) == 3


def test_set_move_from_the_library(scene):
    bpy.ops.cinepregen.shot_add(name="A", length=10)
    shot = scene.cinepregen.shots[0]
    assert bpy.ops.cinepregen.set_move(kind="pan", easing="linear") == {"FINISHED"}
    assert json.loads(shot.move_json) == {"kind": "pan", "params": {}, "easing": "linear", "shake": None}
    turned = camera_state(shot.camera, 10)[5] - camera_state(shot.camera, 1)[5]
    assert math.degrees(turned) == pytest.approx(camera_moves.MOVE_PARAMS["pan"]["angle_deg"], abs=1e-3)


def test_camera_path_toggle_adds_and_removes_the_draw_handler(scene):
    from cinepregen_addon import overlay

    board = scene.cinepregen
    board.show_camera_path = True
    assert overlay._handler is not None
    board.show_camera_path = False
    assert overlay._handler is None


def test_render_passes_writes_the_active_shots_bundle(scene, tmp_path):
    from cinepregen_addon.core import shot_bundle

    scene.collection.objects.link(bpy.data.objects.new("Box", shape_mesh("Box", "Cube", 1.0)))
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "board.blend"))  # bundles go next to the .blend
    bpy.ops.cinepregen.shot_add(name="Box shot", length=2)
    shot = scene.cinepregen.shots[0]
    shot.camera.location, shot.camera.rotation_euler = (0.0, -6.0, 0.0), (math.pi / 2, 0.0, 0.0)
    assert bpy.ops.cinepregen.apply_move(capture_start=True) == {"FINISHED"}
    assert bpy.ops.cinepregen.render_passes() == {"FINISHED"}
    assert shot.status == "PASSES_READY"
    bundle = shot_bundle.read_bundle(shot.bundle_path)
    assert shot.bundle_path.startswith(str(tmp_path))
    assert (bundle.frame_start, bundle.frame_end) == (1, 2) and [o.name for o in bundle.objects] == ["Box"]
    bpy.ops.cinepregen.shot_add(name="Second shot", length=2)  # becomes the active shot
    scene.cinepregen.shots[0].camera = None  # a shot whose camera was deleted blocks no other shot
    assert bpy.ops.cinepregen.render_passes() == {"FINISHED"}
    assert scene.cinepregen.shots[1].status == "PASSES_READY"
    scene.cinepregen.active_shot_index = 0
    with pytest.raises(RuntimeError, match="'Box shot' has no camera: pick one"):
        bpy.ops.cinepregen.render_passes()


def test_passes_of_another_shape_than_the_scene_are_named_on_the_status_line(scene, tmp_path):
    scene.render.resolution_x, scene.render.resolution_y = 1080, 1920  # a vertical video
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "vertical.blend"))
    bpy.ops.cinepregen.shot_add(name="Vertical", length=1)
    shot = scene.cinepregen.shots[0]
    assert bpy.ops.cinepregen.render_passes() == {"FINISHED"}
    assert "the scene frames 0.56:1, so the clip shows another crop" in shot.status_message
    scene.cinepregen.pass_resolution = (144, 256)
    assert bpy.ops.cinepregen.render_passes() == {"FINISHED"}
    assert "another crop" not in shot.status_message


def test_unregister_removes_everything_and_register_restores_it(addon):
    addon.unregister()
    try:
        assert not hasattr(bpy.types.Scene, "cinepregen") and not hasattr(bpy.types.Object, "cinepregen_reference")
        assert "shot_add" not in dir(bpy.ops.cinepregen) and not hasattr(bpy.types, "CINEPREGEN_PT_storyboard")
    finally:
        addon.register()
    assert "shot_add" in dir(bpy.ops.cinepregen) and hasattr(bpy.types.Scene, "cinepregen")


def test_move_parameters_are_real_properties_over_the_stored_move(scene):
    """``shot.move`` edits ``move_json`` with units and re-keys the camera; JSON written by a script (or an older
    file) shows at once; a move that cannot be made leaves the keys and says why."""
    bpy.ops.cinepregen.shot_add(name="A", length=24)
    shot = scene.cinepregen.shots[0]
    start = CameraPose(tuple(shot.start_location), tuple(shot.start_rotation), shot.lens_mm)
    assert bpy.ops.cinepregen.set_move(kind="dolly") == {"FINISHED"}
    assert shot.move.distance == 1.0 and shot.move.easing == "ease_in_out"
    props = shot.move.bl_rna.properties
    assert props["distance"].unit == "LENGTH" and props["angle_deg"].subtype == "ANGLE"
    shot.move.distance = 2.5
    shot.move.easing = "linear"
    spec = camera_moves.MoveSpec.from_dict(json.loads(shot.move_json))
    assert spec.params == {"distance": 2.5} and spec.easing == "linear"
    for sample in camera_moves.sample_move(spec, start, 1, 24):  # the camera was keyed with the new value
        np.testing.assert_allclose(camera_state(shot.camera, sample.frame), sample_state(sample), atol=1e-4)

    shot.move_json = json.dumps({"kind": "pan", "params": {"angle_deg": 90.0}})
    assert shot.move.angle_deg == pytest.approx(math.pi / 2)
    shot.move.angle_deg = math.radians(30.0)
    assert json.loads(shot.move_json)["params"]["angle_deg"] == pytest.approx(30.0)

    assert bpy.ops.cinepregen.set_move(kind="orbit") == {"FINISHED"}
    ahead = np.array(shot.start_location) - euler_to_matrix(shot.start_rotation)[:, 2] * 5.0
    assert not shot.move.use_target
    np.testing.assert_allclose(shot.move.target, ahead, atol=1e-5)  # where the orbit's centre is without one
    shot.move.use_target = True
    np.testing.assert_allclose(json.loads(shot.move_json)["params"]["target"], ahead, atol=1e-5)
    shot.move.target = (1.0, 2.0, 0.5)
    assert json.loads(shot.move_json)["params"]["target"] == [1.0, 2.0, 0.5]
    shot.move.use_shake = True
    shot.move.shake_amplitude_m = 0.05
    assert json.loads(shot.move_json)["shake"]["amplitude_m"] == pytest.approx(0.05)
    shot.move.use_shake = False
    assert json.loads(shot.move_json)["shake"] is None

    assert bpy.ops.cinepregen.set_move(kind="dolly_zoom") == {"FINISHED"}
    before = camera_state(shot.camera, 24)
    shot.move.distance = 9.0  # past its subject 5 m ahead: refused by the move library
    assert "not keyed" in shot.move_note and "reach the subject" in shot.move_note
    np.testing.assert_allclose(camera_state(shot.camera, 24), before, atol=1e-6)
    shot.move.distance = 1.0
    assert shot.move_note == ""


def test_local_adjustments_read_as_sentences_and_go_one_by_one(scene):
    bpy.ops.cinepregen.shot_add(name="A", length=24)
    shot = scene.cinepregen.shots[0]
    assert bpy.ops.cinepregen.set_move(kind="dolly") == {"FINISHED"}
    for frame, nudge in ((6, (0.5, 0.0, 0.0)), (18, (0.0, 0.0, -0.25))):
        scene.frame_set(frame)
        shot.camera.location = np.array(shot.camera.location) + nudge
        assert bpy.ops.cinepregen.add_local_offset() == {"FINISHED"}
    from cinepregen_addon import moves

    rows = moves.shot_adjustments(shot).rows()
    assert [r[2] for r in rows] == ["offset at frame 6: +0.50 m x", "offset at frame 18: +0.50 m x, -0.25 m z"]
    assert bpy.ops.cinepregen.remove_local_adjustment(kind="offset", index=0) == {"FINISHED"}
    assert [o.frame for o in moves.shot_adjustments(shot).offsets] == [18]
    with pytest.raises(RuntimeError, match="no offset 3"):
        bpy.ops.cinepregen.remove_local_adjustment(kind="offset", index=3)


def test_every_property_and_operator_option_has_a_tooltip(addon):
    """What the artist can hover says what it is: every property of the add-on's groups and operators."""
    import cinepregen_addon

    missing = []
    for module in cinepregen_addon._modules():
        for cls in module.classes:
            if not issubclass(cls, bpy.types.PropertyGroup | bpy.types.Operator | bpy.types.AddonPreferences):
                continue  # panels and lists have only Blender's own properties
            properties = cls.bl_rna.properties
            if issubclass(cls, bpy.types.Operator):
                namespace, name = cls.bl_idname.split(".")
                properties = getattr(getattr(bpy.ops, namespace), name).get_rna_type().properties
            missing += [f"{cls.__name__}.{p.identifier}" for p in properties if not p.is_hidden
                        and p.identifier not in ("rna_type", "name", "bl_idname") and not p.description.strip()]
    assert not missing, ", ".join(missing)
