"""Generate: a shot's bundle goes to the backend, a timer follows the job, the clip lands in the sequencer.

Blender must never freeze on the network: every request has the client's short timeout, and jobs are followed
by one ``bpy.app.timers`` callback (``poll_jobs``) that asks the backend once per tick for all its jobs. The
timer keeps no bpy references between ticks; it finds the shots to follow by their status (QUEUED, RUNNING) and
job id, so it survives undo, file loads and a backend restart (jobs outlive it). A backend that is down or
refuses becomes a sentence in the operator's report and the shot's ``status_message``, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import traceback
import urllib.parse
from collections.abc import Generator
from pathlib import Path

import bpy
from bpy.props import IntProperty

from . import render_passes
from .core import shot_bundle
from .core.backend_client import BackendClient, BackendError
from .preferences import BackendSettings, backend_settings, local_data_folder

POLL_INTERVAL = 0.5
RETRY_INTERVAL = 2.0  # while the backend does not answer
QUICK_TIMEOUT = 2.0
ACTIVE = ("QUEUED", "RUNNING")  # waiting on the backend
STATUS_FROM_JOB = {"queued": "QUEUED", "running": "RUNNING", "done": "DONE", "failed": "FAILED",
                   "cancelled": "CANCELLED"}
STRIP_SHOT_PROPERTY = "cinepregen_shot"
MAX_CHANNELS = 128
START_HINT = "start it with 'cinepregen serve' or Start Local Backend in the add-on preferences"

_local_backend: subprocess.Popen | None = None


# --- where things go ----------------------------------------------------------------------------------------------

def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "shot"


def shot_folder(shot) -> Path:
    """A shot's bundle and clips: next to the saved .blend, or in the temp folder for an unsaved file."""
    if bpy.data.filepath:
        blend = Path(bpy.data.filepath)
        root = blend.parent / f"{blend.stem}_cinepregen"
    else:
        root = Path(tempfile.gettempdir()) / "cinepregen"
    return root / safe_name(shot.name)


def client_for(settings: BackendSettings, timeout: float = QUICK_TIMEOUT) -> BackendClient:
    """The backend client; a malformed URL in the preferences becomes a ``BackendError`` like any other problem.

    A backend on this machine is always allowed; one on another machine only when Blender may go online.
    """
    try:
        client = BackendClient(settings.url, settings.token or None, timeout=timeout)
    except ValueError as error:
        raise BackendError(f"{error} (add-on preferences > Backend URL)") from None
    host = urllib.parse.urlsplit(client.url).hostname or ""
    if not (host in ("localhost", "::1") or host.startswith("127.")) and not bpy.app.online_access:
        raise BackendError(f"{client.url} is on another machine and Blender's online access is off "
                           "(Preferences > System > Network > Allow Online Access)")
    return client


def explain(error: BackendError) -> str:
    message = str(error)
    return f"{message}; {START_HINT}" if error.status is None and "no backend running" in message else message


# --- queueing ---------------------------------------------------------------------------------------------------

def render_bundle(scene, index: int, progress: render_passes.ProgressFn | None = None,
                  fingerprint: str | None = None) -> Path:
    """Render the shot's guidance passes into its bundle folder (replacing an earlier one) and point the shot at it."""
    return render_passes.run_steps(bundle_render_steps(scene, index, fingerprint), progress)


def shot_fingerprint(scene, index: int) -> str:
    """``render_passes.bundle_fingerprint`` of the shot as the storyboard would render it now."""
    return render_passes.bundle_fingerprint(scene, render_passes.storyboard_shot_specs(scene)[index])


