"""The Generate operators: check or start the backend, generate one shot or the whole board, cancel, open the
review board. What they do lives in ``bundles`` (passes), ``jobs`` (the backend) and ``local_backend``."""

from __future__ import annotations

import contextlib

import bpy
from bpy.props import IntProperty

from . import bundles, jobs, local_backend
from .bundles import cancel_render, queue_shot, start_render
from .core.backend_client import BackendError
from .jobs import ACTIVE, client_for, explain, fail_or_keep_result
from .preferences import backend_settings


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
            process, log_path = local_backend.start_local_backend(settings)
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
                    fail_or_keep_result(shot, explain(error) if isinstance(error, BackendError) else str(error))
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
