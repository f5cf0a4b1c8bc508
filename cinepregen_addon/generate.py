"""The Generate operators: check or start the backend, generate one shot or the whole board, cancel, open the
review board. What they do lives in ``bundles`` (passes), ``jobs`` (the backend) and ``local_backend``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import bpy
from bpy.props import IntProperty

from . import bundles, jobs, local_backend
from .bundles import cancel_render, queue_shot, start_render
from .core.backend_client import BackendError
from .core.model_choice import FALLBACK_SHOT_LENGTH, pickable_models
from .jobs import ACTIVE, client_for, explain, fail_or_keep_result
from .preferences import backend_settings
from .shots import ShotOperator


def register_timers() -> None:
    jobs.register_timers()


def unregister_timers() -> None:
    jobs.unregister_timers()
    bundles.stop_renders()
    local_backend.stop_local_backend()


@contextlib.contextmanager
def cursor_progress(context):
    """Pass rendering blocks the UI; the cursor shows how far it is."""
    wm = context.window_manager
    wm.progress_begin(0, 100)
    try:
        yield lambda fraction, stage: wm.progress_update(int(100 * fraction))
    finally:
        wm.progress_end()


class IndexedShotOperator(ShotOperator):
    """Operators on one shot: ``shot_index`` or, when -1, the storyboard's active shot; ``run`` reports a
    ValueError, RuntimeError or OSError as the operator's error (``ShotOperator``)."""

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

    def target_shot(self, scene):
        return scene.cinepregen.shots[self.shot_index_in(scene)]


def remember_models(board, health: dict) -> list[str]:
    """Fill the board's model list from a health answer; a chosen model the backend no longer serves falls back to
    the backend's default. Returns the names."""
    entries = pickable_models(health)
    board.models.clear()
    for entry in entries:
        item = board.models.add()
        item.name = str(entry["name"])
        item.family = str(entry.get("family", ""))
        item.reads_prompt = bool(entry.get("reads_prompt", False))
        item.default_frames = max(1, int(entry.get("default_frames") or FALLBACK_SHOT_LENGTH))
        item.frame_rule = str(entry.get("frame_rule", "any"))
        item.default_steps = int(entry.get("default_steps") or 0)
        quant = entry.get("quantization")
        item.quantization = f"{quant.get('bits_per_weight') or quant.get('bits')} bits/weight" if quant else ""
    if board.model and board.model not in board.models:
        board.model = ""
    return [entry["name"] for entry in entries]


class CINEPREGEN_OT_check_backend(bpy.types.Operator):
    """Ask the backend which models it serves (the board's model list) and how many jobs wait"""

    bl_idname = "cinepregen.check_backend"
    bl_label = "Check Backend"

    def execute(self, context):
        settings = backend_settings(context)
        try:
            health = client_for(settings).health()
        except BackendError as error:
            self.report({"ERROR"}, explain(error))
            return {"CANCELLED"}
        names = remember_models(context.scene.cinepregen, health)
        self.report({"INFO"}, f"backend at {settings.url}: {', '.join(names) or health.get('model')} on "
                              f"{health.get('device')}, {health.get('queue_length', 0)} job(s) queued")
        return {"FINISHED"}


class CINEPREGEN_OT_start_backend(bpy.types.Operator):
    """Start a local backend (cinepregen serve) with the Python set in the preferences, without waiting for it"""

    bl_idname = "cinepregen.start_backend"
    bl_label = "Start Local Backend"

    def execute(self, context):
        settings = backend_settings(context)
        try:
            process, log_path = local_backend.start_local_backend(settings)
        except (ValueError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"starting the backend at {settings.url} (pid {process.pid}, log {log_path}); "
                              "Check Backend tells when it answers")
        return {"FINISHED"}


class CINEPREGEN_OT_generate_shot(IndexedShotOperator, bpy.types.Operator):
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
            message = explain(error)
            fail_or_keep_result(shot, message)
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
        return IndexedShotOperator.poll(context)

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
                    fail_or_keep_result(shot, explain(error))
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


class CINEPREGEN_OT_cancel_shot(IndexedShotOperator, bpy.types.Operator):
    """Cancel the shot's job on the backend"""

    bl_idname = "cinepregen.cancel_shot"
    bl_label = "Cancel"

    def run(self, context):
        scene = context.scene
        shot = self.target_shot(scene)
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


class CINEPREGEN_OT_use_take(IndexedShotOperator, bpy.types.Operator):
    """Put the take selected in the shot's list back in the sequencer, at the shot's frames"""

    bl_idname = "cinepregen.use_take"
    bl_label = "Use Take"

    def run(self, context):
        scene = context.scene
        shot = self.target_shot(scene)
        take = selected_take(shot)
        strip = jobs.place_clip(scene, shot, Path(bpy.path.abspath(take.clip_path)))
        shot.result_path, shot.job_id = take.clip_path, take.job_id
        shot.status_message = f"{take.name} on channel {strip.channel}"
        self.report({"INFO"}, f"{shot.name}: {shot.status_message}")
        return {"FINISHED"}


class CINEPREGEN_OT_preview_take(IndexedShotOperator, bpy.types.Operator):
    """Show the selected take in an Image Editor (as a movie image that plays with the timeline)"""

    bl_idname = "cinepregen.preview_take"
    bl_label = "Preview in Image Editor"

    def run(self, context):
        shot = self.target_shot(context.scene)
        image = take_image(shot, selected_take(shot))
        shown = False
        for window in context.window_manager.windows:
            for area in window.screen.areas:
                if area.type == "IMAGE_EDITOR":
                    area.spaces.active.image = image
                    area.spaces.active.image_user.frame_duration = image.frame_duration
                    area.spaces.active.image_user.frame_start = shot.frame_start
                    area.spaces.active.image_user.use_auto_refresh = True
                    shown = True
        self.report({"INFO"}, f"{shot.name}: {image.name} in the Image Editor" if shown else
                              f"{shot.name}: {image.name} loaded; open an Image Editor to see it")
        return {"FINISHED"}


def selected_take(shot):
    """The take selected in the shot's list; ValueError when the shot has none."""
    if not shot.takes:
        raise ValueError(f"{shot.name} has no takes yet: Generate Shot makes one")
    return shot.takes[min(shot.active_take_index, len(shot.takes) - 1)]


def take_image(shot, take):
    """The take's clip as a movie image datablock (loaded once, named after shot and take)."""
    path = Path(bpy.path.abspath(take.clip_path))
    if not path.is_file():
        raise ValueError(f"{take.name}: its clip is gone from {path}")
    name = f"{shot.name} {take.name.split(' (')[0]}"
    image = bpy.data.images.get(name)
    if image is None or Path(bpy.path.abspath(image.filepath)) != path:
        image = bpy.data.images.load(str(path), check_existing=True)
        image.name = name
    image.source = "MOVIE"
    return image


classes = (
    CINEPREGEN_OT_check_backend,
    CINEPREGEN_OT_start_backend,
    CINEPREGEN_OT_generate_shot,
    CINEPREGEN_OT_generate_all,
    CINEPREGEN_OT_cancel_shot,
    CINEPREGEN_OT_open_board,
    CINEPREGEN_OT_use_take,
    CINEPREGEN_OT_preview_take,
)