def bundle_render_steps(scene, index: int, fingerprint: str | None = None) -> Generator[tuple[float, str], None, Path]:
    """The shot's pass render one frame per step (``render_passes.render_shot_bundle_steps``); when it is done the
    shot points at its new bundle and remembers what it was rendered from (``fingerprint``, computed here unless
    the caller has it already)."""
    shot = scene.cinepregen.shots[index]
    spec = render_passes.storyboard_shot_specs(scene)[index]
    fingerprint = fingerprint or render_passes.bundle_fingerprint(scene, spec)
    target = shot_folder(shot) / "bundle"
    if (target / "shot.json").is_file():
        shutil.rmtree(target)
    folder = yield from render_passes.render_shot_bundle_steps(scene, spec, target)
    shot = scene.cinepregen.shots[index]  # the collection may have been reallocated meanwhile
    shot.bundle_path = str(folder)
    shot.bundle_fingerprint = fingerprint
    shot.status, shot.status_message = "PASSES_READY", f"bundle in {folder}"
    return folder


def fresh_bundle(scene, index: int, fingerprint: str) -> Path | None:
    """The shot's bundle folder when it was rendered from the same inputs (``fingerprint``: camera, move, seed,
    prompt, objects, references, ...), else None."""
    shot = scene.cinepregen.shots[index]
    existing = Path(bpy.path.abspath(shot.bundle_path)) if shot.bundle_path else None
    if existing is not None and (existing / "shot.json").is_file() and shot.bundle_fingerprint == fingerprint:
        return existing
    return None


def shot_bundle_folder(scene, index: int, progress: render_passes.ProgressFn | None = None) -> Path:
    """The shot's bundle folder, rendering its guidance passes first when there is none fresh; the fingerprint,
    a pass over every frame of the shot, is computed once for both."""
    fingerprint = shot_fingerprint(scene, index)
    return fresh_bundle(scene, index, fingerprint) or render_bundle(scene, index, progress, fingerprint)


def submit_bundle(scene, index: int, client: BackendClient, folder: Path) -> str:
    """Zip and submit a shot's bundle; the shot becomes QUEUED with its job id."""
    shot = scene.cinepregen.shots[index]
    shot_folder(shot).mkdir(parents=True, exist_ok=True)
    zip_path = shot_bundle.zip_bundle(folder, shot_folder(shot) / "bundle.zip")
    job_id = client.submit(zip_path)
    shot.job_id = job_id
    shot.status = "QUEUED"
    shot.progress = 0.0
    shot.status_message = f"queued on {client.url}"
    ensure_polling()
    return job_id


def queue_shot(scene, index: int, client: BackendClient, progress: render_passes.ProgressFn | None = None) -> str:
    """Render (if needed), zip and submit one shot, all at once (scripts, batch jobs, headless Blender)."""
    return submit_bundle(scene, index, client, shot_bundle_folder(scene, index, progress))


# --- rendering passes without freezing Blender --------------------------------------------------------------------

_renders: list[dict] = []  # shots whose passes render one frame per timer tick, oldest first


def start_render(scene, index: int, submit: bool) -> None:
    """Render the shot's passes one frame per timer tick (Blender stays responsive and shows progress), then,
    with ``submit``, send it to the backend. A fresh bundle is sent at once."""
    shot = scene.cinepregen.shots[index]
    if any(job["scene"] == scene.name and job["shot"] == shot.name for job in _renders):
        raise ValueError(f"{shot.name}: its passes are already rendering")
    fingerprint = shot_fingerprint(scene, index)
    folder = fresh_bundle(scene, index, fingerprint)
    if folder is not None:
        if submit:
            submit_bundle(scene, index, client_for(backend_settings(bpy.context)), folder)
        return
    _renders.append({"scene": scene.name, "shot": shot.name, "submit": submit,
                     "steps": bundle_render_steps(scene, index, fingerprint)})
    shot.status, shot.status_message, shot.progress = "RENDERING", "rendering guidance passes", 0.0
    if not bpy.app.timers.is_registered(render_tick):
        bpy.app.timers.register(render_tick, first_interval=0.01)


def _find_shot(job: dict):
    scene = bpy.data.scenes.get(job["scene"])
    shots = scene.cinepregen.shots if scene is not None and getattr(scene, "cinepregen", None) else []
    index = next((i for i, shot in enumerate(shots) if shot.name == job["shot"]), None)
    return (scene, index) if index is not None else (None, None)


