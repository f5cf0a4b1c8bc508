"""A shot's bundle: reused while it is fresh (same fingerprint), else its guidance passes are rendered again, at
once (scripts, headless Blender) or one frame per timer tick so Blender stays responsive and Cancel works."""

from __future__ import annotations

import json
import math
import shutil
import traceback
from collections.abc import Generator
from pathlib import Path

import bpy

from . import render_passes
from .core.backend_client import BackendClient, BackendError
from .jobs import client_for, explain, fail_shot, redraw, shot_folder, submit_bundle
from .preferences import backend_settings


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
    shot.status, shot.status_message = ("PASSES_READY",
                                        f"bundle in {folder}{untracked_note(folder)}{aspect_note(scene, spec)}")
    return folder


def aspect_note(scene, spec: render_passes.ShotRenderSpec) -> str:
    """A warning for the status line when the passes' frame is not the scene's (the board renders 16:9 passes; a
    vertical 1080x1920 scene then loses the head and feet its camera frames)."""
    framed = render_passes.frame_aspect(scene)
    width, height = spec.resolution
    if abs(math.log(framed / (width / height))) < 0.05:
        return ""
    return (f"; the passes are {width}x{height} ({width / height:.2f}:1) but the scene frames {framed:.2f}:1, so the "
            "clip shows another crop than the camera view (set the board's pass resolution to the scene's shape)")


UNTRACKED_NOTE_SHARE = 0.01  # of the picture


def untracked_note(folder: Path) -> str:
    """A warning for the status line when part of what the camera sees carries no object ID."""
    shot = _shot_json(folder).get("shot")
    share = shot.get("untracked_geometry") if isinstance(shot, dict) else None
    if not isinstance(share, int | float) or share < UNTRACKED_NOTE_SHARE:
        return ""
    return (f"; {share:.0%} of the picture shows geometry without an object ID (grease pencil, instances of objects "
            "hidden from the render): it is painted as background")


def fresh_bundle(scene, index: int, fingerprint: str) -> Path | None:
    """The shot's bundle folder when it was rendered from the same inputs (``fingerprint``: camera, move, seed,
    prompt, objects, references, ...), else None."""
    shot = scene.cinepregen.shots[index]
    existing = Path(bpy.path.abspath(shot.bundle_path)) if shot.bundle_path else None
    if existing is None or not (existing / "shot.json").is_file() or shot.bundle_fingerprint != fingerprint:
        return None
    # the folder may hold another shot's bundle now (renamed shots, a copied .blend): never send that one
    return existing if _shot_json(existing).get("name") == shot.name else None


def _shot_json(folder: Path) -> dict:
    """A bundle folder's shot.json as written, or {} when it cannot be read."""
    try:
        doc = json.loads((Path(folder) / "shot.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def shot_bundle_folder(scene, index: int, progress: render_passes.ProgressFn | None = None) -> Path:
    """The shot's bundle folder, rendering its guidance passes first when there is none fresh; the fingerprint,
    a pass over every frame of the shot, is computed once for both."""
    fingerprint = shot_fingerprint(scene, index)
    return fresh_bundle(scene, index, fingerprint) or render_bundle(scene, index, progress, fingerprint)


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
                fail_shot(shot, explain(error))
    except Exception as error:  # a renderer failure reaches the artist as the shot's message, not a traceback
        _renders.pop(0)
        traceback.print_exc()
        fail_shot(shot, f"rendering the guidance passes failed: {error}")
    redraw()
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


def stop_renders() -> None:
    """Drop every pending pass render (the add-on is being disabled); each render puts the scene's settings back."""
    if bpy.app.timers.is_registered(render_tick):
        bpy.app.timers.unregister(render_tick)
    for job in _renders:
        job["steps"].close()
    _renders.clear()
