"""``cinepregen export`` on a saved board, read back with the real libraries: OTIO and its CMX 3600 adapter, Blender's
FBX and USD importers (cameras frame by frame against the bundle's K and extrinsics), poppler for the PDF, csv.

The board: a dolly zoom on a keyed camera with a generated clip, a move on a camera carried by a moving rig (an
empty it is parented to, as in artists' files), a shot with rendered passes and no clip, and a shot with neither.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import bpy
import numpy as np
import opentimelineio as otio
import pytest

from backend.blender.addon import enable_addon_in_process
from backend.blender.scenes import build_test_scene
from backend.cli import main as cli_main
from backend.pipelines.generate import write_mp4
from cinepregen_addon import render_passes

RESOLUTION = (128, 72)
SHOTS = {"Shot A": (1, 12), "Shot B/rig": (13, 24), "Shot C": (25, 27), "Shot D": (28, 30)}
MANY_SCRIPTS = "Łódź, Αθήνα, Москва, 渡り廊下の決闘 🎬"  # notes as studios write them: each script must print


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The saved board, its cameras at every frame as the bundles record them, and the export folder."""
    enable_addon_in_process()
    tmp = tmp_path_factory.mktemp("exports")
    info = build_test_scene(n_objects=2, moving=True, frame_end=30, resolution=RESOLUTION)
    scene = info["scene"]
    scene.render.fps = 24
    dolly = bpy.data.objects[info["camera"]]
    for frame, (y, lens) in {1: (-8.0, 35.0), 12: (-4.0, 17.5)}.items():  # a dolly zoom: in while zooming out
        dolly.location.y, dolly.data.lens = y, lens
        dolly.keyframe_insert("location", frame=frame)
        dolly.data.keyframe_insert("lens", frame=frame)
    rig = bpy.data.objects.new("Camera Rig", None)
    scene.collection.objects.link(rig)
    carried = bpy.data.objects.new("Carried Camera", bpy.data.cameras.new("Carried Camera"))
    scene.collection.objects.link(carried)
    carried.parent, carried.data.sensor_width = rig, 24.89
    for frame, x, turn in ((13, -1.0, 0.0), (24, 1.0, 0.15)):
        rig.location.x, rig.rotation_euler.z = x, turn
        rig.keyframe_insert("location", frame=frame)
        rig.keyframe_insert("rotation_euler", frame=frame)
    scene.frame_set(1)
    looking_at_the_set = dolly.matrix_world.copy()
    scene.frame_set(13)
    carried.matrix_world = looking_at_the_set  # the rig carries it from there

    board = scene.cinepregen
    board.pass_resolution = RESOLUTION
    for name, (start, end) in SHOTS.items():
        shot = board.shots.add()
        shot.name, shot.frame_start, shot.frame_end = name, start, end
        shot.camera = dolly if name == "Shot A" else carried
        shot.prompt = f"{name}: a knight crosses the yard"
    shot_a, shot_b, shot_c, _ = board.shots
    shot_a.move_json = json.dumps({"kind": "dolly_zoom", "params": {"distance": 4.0}, "easing": "linear"})
    shot_a.shot_size, shot_a.notes, shot_a.seed = "LS", "hold on the gate", 7
    shot_b.move_json = json.dumps({"kind": "truck", "params": {"distance": 4.0}, "easing": "ease_in_out"})
    shot_b.notes = MANY_SCRIPTS
    clip = write_mp4(np.full((12, 72, 128, 3), 90, np.uint8), tmp / "shot_a.mp4", 24)
    take = shot_a.takes.add()
    take.clip_path, take.model, take.seed = str(clip), "previs-tiny", 11
    shot_a.result_path = str(clip)
    spec = render_passes.storyboard_shot_specs(scene)[2]
    shot_c.bundle_path = str(render_passes.render_shot_bundle(scene, spec, tmp / "bundle_c"))

    cameras = {}
    for shot in board.shots:
        for frame in range(shot.frame_start, shot.frame_end + 1):
            cameras[(shot.name, frame)] = render_passes.frame_camera(scene, shot.camera, frame, RESOLUTION)
    blend = tmp / "board.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    out = tmp / "export"
    assert cli_main(["export", str(blend), "--out", str(out), "--title", "Yard Board"]) == 0
    return {"blend": blend, "out": out, "cameras": cameras, "clip": clip}