def render_tick() -> float | None:
    """The timer: one frame of the oldest pending pass render; at its end, the shot is submitted (or ready)."""
    if not _renders:
        return None
    job = _renders[0]
    scene, index = _find_shot(job)
    if scene is None:  # the shot or its scene is gone: stop its render, its settings are put back
        job["steps"].close()
        _renders.pop(0)
        return 0.0 if _renders else None
    shot = scene.cinepregen.shots[index]
    try:
        fraction, stage = next(job["steps"])
        shot.progress, shot.status_message = fraction, f"{stage} ({fraction:.0%})"
    except StopIteration as finished:
        _renders.pop(0)
        if job["submit"]:
            try:
                submit_bundle(scene, index, client_for(backend_settings(bpy.context)), finished.value)
            except (BackendError, ValueError, OSError) as error:
                _fail(shot, explain(error) if isinstance(error, BackendError) else str(error))
    except Exception as error:  # a renderer failure reaches the artist as the shot's message, not a traceback
        _renders.pop(0)
        traceback.print_exc()
        _fail(shot, f"rendering the guidance passes failed: {error}")
    _redraw()
    return 0.0 if _renders else None


def cancel_render(scene, shot) -> bool:
    """Stop the shot's pass render if one is pending; True when there was one."""
    for job in list(_renders):
        if job["scene"] == scene.name and job["shot"] == shot.name:
            job["steps"].close()
            _renders.remove(job)
            shot.status, shot.status_message = "CANCELLED", "pass render cancelled"
            return True
    return False


def _fail(shot, message: str) -> None:
    shot.status = "FAILED"
    shot.status_message = message


def _fail_or_keep_result(shot, message: str) -> None:
    """A new take that could not even be queued leaves a finished shot finished: its clip is still in the
    sequencer; only the message says what went wrong."""
    if shot.status == "DONE" and shot.result_path:
        shot.status_message = f"not generated again: {message} (the clip from job {shot.job_id} is kept)"
    else:
        _fail(shot, message)


# --- following jobs -----------------------------------------------------------------------------------------------

def active_shots() -> list[tuple[bpy.types.Scene, object]]:
    """Every shot of every scene that waits for a backend job."""
    found = []
    for scene in bpy.data.scenes:
        board = getattr(scene, "cinepregen", None)
        for shot in board.shots if board is not None else ():
            if shot.status in ACTIVE and shot.job_id:
                found.append((scene, shot))
    return found


def poll_jobs() -> float | None:
    """The timer: one request for all jobs, then each followed shot is brought up to date.

    Returns the delay to the next tick, or None (the timer stops) when no shot waits any more.
    """
    active = active_shots()
    if not active:
        return None
    try:
        client = client_for(backend_settings(bpy.context))
        jobs = {job["id"]: job for job in client.list_jobs()}
    except BackendError as error:
        for _, shot in active:
            shot.status_message = f"waiting for the backend: {explain(error)}"
        _redraw()
        return RETRY_INTERVAL
    for scene, shot in active:
        try:
            _follow(scene, shot, jobs.get(shot.job_id), client)
        except Exception as error:  # a timer that raises is dropped by Blender: keep following the other shots
            traceback.print_exc()
            _fail(shot, f"could not update the shot: {type(error).__name__}: {error}")
    _redraw()
    return POLL_INTERVAL if active_shots() else None


def _follow(scene, shot, job: dict | None, client: BackendClient) -> None:
    if job is None:
        _fail(shot, f"the backend at {client.url} has no job {shot.job_id} (was its data folder reset?)")
        return
    status = STATUS_FROM_JOB.get(job["status"], "FAILED")
    shot.progress = float(job.get("progress") or 0.0)
    if status == "DONE":
        _finish(scene, shot, client)
    elif status == "FAILED":
        _fail(shot, f"generation failed: {job.get('error') or 'no reason given'}")
    elif status == "CANCELLED":
        shot.status, shot.status_message = "CANCELLED", "cancelled"
    else:
        shot.status = status
        stage = job.get("stage") or job["status"]
        shot.status_message = f"{stage} ({shot.progress:.0%})" if status == "RUNNING" else "queued"


