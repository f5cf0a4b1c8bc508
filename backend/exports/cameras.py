"""Shot cameras for layout: one FBX per shot and one USD stage of the whole board, baked to a key on every frame.

A shot's camera in an artist's file may be parented to a rig, constrained, driven or on a path; layout needs the
camera the shot *sees*. So each shot's camera is baked first: a new, unparented camera named after the shot gets a
key on every frame of the shot for its world transform and its focal length (a dolly zoom's lens animation too), and
copies the sensor, fit, shift and clipping; that camera is exported and removed again. Blender's own exporters write
the files:

- FBX (``export_scene.fbx``, Blender's defaults: 1 Blender unit = 1 m written as FBX centimetres with a unit scale,
  -Z forward, Y up): key times are absolute, frame N at N / fps seconds, which Maya and Unreal read as frame N.
  (Blender's own FBX importer shifts animation by ``anim_offset``, 1 frame by default: import with 0.)
- USD (``wm.usd_export``): ``metersPerUnit`` 1, Z up, one ``Camera`` prim per shot, focal length and apertures in
  tenths of a scene unit as UsdGeomCamera defines them (0.5 = 50 mm), time codes at the scene's frame numbers. The
  exporter takes a Blender unit for a metre whatever the scene's unit scale (its unit conversion only adds a root
  scale), so cameras of a set built in centimetres are baked in metres for it; FBX's ``apply_unit_scale`` (the
  default) writes the scene's unit scale itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import bpy

from cinepregen_addon.render_passes import metres_per_unit


@dataclass(frozen=True)
class ShotCamera:
    """What to bake: the shot's name (the exported camera's), its camera object and its frames (inclusive)."""

    name: str
    camera: object
    frame_start: int
    frame_end: int


def _view_layer(scene):
    return bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]


def bake_camera(scene, shot: ShotCamera, length_scale: float = 1.0):
    """A new camera object named after the shot, keyed on every frame with the world transform and lens that
    ``shot.camera`` has at that frame (constraints, parents and drivers evaluated); its location and clipping
    multiplied by ``length_scale``."""
    source = shot.camera
    if source is None or source.type != "CAMERA":
        raise ValueError(f"shot {shot.name!r} has no camera")
    data = bpy.data.cameras.new(f"{shot.name} camera")
    baked = bpy.data.objects.new(f"{shot.name}_camera", data)
    scene.collection.objects.link(baked)
    baked.rotation_mode = "XYZ"
    previous = None
    for frame in range(shot.frame_start, shot.frame_end + 1):
        scene.frame_set(frame)
        evaluated = source.evaluated_get(_view_layer(scene).depsgraph)
        if frame == shot.frame_start:
            for attribute in ("type", "sensor_width", "sensor_height", "sensor_fit", "shift_x", "shift_y",
                              "clip_start", "clip_end"):
                setattr(data, attribute, getattr(evaluated.data, attribute))
            data.clip_start, data.clip_end = data.clip_start * length_scale, data.clip_end * length_scale
        location, rotation, scale = evaluated.matrix_world.decompose()
        location = location * length_scale
        euler = rotation.to_euler("XYZ", previous) if previous is not None else rotation.to_euler("XYZ")
        previous = euler
        baked.location, baked.rotation_euler, baked.scale = location, euler, scale
        data.lens = evaluated.data.lens
        for path in ("location", "rotation_euler", "scale"):
            baked.keyframe_insert(path, frame=frame)
        data.keyframe_insert("lens", frame=frame)
    return baked


@contextlib.contextmanager
def _exporting(scene, objects: Sequence, frame_start: int, frame_end: int) -> Iterator[None]:
    """Select only ``objects`` and set the scene's frame range for an exporter, then put everything back."""
    view_layer = _view_layer(scene)
    selected = [o for o in view_layer.objects if o.select_get(view_layer=view_layer)]
    active, frames = view_layer.objects.active, (scene.frame_start, scene.frame_end, scene.frame_current)
    try:
        for o in view_layer.objects:
            o.select_set(o in objects, view_layer=view_layer)
        view_layer.objects.active = objects[0]
        scene.frame_start, scene.frame_end = frame_start, frame_end
        with bpy.context.temp_override(scene=scene, view_layer=view_layer):
            yield
    finally:
        for o in view_layer.objects:
            o.select_set(o in selected, view_layer=view_layer)
        view_layer.objects.active = active
        scene.frame_start, scene.frame_end = frames[0], frames[1]
        scene.frame_set(frames[2])


def _remove(objects: Sequence) -> None:
    for o in objects:
        data = o.data
        bpy.data.objects.remove(o)
        bpy.data.cameras.remove(data)


def export_shot_fbx(scene, shot: ShotCamera, path: str | Path) -> Path:
    """The shot's baked camera as an FBX of its own."""
    baked = [bake_camera(scene, shot)]
    try:
        with _exporting(scene, baked, shot.frame_start, shot.frame_end):
            bpy.ops.export_scene.fbx(
                filepath=str(path), use_selection=True, object_types={"CAMERA"}, bake_anim=True,
                bake_anim_use_all_bones=False, bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False,
                bake_anim_force_startend_keying=True, bake_anim_step=1.0, bake_anim_simplify_factor=0.0)
    finally:
        _remove(baked)
    return Path(path)


def export_board_usd(scene, shots: Sequence[ShotCamera], path: str | Path) -> Path:
    """Every shot's baked camera in one USD stage over the board's frames (each holds its first and last pose
    outside its own shot)."""
    if not shots:
        raise ValueError("the board has no shots to export cameras for")
    baked = []
    try:
        for shot in shots:  # in metres: the exporter writes Blender units as metres whatever the scene's unit scale
            baked.append(bake_camera(scene, shot, metres_per_unit(scene)))
        with _exporting(scene, baked, min(s.frame_start for s in shots), max(s.frame_end for s in shots)):
            bpy.ops.wm.usd_export(filepath=str(path), selected_objects_only=True, export_animation=True,
                                  export_materials=False)
    finally:
        _remove(baked)
    return Path(path)
