"""The add-on's Generate operators against a real backend on 127.0.0.1: real bpy, real Cycles passes, real clips in
the sequencer; a dead port and a refusing backend; a local backend started from Blender; and ``cinepregen render``
batching a saved storyboard through the backend.

Headless Blender runs no timers, so the tests drive the poller by calling it, as Blender's event loop would.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import bpy
import pytest
from test_server import DepthClip, LiveServer, read_mp4

import cinepregen_addon
from backend.blender.addon import enable_addon_in_process
from backend.blender.scenes import build_test_scene
from backend.cli import main as cli_main
from backend.server.app import Settings

FRAMES = 3
CLIP_SIZE = (256, 144)  # the storyboard's default pass resolution


@pytest.fixture(scope="module")
def addon():
    """The registered add-on package, with a preferences entry as installing the add-on gives it."""
    registered_here = not hasattr(bpy.types.Scene, "cinepregen")
    addon, _ = enable_addon_in_process()
    yield addon
    addon.local_backend.stop_local_backend()
    addons = bpy.context.preferences.addons
    addons.remove(addons[addon.__name__])
    if registered_here:
        cinepregen_addon.unregister()


@pytest.fixture
def prefs(addon):
    return bpy.context.preferences.addons[addon.__package__].preferences


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    clip = DepthClip()
    with LiveServer(Settings(data_dir=tmp_path_factory.mktemp("backend")), clip) as server:
        yield server, clip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def board(addon, prefs, tmp_path):
    """Two shots of one camera, back to back, saved so clips go next to the .blend; one strip of the artist's own."""
    info = build_test_scene(n_objects=2, moving=False, frame_end=2 * FRAMES)
    scene = info["scene"]
    for name, start in (("Shot A", 1), ("Shot B", FRAMES + 1)):
        shot = scene.cinepregen.shots.add()
        shot.name, shot.camera = name, bpy.data.objects[info["camera"]]
        shot.frame_start, shot.frame_end = start, start + FRAMES - 1
    editor = scene.sequence_editor_create()
    editor.strips.new_effect(name="Title", type="COLOR", channel=1, frame_start=1, length=2 * FRAMES)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "board.blend"))
    prefs.token = ""
    return scene


def settle(addon, shots, timeout: float = 90.0) -> None:
    """Tick the poller until no shot waits on the backend (the deadline only guards against a hang)."""
    deadline = time.monotonic() + timeout
    while any(shot.status in addon.jobs.ACTIVE for shot in shots):
        addon.jobs.poll_jobs()
        assert time.monotonic() < deadline, [(s.name, s.status, s.status_message) for s in shots]
        time.sleep(0.05)


def shot_strips(scene, name: str) -> list:
    return [s for s in scene.sequence_editor.strips_all if s.get("cinepregen_shot") == name]


def test_generate_imports_the_clip_and_regenerating_replaces_it(addon, prefs, backend, board, tmp_path):
    server, _ = backend
    prefs.backend_url = server.url
    shot_a, shot_b = board.cinepregen.shots
    assert bpy.ops.cinepregen.generate_shot(shot_index=0) == {"FINISHED"}
    assert shot_a.status == "QUEUED" and len(shot_a.job_id) == 32 and shot_a.bundle_path
    assert bpy.app.timers.is_registered(addon.jobs.poll_jobs)
    settle(addon, [shot_a])

    assert shot_a.status == "DONE", shot_a.status_message
    assert shot_a.progress == 1.0
    clip = Path(shot_a.result_path)
    assert clip == tmp_path / "board_cinepregen" / "Shot_A" / "clips" / shot_a.job_id / "result.mp4"
    frames = read_mp4(clip)
    assert len(frames) == FRAMES and frames[0].shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)
    (strip,) = shot_strips(board, "Shot A")
    assert strip.type == "MOVIE" and strip.name == "Shot A" and Path(strip.filepath) == clip
    assert (strip.frame_final_start, strip.frame_final_end) == (1, FRAMES + 1)
    title = board.sequence_editor.strips_all["Title"]
    assert strip.channel != title.channel and (title.channel, title.frame_final_start) == (1, 1)
    assert shot_b.status == "DRAFT" and not shot_strips(board, "Shot B")

    first_job, channel = shot_a.job_id, strip.channel
    assert bpy.ops.cinepregen.generate_shot(shot_index=0) == {"FINISHED"}
    assert shot_a.job_id != first_job
    settle(addon, [shot_a])
    assert shot_a.status == "DONE", shot_a.status_message
    (strip,) = shot_strips(board, "Shot A")
    assert Path(strip.filepath) == Path(shot_a.result_path) and shot_a.job_id in strip.filepath
    assert strip.channel == channel and (strip.frame_final_start, strip.frame_final_end) == (1, FRAMES + 1)
    assert len(board.sequence_editor.strips_all) == 2  # the artist's strip and this shot's one