def _finish(scene, shot, client: BackendClient) -> None:
    """Download the clip into the shot's folder (one folder per job) and put it in the sequencer."""
    dest = shot_folder(shot) / "clips" / shot.job_id
    try:
        clip = client.download(shot.job_id, dest)[0]
    except BackendError as error:
        if error.status is None:  # not reachable right now: try again on the next tick
            shot.status_message = f"downloading the clip: {explain(error)}"
        else:
            _fail(shot, f"could not download the clip: {error}")
        return
    strip = place_clip(scene, shot, clip)
    shot.result_path = str(clip)
    shot.status = "DONE"
    shot.progress = 1.0
    shot.status_message = f"clip on channel {strip.channel}, frames {shot.frame_start}-{shot.frame_end}"


def place_clip(scene, shot, clip_path: Path):
    """A movie strip named after the shot at its frame range, replacing the shot's previous clip on its channel.

    A shot that has no strip yet gets an empty channel, so its clip never pushes the artist's own strips around.
    """
    editor = scene.sequence_editor or scene.sequence_editor_create()
    previous = [s for s in editor.strips if s.get(STRIP_SHOT_PROPERTY) == shot.name]
    if previous:
        channel = previous[0].channel
    else:
        used = {s.channel for s in editor.strips}
        channel = next((c for c in range(1, MAX_CHANNELS + 1) if c not in used), None)
        if channel is None:
            raise ValueError(f"every one of the sequencer's {MAX_CHANNELS} channels already holds strips")
    for strip in previous:
        editor.strips.remove(strip)
    strip = editor.strips.new_movie(name=shot.name, filepath=str(clip_path), channel=channel,
                                    frame_start=shot.frame_start, fit_method="FIT")
    length = shot.frame_end - shot.frame_start + 1
    if strip.frame_final_duration > length:
        strip.frame_final_duration = length
    strip[STRIP_SHOT_PROPERTY] = shot.name
    return strip


def _redraw() -> None:
    if bpy.app.background:
        return
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "SEQUENCE_EDITOR"}:
                area.tag_redraw()


def ensure_polling() -> None:
    if not bpy.app.timers.is_registered(poll_jobs):
        bpy.app.timers.register(poll_jobs, first_interval=POLL_INTERVAL, persistent=True)


@bpy.app.handlers.persistent
def _resume_after_load(*_args) -> None:
    """A .blend saved while jobs ran is followed again as soon as it is opened."""
    if active_shots():
        ensure_polling()


def register_timers() -> None:
    if _resume_after_load not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(_resume_after_load)
    if active_shots():
        ensure_polling()


def unregister_timers() -> None:
    if _resume_after_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_resume_after_load)
    if bpy.app.timers.is_registered(poll_jobs):
        bpy.app.timers.unregister(poll_jobs)
    if bpy.app.timers.is_registered(render_tick):
        bpy.app.timers.unregister(render_tick)
    for job in _renders:
        job["steps"].close()
    _renders.clear()
    stop_local_backend()


# --- a local backend ----------------------------------------------------------------------------------------------

def start_local_backend(settings: BackendSettings) -> tuple[subprocess.Popen, Path]:
    """Spawn ``<python> -m backend.cli serve`` on the preferences' loopback port; returns (process, log file)."""
    global _local_backend
    parsed = urllib.parse.urlsplit(settings.url.strip())
    host, port = parsed.hostname or "", parsed.port or 8765
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"a local backend listens on 127.0.0.1; the Backend URL is {settings.url!r}")
    if _local_backend is not None and _local_backend.poll() is None:
        raise ValueError(f"the local backend started from Blender is still running (pid {_local_backend.pid})")
    try:
        client_for(settings).health()
        raise ValueError(f"a backend already answers at {settings.url}")
    except BackendError:
        pass
    if not settings.python or not Path(settings.python).is_file():
        raise ValueError("set Backend Python in the add-on preferences to the python of an environment with the "
                         f"cinepregen backend installed (got {settings.python!r})")
    data = local_data_folder(settings)
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / "backend.log"
    env = dict(os.environ)
    if settings.token:
        env["CINEPREGEN_TOKEN"] = settings.token  # not on the command line, where other users could read it
    command = [settings.python, "-m", "backend.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data", str(data)]
    with open(log_path, "ab") as log:
        _local_backend = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=data, env=env, start_new_session=True)
    return _local_backend, log_path


