"""Blender 4.5 LTS: the add-on's core Blender tests again, under bpy 4.5 (see run.sh).

4.5 has layered actions and the legacy ``action.fcurves`` side by side; these tests prove the keys, the storyboard
operators, moves on cameras in rigs and the extension install work there as on 5.x.
"""

import bpy
from test_addon import (  # noqa: F401  (pytest collects the imported tests; the fixtures are tests/conftest.py's)
    test_apply_move_keys_match_camera_move_samples_at_every_frame,
    test_install_built_zip_in_fresh_user_folder,
    test_layout_board_plays_as_an_animatic,
    test_local_offset_survives_reapply_and_a_new_global_move,
    test_panels_and_list_draw_against_a_recording_layout,
    test_pinned_pose_stays_exact_when_the_global_move_changes,
    test_reference_binding_reaches_the_pass_renderer,
    test_render_passes_writes_the_active_shots_bundle,
    test_selecting_a_shot_sets_scene_camera_and_preview_range,
    test_set_move_from_the_library,
    test_storyboard_operators_add_duplicate_remove_reorder,
)
from test_camera_rigs import test_a_move_on_a_camera_in_a_rig_plays_in_the_set_as_on_a_free_camera  # noqa: F401


def test_running_on_blender_45():
    assert bpy.app.version[:2] == (4, 5)


def test_the_render_passes_command_exits_on_blender_45(tmp_path):
    """The CLI registers the add-on for a storyboard and unregisters it before it returns: bpy 4.5 hangs at exit
    while a script-registered add-on is still registered."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import bpy
        import cinepregen_addon
        from backend.blender.scenes import build_test_scene
        info = build_test_scene(frame_end=2)
        cinepregen_addon.register()
        shot = bpy.context.scene.cinepregen.shots.add()
        shot.name, shot.frame_start, shot.frame_end = "Opening", 1, 2
        shot.camera = bpy.data.objects[info["camera"]]
        bpy.ops.wm.save_as_mainfile(filepath=r"{tmp_path / 'board.blend'}")
        cinepregen_addon.unregister()
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    command = [sys.executable, "-m", "backend.cli", "render-passes", str(tmp_path / "board.blend"), "--all",
               "--resolution", "32x18", "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)  # a hang fails here
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "Opening" / "shot.json").is_file()