def test_otio_timeline_has_the_shots_in_order_with_ranges_media_markers_and_metadata(exported):
    timeline = otio.adapters.read_from_file(str(exported["out"] / "Yard_Board.otio"))
    clips = list(timeline.find_clips())
    assert [c.name for c in clips] == list(SHOTS)
    for clip, (start, end) in zip(clips, SHOTS.values(), strict=True):
        assert clip.source_range.start_time.to_frames() == start
        assert clip.source_range.duration.to_frames() == end - start + 1
        assert clip.source_range.start_time.rate == 24
    assert clips[0].media_reference.target_url == exported["clip"].resolve().as_uri()
    assert all(isinstance(c.media_reference, otio.schema.MissingReference) for c in clips[1:])
    markers = [m.name for m in clips[0].markers]
    assert markers == ["move: Dolly Zoom: distance 4 m, target distance 5 m, linear", "lens: 35 -> 17.5 mm",
                       "size: Long Shot, Eye Level"]
    meta = clips[0].metadata["cinepregen"]
    assert (meta["prompt"], meta["seed"], meta["model"], meta["notes"]) == (
        "Shot A: a knight crosses the yard", 11, "previs-tiny", "hold on the gate")
    cuts = [c.range_in_parent().start_time.to_frames() for c in clips]
    assert cuts == [0, 12, 24, 27]


def test_edl_read_back_by_the_cmx_adapter_gives_the_same_events(exported):
    edl = otio.adapters.read_from_file(str(exported["out"] / "Yard_Board.edl"), adapter_name="cmx_3600", rate=24)
    source = otio.adapters.read_from_file(str(exported["out"] / "Yard_Board.otio"))
    events, shots = list(edl.find_clips()), list(source.find_clips())
    assert [e.name for e in events] == [s.name for s in shots]
    for event, shot in zip(events, shots, strict=True):
        assert event.source_range == shot.source_range
        assert event.range_in_parent() == shot.range_in_parent()
    assert events[0].media_reference.target_url == exported["clip"].resolve().as_uri()


def imported_cameras(importer) -> list:
    before = set(bpy.data.objects)
    importer()
    return [o for o in bpy.data.objects if o not in before and o.type == "CAMERA"]


def camera_error(scene, camera, shot: str, frames: range, cameras: dict) -> tuple[float, float]:
    """Largest differences over the frames: intrinsics over the image width, and world-to-camera entries."""
    k_error = e_error = 0.0
    for frame in frames:
        got, want = render_passes.frame_camera(scene, camera, frame, RESOLUTION), cameras[(shot, frame)]
        k_error = max(k_error, float(np.abs(got.K - want.K).max()) / RESOLUTION[0])
        e_error = max(e_error, float(np.abs(got.world_to_camera - want.world_to_camera).max()))
    return k_error, e_error


def test_fbx_and_usd_cameras_match_the_bundles_frame_by_frame(exported):
    bpy.ops.wm.open_mainfile(filepath=str(exported["blend"]))
    scene = bpy.context.scene
    fbx_files = sorted((exported["out"] / "cameras_fbx").glob("*.fbx"))
    assert [f.name for f in fbx_files] == ["001_Shot_A.fbx", "002_Shot_B_rig.fbx", "003_Shot_C.fbx",
                                           "004_Shot_D.fbx"]
    lenses = []
    for path, (name, (start, end)) in zip(fbx_files, SHOTS.items(), strict=True):
        # Blender's importer shifts animation by anim_offset (1 frame unless told): the file's times are absolute
        (camera,) = imported_cameras(lambda p=path: bpy.ops.import_scene.fbx(filepath=str(p), anim_offset=0))
        k_error, e_error = camera_error(scene, camera, name, range(start, end + 1), exported["cameras"])
        assert k_error < 1e-4 and e_error < 1e-4, (name, k_error, e_error)
        if name == "Shot A":
            lenses = [scene.frame_set(f) or camera.data.lens for f in (1, 12)]
    assert lenses == pytest.approx([35.0, 17.5], abs=1e-4)  # the dolly zoom's lens animation came through

    usd = exported["out"] / "Yard_Board_cameras.usda"
    text = usd.read_text()
    assert "metersPerUnit = 1" in text and "timeCodesPerSecond = 24" in text
    cameras = imported_cameras(lambda: bpy.ops.wm.usd_import(filepath=str(usd)))
    assert len(cameras) == len(SHOTS)
    by_shot = {name: next(c for c in cameras if c.name.startswith(name.replace(" ", "_").replace("/", "_")))
               for name in SHOTS}
    for name, (start, end) in SHOTS.items():
        k_error, e_error = camera_error(scene, by_shot[name], name, range(start, end + 1), exported["cameras"])
        assert k_error < 1e-4 and e_error < 1e-4, (name, k_error, e_error)