def stop_local_backend(timeout: float = 10.0) -> None:
    """Stop the backend this Blender session started, if any (the add-on is being disabled)."""
    global _local_backend
    process, _local_backend = _local_backend, None
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- operators ----------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def cursor_progress(context):
    """Pass rendering blocks the UI; the cursor shows how far it is."""
    wm = context.window_manager
    wm.progress_begin(0, 100)
    try:
        yield lambda fraction, stage: wm.progress_update(int(100 * fraction))
    finally:
        wm.progress_end()


class ShotOperatorMixin:
    """Operators on one shot: ``shot_index`` or, when -1, the storyboard's active shot."""

    shot_index: IntProperty(name="Shot", description="Shot index (-1: the active shot)", default=-1, min=-1)

    @classmethod
    def poll(cls, context):
        board = getattr(context.scene, "cinepregen", None)
        return board is not None and len(board.shots) > 0

    def shot_index_in(self, scene) -> int:
        board = scene.cinepregen
        index = board.active_shot_index if self.shot_index < 0 else self.shot_index
        if not 0 <= index < len(board.shots):
            raise ValueError(f"no shot {index} (the storyboard has {len(board.shots)})")
        return index


class CINEPREGEN_OT_check_backend(bpy.types.Operator):
    """Ask the backend which model it runs and how many jobs wait"""

    bl_idname = "cinepregen.check_backend"
    bl_label = "Check Backend"

    def execute(self, context):
        settings = backend_settings(context)
        try:
            health = client_for(settings).health()
        except BackendError as error:
            self.report({"ERROR"}, explain(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"backend at {settings.url}: {health.get('model')} on {health.get('device')}, "
                              f"{health.get('queue_length', 0)} job(s) queued")
        return {"FINISHED"}


class CINEPREGEN_OT_start_backend(bpy.types.Operator):
    """Start a local backend (cinepregen serve) with the Python set in the preferences, without waiting for it"""

    bl_idname = "cinepregen.start_backend"
    bl_label = "Start Local Backend"

    def execute(self, context):
        settings = backend_settings(context)
        try:
            process, log_path = start_local_backend(settings)
        except (ValueError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"starting the backend at {settings.url} (pid {process.pid}, log {log_path}); "
                              "Check Backend tells when it answers")
        return {"FINISHED"}


class CINEPREGEN_OT_generate_shot(ShotOperatorMixin, bpy.types.Operator):
    """Send the shot to the backend, rendering its guidance passes first when they changed; the clip arrives in the sequencer at the shot's frames"""  # noqa: E501  (one line: Blender shows a docstring's newlines in the tooltip)

    bl_idname = "cinepregen.generate_shot"
    bl_label = "Generate Shot"

    def execute(self, context):
        scene = context.scene
        try:
            index = self.shot_index_in(scene)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        shot = scene.cinepregen.shots[index]
        if shot.status in ACTIVE and shot.job_id:
            self.report({"WARNING"}, f"{shot.name} is already {shot.status.lower()} (job {shot.job_id})")
            return {"CANCELLED"}
        try:
            client = client_for(backend_settings(context))
            client.health()
            if not bpy.app.background:  # Blender stays responsive: the passes render frame by frame
                start_render(scene, index, submit=True)
                self.report({"INFO"}, f"{shot.name}: {shot.status_message or 'rendering guidance passes'}")
                return {"FINISHED"}
            with cursor_progress(context) as progress:
                job_id = queue_shot(scene, index, client, progress)
        except (BackendError, ValueError, OSError) as error:
            message = explain(error) if isinstance(error, BackendError) else str(error)
            _fail_or_keep_result(shot, message)
            self.report({"ERROR"}, f"{shot.name}: {message}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{shot.name}: queued as job {job_id}")
        return {"FINISHED"}


class CINEPREGEN_OT_generate_all(bpy.types.Operator):
    """Queue every shot of the storyboard on the backend (shots already queued or running are left alone)"""

    bl_idname = "cinepregen.generate_all"
    bl_label = "Generate All Shots"

    @classmethod
    def poll(cls, context):
        return ShotOperatorMixin.poll(context)

    def execute(self, context):
        scene = context.scene
        shots = scene.cinepregen.shots
        try:
            client = client_for(backend_settings(context))
            client.health()
        except BackendError as error:
            for shot in shots:
                if shot.status not in ACTIVE:
                    shot.status_message = explain(error)
            self.report({"ERROR"}, explain(error))
            return {"CANCELLED"}
        queued, failed = [], []
        with cursor_progress(context) as progress:
            for index, shot in enumerate(shots):
                if (shot.status in ACTIVE and shot.job_id) or shot.status == "RENDERING":
                    continue
                try:
                    if bpy.app.background:
                        queue_shot(scene, index, client, progress)
                    else:  # each shot's passes render frame by frame, one shot after the other
                        start_render(scene, index, submit=True)
                    queued.append(shot.name)
                except (BackendError, ValueError, OSError) as error:
                    _fail_or_keep_result(shot, explain(error) if isinstance(error, BackendError) else str(error))
                    failed.append(f"{shot.name}: {shot.status_message}")
        if failed:
            self.report({"ERROR"}, f"queued {len(queued)} shot(s); failed: " + "; ".join(failed))
            return {"FINISHED"} if queued else {"CANCELLED"}
        self.report({"INFO"}, f"queued {len(queued)} shot(s)")
        return {"FINISHED"}


class CINEPREGEN_OT_open_board(bpy.types.Operator):
    """Open the backend's review board (every job, its passes, clip and figures) in the web browser"""

    bl_idname = "cinepregen.open_board"
    bl_label = "Open Review Board"

    def execute(self, context):
        settings = backend_settings(context)
        try:
            url = client_for(settings).url
        except BackendError as error:
            self.report({"ERROR"}, explain(error))
            return {"CANCELLED"}
        bpy.ops.wm.url_open(url=url + "/")
        return {"FINISHED"}


class CINEPREGEN_OT_cancel_shot(ShotOperatorMixin, bpy.types.Operator):
    """Cancel the shot's job on the backend"""

    bl_idname = "cinepregen.cancel_shot"
    bl_label = "Cancel"

    def execute(self, context):
        scene = context.scene
        try:
            shot = scene.cinepregen.shots[self.shot_index_in(scene)]
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        if cancel_render(scene, shot):
            self.report({"INFO"}, f"{shot.name}: pass render cancelled")
            return {"FINISHED"}
        if shot.status not in ACTIVE or not shot.job_id:
            self.report({"WARNING"}, f"{shot.name} has no job to cancel (it is {shot.status.lower()})")
            return {"CANCELLED"}
        try:
            job = client_for(backend_settings(context)).cancel(shot.job_id)
        except BackendError as error:
            shot.status_message = f"cancel failed: {explain(error)}"
            self.report({"ERROR"}, f"{shot.name}: {shot.status_message}")
            return {"CANCELLED"}
        if job["status"] == "cancelled":
            shot.status, shot.status_message = "CANCELLED", "cancelled"
        else:
            shot.status_message = "cancelling: the backend stops the job at its next step"
        self.report({"INFO"}, f"{shot.name}: {shot.status_message}")
        return {"FINISHED"}


classes = (
    CINEPREGEN_OT_check_backend,
    CINEPREGEN_OT_start_backend,
    CINEPREGEN_OT_generate_shot,
    CINEPREGEN_OT_generate_all,
    CINEPREGEN_OT_cancel_shot,
    CINEPREGEN_OT_open_board,
)
