"""Export Board: the board's timeline, EDL, cameras, storyboard PDF and shot list, from the Export panel.

The exports are the backend's own ``cinepregen export`` (``backend.exports``), run in the Backend Python of the
preferences on a copy of the open file (saved with paths remapped, so nothing unsaved is left out and the artist's
file is not touched): OpenTimelineIO, the PDF library and the bake-and-export of the cameras live there, not in
Blender's Python. Progress and the result show in the panel; Blender stays responsive while it runs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import bpy

from .jobs import redraw
from .preferences import backend_python, backend_settings
from .properties import EXPORT_FORMAT_ITEMS

POLL_SECONDS = 0.25
_export: dict | None = None  # the running export: process, scene name, output folder, progress lines


def export_folder(board) -> Path:
    """The board's export folder: as set, else ``<blend>_exports`` beside the saved file, else the temp folder."""
    if board.export_folder:
        return Path(bpy.path.abspath(board.export_folder))
    if bpy.data.filepath:
        blend = Path(bpy.data.filepath)
        return blend.parent / f"{blend.stem}_exports"
    return Path(tempfile.gettempdir()) / "cinepregen_exports"


def start_export(context) -> Path:
    """Save a copy of the file and start ``cinepregen export`` on it; returns the output folder."""
    global _export
    scene, board = context.scene, context.scene.cinepregen
    if _export is not None and _export["process"].poll() is None:
        raise ValueError("an export is still running: wait for it to finish")
    if len(board.shots) == 0:
        raise ValueError("the board has no shots to export")
    formats = sorted(board.export_formats)
    if not formats:
        raise ValueError("choose at least one export format")
    python = backend_python(backend_settings(context))
    out = export_folder(board)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cinepregen-export-"))
    copy = work / "board.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True, relative_remap=True)
    command = [python, "-m", "backend.cli", "export", str(copy), "--out", str(out), "--scene", scene.name,
               "--formats", ",".join(f.lower() for f in formats), "--page", board.export_page,
               "--title", board.export_title or (Path(bpy.data.filepath).stem if bpy.data.filepath else scene.name)]
    with (work / "errors.log").open("w") as errors:  # the child keeps its own handle
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True, bufsize=1)
    _export = {"process": process, "scene": scene.name, "out": out, "work": work, "lines": []}
    threading.Thread(target=_read_lines, args=(process, _export["lines"]), daemon=True).start()
    board.export_status, board.export_progress = "Exporting: starting", 0.0
    if not bpy.app.timers.is_registered(poll_export):
        bpy.app.timers.register(poll_export, first_interval=POLL_SECONDS)
    return out


def _read_lines(process: subprocess.Popen, lines: list[str]) -> None:
    for line in process.stdout:
        lines.append(line.rstrip("\n"))


def poll_export() -> float | None:
    """Show the running export's progress on its board; report its end. A timer: the delay to the next call, or
    None when nothing runs."""
    global _export
    if _export is None:
        return None
    scene = bpy.data.scenes.get(_export["scene"])
    board = scene.cinepregen if scene is not None else None
    progress = [line for line in _export["lines"] if line[:4].strip().endswith("%")]
    if board is not None and progress:
        fraction, _, stage = progress[-1].partition("%")
        board.export_progress, board.export_status = float(fraction) / 100, f"Exporting: {stage.strip()}"
    code = _export["process"].poll()
    if code is None:
        redraw()
        return POLL_SECONDS
    _export["process"].stdout.close()
    if board is not None:
        if code == 0:
            formats = {key.lower() for key, _, _ in EXPORT_FORMAT_ITEMS}
            files = sum(len(line.split(": ", 1)[1].split(", ")) for line in _export["lines"]
                        if line.split(": ", 1)[0] in formats)  # "csv: DIR/board_shot_list.csv" per format
            board.export_status, board.export_progress = f"Exported {files} files to {_export['out']}", 1.0
        else:
            errors = (_export["work"] / "errors.log").read_text(errors="replace")
            lines = [line for line in errors.splitlines() if line.strip()]
            board.export_status = lines[-1] if lines else f"the export stopped (exit code {code})"
    shutil.rmtree(_export["work"], ignore_errors=True)  # the saved copy of the file and the error log
    _export = None
    redraw()
    return None


class CINEPREGEN_OT_export_board(bpy.types.Operator):
    """Write the board's timeline, EDL, cameras, storyboard PDF and shot list (the chosen formats) to the export
    folder"""

    bl_idname = "cinepregen.export_board"
    bl_label = "Export Board"

    def execute(self, context):
        try:
            out = start_export(context)
        except (ValueError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exporting the board to {out}")
        return {"FINISHED"}


class CINEPREGEN_OT_open_export_folder(bpy.types.Operator):
    """Open the export folder in the system's file browser"""

    bl_idname = "cinepregen.open_export_folder"
    bl_label = "Open Export Folder"

    def execute(self, context):
        folder = export_folder(context.scene.cinepregen)
        if not folder.is_dir():
            self.report({"ERROR"}, f"{folder} does not exist yet: export the board first")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=str(folder))
        return {"FINISHED"}


def stop_export() -> None:
    """Unregistering: stop a running export and its timer."""
    global _export
    if bpy.app.timers.is_registered(poll_export):
        bpy.app.timers.unregister(poll_export)
    if _export is not None:
        if _export["process"].poll() is None:
            _export["process"].terminate()
        shutil.rmtree(_export["work"], ignore_errors=True)
    _export = None


classes = (CINEPREGEN_OT_export_board, CINEPREGEN_OT_open_export_folder)