def test_storyboard_pdf_holds_every_shot_and_pages_of_key_frames(exported, tmp_path):
    pdf = exported["out"] / "Yard_Board_storyboard.pdf"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    for name in SHOTS:
        assert name in text
    for fact in ("Dolly Zoom", "hold on the gate", "viewport render shown", "35 -> 17.5 mm", MANY_SCRIPTS):
        assert fact in text
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(tmp_path / "page")], check=True)
    assert len(list(tmp_path.glob("page*.png"))) == 2  # three shots a page
    frames = sorted((exported["out"] / "storyboard_frames").glob("*.png"))
    assert len(frames) == 3 + 3 + 3 + 3
    from PIL import Image

    first = np.asarray(Image.open(frames[0]).convert("RGB"))
    assert abs(float(first.mean()) - 90) < 4  # shot A's key frames are its clip's frames
    # shot B's are Workbench renders of its camera's view, shot C's its clay pass: pictures, not blanks
    for picture in (frames[3], frames[6]):
        assert np.asarray(Image.open(picture).convert("RGB")).std() > 4, picture.name


def test_shot_list_csv_parses_with_ranges_and_timecode(exported):
    with (exported["out"] / "Yard_Board_shot_list.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["shot"] for r in rows] == list(SHOTS)
    assert [(int(r["frame_start"]), int(r["frame_end"])) for r in rows] == list(SHOTS.values())
    assert [(r["record_tc_in"], r["record_tc_out"]) for r in rows] == [
        ("00:00:00:00", "00:00:00:12"), ("00:00:00:12", "00:00:01:00"), ("00:00:01:00", "00:00:01:03"),
        ("00:00:01:03", "00:00:01:06")]
    assert rows[1]["source_tc_in"] == "00:00:00:13" and (rows[0]["lens_mm"], rows[0]["lens_end_mm"]) == ("35", "17.5")
    assert rows[0]["clip"].endswith("shot_a.mp4") and rows[1]["clip"] == ""


def test_export_mistakes_are_one_line(exported, tmp_path, capsys):
    assert cli_main(["export", str(exported["blend"]), "--out", str(tmp_path), "--formats", "otio,mov"]) == 1
    assert capsys.readouterr().err.strip() == ("cinepregen export: unknown export format mov: choose from otio, "
                                               "edl, fbx, usd, pdf, csv")
    not_blend = tmp_path / "board.txt"
    not_blend.write_text("shots")
    assert cli_main(["export", str(not_blend), "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_the_export_panel_runs_the_same_export_on_the_open_file(exported, tmp_path):
    addon, prefs = enable_addon_in_process()
    bpy.ops.wm.open_mainfile(filepath=str(exported["blend"]))
    board = bpy.context.scene.cinepregen
    board.export_folder, board.export_formats = str(tmp_path / "from_panel"), {"CSV", "OTIO"}
    prefs.python_executable = ""
    with pytest.raises(RuntimeError, match="set Backend Python in the add-on preferences"):
        bpy.ops.cinepregen.export_board()
    prefs.python_executable = sys.executable
    board.shots[0].notes = "changed after saving"  # not saved: the export must see the open file
    assert bpy.ops.cinepregen.export_board() == {"FINISHED"}
    assert board.export_status.startswith("Exporting")
    with pytest.raises(RuntimeError, match="still running"):
        bpy.ops.cinepregen.export_board()
    deadline = time.monotonic() + 120
    while addon.exports.poll_export() is not None:  # headless Blender runs no timers: tick it as Blender would
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert board.export_status == f"Exported 2 files to {tmp_path / 'from_panel'}", board.export_status
    assert board.export_progress == 1.0
    assert sorted(p.name for p in (tmp_path / "from_panel").iterdir()) == ["board.otio", "board_shot_list.csv"]
    with (tmp_path / "from_panel" / "board_shot_list.csv").open(newline="", encoding="utf-8") as f:
        assert next(csv.DictReader(f))["notes"] == "changed after saving"
    assert bpy.data.is_dirty  # the artist's file was not saved over

    board.export_formats = {"PDF"}
    bpy.context.scene.cinepregen.shots[1].camera = None
    assert bpy.ops.cinepregen.export_board() == {"FINISHED"}
    while addon.exports.poll_export() is not None:
        time.sleep(0.1)
    assert board.export_status == "cinepregen export: shot 'Shot B/rig' has no camera: pick one in the CinePreGen panel"


def test_the_storyboard_reads_only_the_fonts_its_text_needs():
    from backend.exports.storyboard_pdf import font_characters, text_fonts

    fonts = Path(bpy.utils.system_resource("DATAFILES", path="fonts"))
    assert [f.name for f in text_fonts("Shot A: the knight crosses Łódź's yard", fonts)] == ["Inter.woff2"]
    chosen = text_fonts("渡り廊下 🎬 שלום", fonts)
    assert chosen[0].name == "Inter.woff2" and len(chosen) == 4  # one font for each script Inter lacks
    assert {"Noto Sans CJK Regular.woff2", "NotoSansHebrew-Regular.woff2"} < {f.name for f in chosen}
    assert ord("🎬") in set().union(*(font_characters(f) for f in chosen))
