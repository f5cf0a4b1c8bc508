"""Following backend jobs: a shot's bundle goes to the backend, a timer follows the job, the clip lands in the
sequencer.

Blender must never freeze on the network: every request has the client's short timeout, and jobs are followed
by one ``bpy.app.timers`` callback (``poll_jobs``) that asks the backend once per tick for all its jobs. The
timer keeps no bpy references between ticks; it finds the shots to follow by their status (QUEUED, RUNNING) and
job id, so it survives undo, file loads and a backend restart (jobs outlive it). A backend that is down or
refuses becomes a sentence in the operator's report and the shot's ``status_message``, never a traceback.
"""

from __future__ import annotations

import tempfile
import time
import traceback
import urllib.parse
from pathlib import Path

import bpy

from .core import shot_bundle
from .core.backend_client import BackendClient, BackendError
from .core.names import shot_folder_name
from .preferences import BackendSettings, backend_settings

POLL_INTERVAL = 0.5
RETRY_INTERVAL = 2.0  # while the backend does not answer
QUICK_TIMEOUT = 2.0
ACTIVE = ("QUEUED", "RUNNING")  # waiting on the backend
STATUS_FROM_JOB = {"queued": "QUEUED", "running": "RUNNING", "done": "DONE", "failed": "FAILED",
                   "cancelled": "CANCELLED"}
STRIP_SHOT_PROPERTY = "cinepregen_shot"
MAX_CHANNELS = 128
START_HINT = "start it with 'cinepregen serve' or Start Local Backend in the add-on preferences"


# --- where things go ----------------------------------------------------------------------------------------------

def shot_folder(shot) -> Path:
    """A shot's bundle and clips: next to the saved .blend, or in the temp folder for an unsaved file."""
    if bpy.data.filepath:
        blend = Path(bpy.data.filepath)
        root = blend.parent / f"{blend.stem}_cinepregen"
    else:
        root = Path(tempfile.gettempdir()) / "cinepregen"
    return root / shot_folder_name(shot.name, [other.name for other in shot.id_data.cinepregen.shots])


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


def explain(error: Exception) -> str:
    """The sentence an artist reads for an error; a backend that is not running comes with how to start one."""
    message = str(error)
    not_running = isinstance(error, BackendError) and error.status is None and "no backend running" in message
    return f"{message}; {START_HINT}" if not_running else message


def submit_bundle(scene, index: int, client: BackendClient, folder: Path) -> str:
    """Zip and submit a shot's bundle; the shot becomes QUEUED with its job id."""
    shot = scene.cinepregen.shots[index]
    shot_folder(shot).mkdir(parents=True, exist_ok=True)
    zip_path = shot_bundle.zip_bundle(folder, shot_folder(shot) / "bundle.zip")
    board = scene.cinepregen
    job_id = client.submit(zip_path, {"model": board.model or None, "steps": board.steps or None})
    shot.job_id = job_id
    shot.status = "QUEUED"
    shot.progress = 0.0
    shot.status_message = f"queued on {client.url}"
    ensure_polling()
    return job_id


def fail_shot(shot, message: str) -> None:
    shot.status = "FAILED"
    shot.status_message = message


def fail_or_keep_result(shot, message: str) -> None:
    """A new take that could not even be queued leaves a finished shot finished: its clip is still in the
    sequencer; only the message says what went wrong."""
    if shot.status == "DONE" and shot.result_path:
        shot.status_message = f"not generated again: {message} (the clip from job {shot.job_id} is kept)"
    else:
        fail_shot(shot, message)


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
        redraw()
        return RETRY_INTERVAL
    for scene, shot in active:
        try:
            _follow(scene, shot, jobs.get(shot.job_id), client)
        except Exception as error:  # a timer that raises is dropped by Blender: keep following the other shots
            traceback.print_exc()
            fail_shot(shot, f"could not update the shot: {type(error).__name__}: {error}")
    redraw()
    return POLL_INTERVAL if active_shots() else None


def _follow(scene, shot, job: dict | None, client: BackendClient) -> None:
    if job is None:
        fail_shot(shot, f"the backend at {client.url} has no job {shot.job_id} (was its data folder reset?)")
        return
    status = STATUS_FROM_JOB.get(job["status"], "FAILED")
    shot.progress = float(job.get("progress") or 0.0)
    if status == "DONE":
        _finish(scene, shot, client, job)
    elif status == "FAILED":
        fail_shot(shot, f"generation failed: {job.get('error') or 'no reason given'}")
    elif status == "CANCELLED":
        shot.status, shot.status_message = "CANCELLED", "cancelled"
    else:
        shot.status = status
        stage = job.get("stage") or job["status"]
        shot.status_message = f"{stage} ({shot.progress:.0%})" if status == "RUNNING" else "queued"


def add_take(shot, job: dict, clip: Path):
    """Remember a generated clip as the shot's newest take (the list keeps every take, the newest selected)."""
    settings = job.get("settings") or {}
    take = shot.takes.add()
    take.name = f"Take {len(shot.takes)} ({time.strftime('%m-%d %H:%M')})"
    take.job_id, take.clip_path = shot.job_id, str(clip)
    take.model = str(settings.get("model") or "")
    take.seed = int(settings["seed"]) if settings.get("seed") is not None else shot.seed
    take.steps = int(settings.get("steps") or 0)
    shot.active_take_index = len(shot.takes) - 1
    return take


def _finish(scene, shot, client: BackendClient, job: dict) -> None:
    """Download the clip into the shot's folder (one folder per job) and put it in the sequencer."""
    dest = shot_folder(shot) / "clips" / shot.job_id
    try:
        clip = client.download(shot.job_id, dest)[0]
    except BackendError as error:
        if error.status is None:  # not reachable right now: try again on the next tick
            shot.status_message = f"downloading the clip: {explain(error)}"
        else:
            fail_shot(shot, f"could not download the clip: {error}")
        return
    strip = place_clip(scene, shot, clip)
    add_take(shot, job, clip)
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


def redraw() -> None:
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