def test_generate_all_queues_every_shot(addon, prefs, backend, board):
    server, _ = backend
    prefs.backend_url = server.url
    shots = list(board.cinepregen.shots)
    assert bpy.ops.cinepregen.generate_all() == {"FINISHED"}
    assert [s.status for s in shots] == ["QUEUED", "QUEUED"]
    assert len({s.job_id for s in shots}) == 2
    jobs = {job["id"]: job for job in server.http.get("/v1/jobs").json()}
    assert [jobs[s.job_id]["name"] for s in shots] == ["Shot A", "Shot B"]
    settle(addon, shots)

    assert [s.status for s in shots] == ["DONE", "DONE"], [s.status_message for s in shots]
    channels = set()
    for shot in shots:
        (strip,) = shot_strips(board, shot.name)
        assert (strip.frame_final_start, strip.frame_final_end) == (shot.frame_start, shot.frame_end + 1)
        assert Path(strip.filepath) == Path(shot.result_path)
        channels.add(strip.channel)
    assert len(channels) == 2 and 1 not in channels


def test_cancel_a_running_and_a_queued_shot(addon, prefs, backend, board):
    server, clip = backend
    prefs.backend_url = server.url
    shot_a, shot_b = board.cinepregen.shots
    clip.hold_at = 0  # the worker parks on shot A's first step
    clip.gate.clear()
    try:
        assert bpy.ops.cinepregen.generate_shot(shot_index=0) == {"FINISHED"}
        deadline = time.monotonic() + 60
        while shot_a.status != "RUNNING":
            addon.jobs.poll_jobs()
            assert time.monotonic() < deadline, shot_a.status_message
            time.sleep(0.05)
        assert bpy.ops.cinepregen.generate_shot(shot_index=1) == {"FINISHED"}
        addon.jobs.poll_jobs()
        assert shot_b.status == "QUEUED"

        assert bpy.ops.cinepregen.cancel_shot(shot_index=1) == {"FINISHED"}
        assert shot_b.status == "CANCELLED"
        assert bpy.ops.cinepregen.cancel_shot(shot_index=0) == {"FINISHED"}
        assert shot_a.status == "RUNNING" and "cancelling" in shot_a.status_message
        settle(addon, [shot_a, shot_b])
    finally:
        clip.hold_at = None
        clip.gate.set()
    assert (shot_a.status, shot_b.status) == ("CANCELLED", "CANCELLED")
    assert server.http.get(f"/v1/jobs/{shot_a.job_id}").json()["status"] == "cancelled"
    assert not shot_strips(board, "Shot A") and not shot_strips(board, "Shot B")
    assert bpy.ops.cinepregen.cancel_shot(shot_index=0) == {"CANCELLED"}  # nothing left to cancel


