"""The main job end to end at reduced size: a real Blender board, real passes, a real backend on 127.0.0.1 and a
tiny real model (4 frames per shot instead of 16, an untrained one-block model instead of previs-tiny)."""

import imageio.v3 as iio
import numpy as np
from helpers import tiny_pipeline
from PIL import Image

from backend.cli import main
from backend.demo import DEMO_RESOLUTION, DEMO_SHOTS
from cinepregen_addon.core.camera_geometry import camera_to_world
from cinepregen_addon.core.shot_bundle import read_bundle

FRAMES = 4

WIDTH, HEIGHT = DEMO_RESOLUTION


def test_demo_writes_clips_animatic_storyboard_blend_and_report(tmp_path):
    weights = tiny_pipeline(sample_size=(72, 128)).save_pretrained(tmp_path / "weights")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", str(FRAMES), "--weights", str(weights)]) == 0

    clips = sorted(out.glob("0*.mp4"))
    assert [c.name[:3] for c in clips] == ["01_", "02_", "03_"]
    for clip in clips:
        assert iio.imread(clip, plugin="FFMPEG").shape == (FRAMES, HEIGHT, WIDTH, 3)
    animatic = iio.imread(out / "animatic.mp4", plugin="FFMPEG")
    assert animatic.shape == (len(DEMO_SHOTS) * FRAMES, HEIGHT, WIDTH, 3)
    first = iio.imread(clips[0], plugin="FFMPEG")
    np.testing.assert_allclose(animatic[:FRAMES].mean((1, 2)), first.mean((1, 2)), atol=6)
    board = Image.open(out / "storyboard.png")
    assert board.height >= len(DEMO_SHOTS) * 144 and board.width > 6 * 200

    report = (out / "report.md").read_text()
    for shot in DEMO_SHOTS:
        assert shot.name in report and shot.move["kind"] in report
    assert str(weights) in report


def test_demo_board_is_a_real_storyboard_with_strips(tmp_path):
    """The saved .blend holds the board the panel shows: shots back to back, camera markers, clips as strips."""
    import bpy

    weights = tiny_pipeline(sample_size=(72, 128)).save_pretrained(tmp_path / "weights")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--frames", "2", "--weights", str(weights)]) == 0
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "demo" / "demo.blend"))
    scene = bpy.context.scene
    shots = scene.cinepregen.shots
    assert [s.name for s in shots] == [s.name for s in DEMO_SHOTS]
    assert [(s.frame_start, s.frame_end) for s in shots] == [(1, 2), (3, 4), (5, 6)]
    assert all(s.status == "DONE" for s in shots)
    markers = sorted((m.frame, m.camera.name) for m in scene.timeline_markers if m.camera)
    assert markers == [(s.frame_start, s.camera.name) for s in shots]
    strips = {s.name: (s.frame_final_start, s.frame_final_end) for s in scene.sequence_editor.strips}
    assert strips == {s.name: (s.frame_start, s.frame_end + 1) for s in shots}
    moved = [s.camera for s in shots if s.camera.animation_data is not None]
    assert len(moved) == len(DEMO_SHOTS)

    # Each bundle was rendered through its own shot's camera, which frames its subject above the floor.
    for shot in shots:
        bundle = read_bundle(shot.bundle_path)
        assert bundle.shot["camera_name"] == shot.camera.name
        subject_id = next(o.id for o in bundle.objects if o.name == shot.subject.name)
        h, w = bundle.height, bundle.width
        centre = (bundle.passes[0].object_id[h // 3:2 * h // 3, w // 3:2 * w // 3] == subject_id).mean()
        assert centre > 0.3, (shot.name, centre)
        assert min(camera_to_world(c.world_to_camera)[2, 3] for c in bundle.cameras) > 0.1, shot.name


def test_demo_without_weights_says_how_to_get_them(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--weights", str(tmp_path / "none")]) == 2
    assert "no model folder at" in capsys.readouterr().out