def test_dead_backend_gives_a_clear_message_and_no_hang(addon, prefs, board):
    url = f"http://127.0.0.1:{free_port()}"
    prefs.backend_url = url
    shot_a, shot_b = board.cinepregen.shots
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=f"no backend running at {url}"):
        bpy.ops.cinepregen.generate_shot(shot_index=0)
    assert time.monotonic() - started < 15  # a hang guard, not a speed test
    assert shot_a.status == "FAILED" and f"no backend running at {url}" in shot_a.status_message
    assert "cinepregen serve" in shot_a.status_message and not shot_a.job_id
    assert shot_a.bundle_path == ""  # nothing was rendered for a backend that is not there
    with pytest.raises(RuntimeError, match="no backend running"):
        bpy.ops.cinepregen.generate_all()
    assert "no backend running" in shot_b.status_message
    with pytest.raises(RuntimeError, match="no backend running"):
        bpy.ops.cinepregen.check_backend()

    # The backend goes away while a shot waits: the shot keeps waiting and says why.
    shot_b.status, shot_b.job_id = "QUEUED", "0" * 32
    assert addon.jobs.poll_jobs() == addon.jobs.RETRY_INTERVAL
    assert shot_b.status == "QUEUED" and shot_b.status_message.startswith("waiting for the backend: no backend")

    prefs.backend_url = "localhost:8765"
    with pytest.raises(RuntimeError, match="backend URL must look like"):
        bpy.ops.cinepregen.check_backend()
    if not bpy.app.online_access:  # headless Blender is offline: another machine is refused before any request
        prefs.backend_url = "http://192.0.2.1:8765"
        with pytest.raises(RuntimeError, match="online access is off"):
            bpy.ops.cinepregen.generate_shot(shot_index=0)


def test_refusing_backend_and_token(addon, prefs, board, tmp_path):
    shot_a = board.cinepregen.shots[0]
    with LiveServer(Settings(data_dir=tmp_path / "data", token="s3cret-of-sixteen+"), DepthClip()) as server:
        prefs.backend_url = server.url
        with pytest.raises(RuntimeError, match="HTTP 401: this backend needs a token"):
            bpy.ops.cinepregen.generate_shot(shot_index=0)
        assert shot_a.status == "FAILED" and "needs a token" in shot_a.status_message
        prefs.token = "s3cret-of-sixteen+"
        assert bpy.ops.cinepregen.check_backend() == {"FINISHED"}
        assert bpy.ops.cinepregen.generate_shot(shot_index=0) == {"FINISHED"}
        settle(addon, [shot_a])
        assert shot_a.status == "DONE", shot_a.status_message
        # a job the backend does not know (its data folder was reset) fails the shot with the reason
        shot_a.status, shot_a.job_id = "RUNNING", "f" * 32
        addon.jobs.poll_jobs()
        assert shot_a.status == "FAILED" and "has no job" in shot_a.status_message


def test_polling_resumes_when_a_file_with_waiting_shots_is_opened(addon, board, tmp_path):
    shot = board.cinepregen.shots[0]
    shot.status, shot.job_id = "QUEUED", "a" * 32
    bpy.ops.wm.save_mainfile()
    if bpy.app.timers.is_registered(addon.jobs.poll_jobs):
        bpy.app.timers.unregister(addon.jobs.poll_jobs)
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "board.blend"))
    assert bpy.app.timers.is_registered(addon.jobs.poll_jobs)
    assert [s.job_id for s in addon.jobs.active_shots()[0][0].cinepregen.shots] == ["a" * 32, ""]


def test_start_local_backend(addon, prefs, tmp_path):
    prefs.backend_url = f"http://127.0.0.1:{free_port()}"
    prefs.python_executable = sys.executable
    prefs.data_folder = str(tmp_path / "local")
    try:
        assert bpy.ops.cinepregen.start_backend() == {"FINISHED"}
        with pytest.raises(RuntimeError, match="still running"):
            bpy.ops.cinepregen.start_backend()
        deadline = time.monotonic() + 60
        while True:
            try:
                bpy.ops.cinepregen.check_backend()
                break
            except RuntimeError:
                assert time.monotonic() < deadline, (tmp_path / "local" / "backend.log").read_text()
                time.sleep(0.25)
        assert (tmp_path / "local" / "jobs.sqlite").is_file()
    finally:
        addon.local_backend.stop_local_backend()
    prefs.python_executable = str(tmp_path / "no-python")
    with pytest.raises(RuntimeError, match="set Backend Python"):
        bpy.ops.cinepregen.start_backend()
    prefs.backend_url = "http://192.0.2.1:8765"
    with pytest.raises(RuntimeError, match="listens on 127.0.0.1"):
        bpy.ops.cinepregen.start_backend()


def test_render_command_batches_the_board_through_the_backend(addon, backend, board, tmp_path, capsys):
    server, _ = backend
    blend = tmp_path / "board.blend"
    out = tmp_path / "batch"
    assert cli_main(["render", str(blend), "--shots", "Nope", "--out", str(out), "--backend", server.url]) == 1
    assert "no shot named Nope" in capsys.readouterr().err

    assert cli_main(["render", str(blend), "--out", str(out), "--backend", server.url, "--steps", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["shots"]] == ["Shot A", "Shot B"]
    for record, folder in zip(summary["shots"], ("Shot_A", "Shot_B"), strict=True):
        assert "error" not in record and record["mp4"] == str(out / f"{folder}.mp4")
        assert len(read_mp4(out / f"{folder}.mp4")) == FRAMES
        assert record["metrics"]["frames"] == FRAMES and record["timings"]["model"]["steps"] == 2
        assert (out / "bundles" / folder / "shot.json").is_file()

    # a second run into the same folder replaces the first
    assert cli_main(["render", str(blend), "--shots", "Shot A", "--out", str(out), "--backend", server.url]) == 0
    assert len(json.loads((out / "summary.json").read_text())["shots"]) == 1

    dead = f"http://127.0.0.1:{free_port()}"
    assert cli_main(["render", str(blend), "--out", str(out), "--backend", dead]) == 1
    assert f"no backend running at {dead}" in capsys.readouterr().err


def test_render_command_generates_in_process(addon, board, tmp_path):
    from backend.models.previs_dit import PrevisDiT
    from backend.models.reference_encoder import ReferenceEncoder
    from backend.pipelines.previs_pipeline import PrevisPipeline

    encoder = ReferenceEncoder(reference_dim=32, width=16, num_heads=2)
    weights = PrevisPipeline(PrevisDiT.from_preset("tiny-test"), encoder).save_pretrained(tmp_path / "weights")
    out = tmp_path / "here"
    blend = tmp_path / "board.blend"
    assert cli_main(["render", str(blend), "--shots", "Shot B", "--out", str(out), "--weights", str(weights),
                     "--steps", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    (record,) = summary["shots"]
    assert summary["backend"] == "in-process" and record["name"] == "Shot B" and "error" not in record
    frames = read_mp4(out / "Shot_B.mp4")
    assert len(frames) == FRAMES and frames[0].shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)
    assert record["metrics"]["steps"] == 1 and record["metrics"]["weights"] == weights.name

    # without weights, the shot fails with the reason and the command says so in its exit code
    assert cli_main(["render", str(blend), "--shots", "Shot A", "--out", str(out), "--weights",
                     str(tmp_path / "none")]) == 1
    (record,) = json.loads((out / "summary.json").read_text())["shots"]
    assert record["error"].startswith("FileNotFoundError: no model folder at")


def test_preferences_draw_names_real_properties_and_operators(addon, prefs):
    from test_addon import RecordingLayout

    log = []
    sys.modules[f"{addon.__package__}.preferences"].draw_preferences(RecordingLayout(log), prefs)
    assert {("operator", "cinepregen.check_backend"), ("operator", "cinepregen.start_backend")} <= set(log)
    assert {("prop", name) for name in ("backend_url", "token", "python_executable", "data_folder")} <= set(log)
    assert prefs.bl_rna.properties["token"].subtype == "PASSWORD"
    assert prefs.bl_rna.properties["backend_url"].default == "http://127.0.0.1:8765"


def test_generate_after_a_change_re_renders_the_bundle(addon, prefs, backend, board):
    """Generate reuses a bundle only while nothing that goes into it changed: a new seed, prompt or camera move makes
    it render the passes again, so the uploaded bundle holds what the artist sees."""
    from cinepregen_addon.core.shot_bundle import read_bundle

    server, _ = backend
    prefs.backend_url = server.url
    shot = board.cinepregen.shots[0]
    assert bpy.ops.cinepregen.generate_shot(shot_index=0) == {"FINISHED"}
    settle(addon, [shot])
    first = read_bundle(shot.bundle_path)
    rendered = Path(shot.bundle_path, "shot.json").stat().st_mtime_ns

    assert bpy.ops.cinepregen.generate_shot(shot_index=0) == {"FINISHED"}  # nothing changed: the same bundle
    settle(addon, [shot])
    assert Path(shot.bundle_path, "shot.json").stat().st_mtime_ns == rendered

    shot.seed, shot.prompt = 99, "the hero leaves"
    shot.camera.location.x += 0.5
    assert bpy.ops.cinepregen.generate_shot(shot_index=0) == {"FINISHED"}
    settle(addon, [shot])
    again = read_bundle(shot.bundle_path)
    assert (again.seed, again.prompt) == (99, "the hero leaves") != (first.seed, first.prompt)
    moved = again.cameras[0].world_to_camera[:3, 3] - first.cameras[0].world_to_camera[:3, 3]
    assert abs(moved).max() > 0.1  # the new camera, not the old one


def test_shots_whose_names_clean_up_alike_keep_their_own_bundles(addon, board):
    """'Scene 1 / Shot A' and 'Scene_1_Shot_A' both clean up to Scene_1_Shot_A: each gets a folder of its own, and a
    bundle folder that holds another shot now (a rename, a copied .blend) is rendered again, never sent as this one."""
    from cinepregen_addon import bundles, jobs
    from cinepregen_addon.core.shot_bundle import read_bundle

    first, second = board.cinepregen.shots[0], board.cinepregen.shots[1]
    first.name, second.name = "Scene 1 / Shot A", "Scene_1_Shot_A"
    names = {jobs.shot_folder(first).name, jobs.shot_folder(second).name}
    assert len(names) == 2 and all(name.startswith("Scene_1_Shot_A-") for name in names), names
    folders = [bundles.shot_bundle_folder(board, i) for i in (0, 1)]
    assert [read_bundle(f).name for f in folders] == ["Scene 1 / Shot A", "Scene_1_Shot_A"]
    second.bundle_path = first.bundle_path  # points at the other shot's bundle, with its own (fresh) fingerprint
    assert bundles.fresh_bundle(board, 1, bundles.shot_fingerprint(board, 1)) is None
    assert bundles.fresh_bundle(board, 0, bundles.shot_fingerprint(board, 0)) == folders[0]


def test_shot_names_stay_unique(addon, board):
    scene = board
    from cinepregen_addon import shots

    names = [s.name for s in scene.cinepregen.shots]
    a = shots.add_shot(scene)
    b = shots.add_shot(scene)
    shots.remove_shot(scene, len(scene.cinepregen.shots) - 2)  # remove the first of the two, then add again
    c = shots.add_shot(scene)
    all_names = [s.name for s in scene.cinepregen.shots]
    assert len(set(all_names)) == len(all_names), all_names
    del a, b, c
    scene.cinepregen.shots[-1].name = names[0]  # renamed onto another shot's name
    assert scene.cinepregen.shots[-1].name == f"{names[0]}.001"
    assert shots.add_shot(scene, names[1]).name == f"{names[1]}.001"


def test_a_dead_backend_leaves_a_finished_shot_finished(addon, prefs, backend, board):
    server, _ = backend
    prefs.backend_url = server.url
    shot = board.cinepregen.shots[0]
    assert bpy.ops.cinepregen.generate_shot(shot_index=0) == {"FINISHED"}
    settle(addon, [shot])
    assert shot.status == "DONE"
    clip = shot.result_path
    prefs.backend_url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError, match="no backend running"):
        bpy.ops.cinepregen.generate_shot(shot_index=0)
    assert shot.status == "DONE" and shot.result_path == clip and "kept" in shot.status_message
    assert shot_strips(board, shot.name)
    with pytest.raises(RuntimeError, match="no backend running"):
        bpy.ops.cinepregen.generate_all()
    assert shot.status == "DONE"


def test_passes_render_frame_by_frame_on_a_timer_then_the_shot_is_sent(addon, prefs, backend, board):
    """What Generate does in Blender's UI: one frame per timer tick (progress shown, the UI free between ticks);
    at the end the bundle goes to the backend. Cancel in the middle stops it and puts the render settings back."""
    server, _ = backend
    prefs.backend_url = server.url
    shot = board.cinepregen.shots[1]
    engine, override = board.render.engine, board.view_layers[0].material_override
    addon.bundles.start_render(board, 1, submit=True)
    assert shot.status == "RENDERING" and bpy.app.timers.is_registered(addon.bundles.render_tick)
    seen = []
    while addon.bundles.render_tick() is not None:
        seen.append(shot.progress)
    assert len(seen) >= 2 * FRAMES - 1 and seen == sorted(seen)  # a tick per frame and stage, progress rising
    assert shot.status == "QUEUED" and shot.job_id
    settle(addon, [shot])
    assert shot.status == "DONE", shot.status_message

    shot.seed += 1  # the passes are stale now: Generate renders again, and this time the artist cancels
    addon.bundles.start_render(board, 1, submit=True)
    addon.bundles.render_tick()
    assert board.render.engine == "CYCLES"  # mid-render the pass settings are in force ...
    assert bpy.ops.cinepregen.cancel_shot(shot_index=1) == {"FINISHED"}
    assert shot.status == "CANCELLED" and addon.bundles.render_tick() is None
    assert (board.render.engine, board.view_layers[0].material_override) == (engine, override)  # ... and undone


def test_model_picker_steps_and_takes(addon, prefs, backend, board):
    """Check Backend lists the backend's models on the board; a job carries the chosen model and steps; every clip
    becomes a take; an earlier take goes back into the sequencer and any take opens as a movie image."""
    server, _ = backend
    prefs.backend_url = server.url
    board_props = board.cinepregen
    assert bpy.ops.cinepregen.check_backend() == {"FINISHED"}
    names = [m.name for m in board_props.models]
    assert names[0] == "previs-tiny" and "previs-tiny-vq3" in names
    vq3 = board_props.models["previs-tiny-vq3"]
    assert vq3.quantization.endswith("bits/weight") and vq3.family == "previs" and not vq3.reads_prompt
    assert shots_module(addon).suggested_length(board_props) == vq3.default_frames == 48
    board_props.model, board_props.steps = "previs-tiny-vq3", 3
    shot = board_props.shots[0]
    takes = []
    for seed in (4, 5):
        shot.seed = seed
        assert bpy.ops.cinepregen.generate_shot(shot_index=0) == {"FINISHED"}
        job = server.http.get(f"/v1/jobs/{shot.job_id}").json()
        assert job["settings"]["model"] == "previs-tiny-vq3" and job["settings"]["steps"] == 3
        settle(addon, [shot])
        assert shot.status == "DONE", shot.status_message
        takes.append(shot.result_path)
    assert [t.clip_path for t in shot.takes] == takes and [t.seed for t in shot.takes] == [4, 5]
    assert shot.takes[0].model == "previs-tiny-vq3" and shot.takes[0].steps == 3 and shot.active_take_index == 1
    shot.active_take_index = 0
    assert bpy.ops.cinepregen.use_take(shot_index=0) == {"FINISHED"}
    (strip,) = shot_strips(board, shot.name)
    assert Path(strip.filepath) == Path(takes[0]) == Path(shot.result_path)
    assert bpy.ops.cinepregen.preview_take(shot_index=0) == {"FINISHED"}
    image = next(i for i in bpy.data.images if Path(bpy.path.abspath(i.filepath)) == Path(takes[0]))
    assert image.source == "MOVIE" and image.frame_duration == FRAMES
    board_props.model = "previs-gone"  # a model the backend no longer serves is refused with its name
    with pytest.raises(RuntimeError, match="no model 'previs-gone'"):
        bpy.ops.cinepregen.generate_shot(shot_index=1)
    assert bpy.ops.cinepregen.check_backend() == {"FINISHED"} and board_props.model == ""


def shots_module(addon):
    return sys.modules[f"{addon.__name__}.shots"]
