"""Camera moves on a shot (``bpy.ops.cinepregen.apply_move`` and friends): the global move as real keyframes, the
artist's local adjustments on top, and framing the shot's subject.

A shot's camera keyframes are computed, never accumulated: ``apply_shot_move`` evaluates the shot's global move
(``move_json``, ``core.camera_moves``) from the shot's start pose and puts the artist's local layer
(``adjustments_json``, ``core.local_adjustments``) on top, then replaces the camera's keys inside the shot's frame
range (keys outside it are kept).
The start pose is stored on the shot (``start_location``, ``start_rotation``, ``lens_mm``), so re-applying or
changing the move always starts from the same place and a local offset is never applied twice.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, IntProperty
from mathutils import Matrix, Vector

from . import move_properties, render_passes
from .core import camera_moves, framing
from .core.camera_moves import PARAM_SPECS, MoveSpec
from .core.camera_pose import CameraPose, CameraSample, look_at_rotation
from .core.local_adjustments import EditedKeyframe, LocalAdjustments, Offset
from .keyframes import (
    camera_channels,
    keyable_camera,
    move_space,
    move_warnings,
    pose_in_move_space,
    write_camera_samples,
)
from .object_ids import GEOMETRY_TYPES, deforming_armature, instanced_collection
from .shots import ShotOperator, capture_start_pose, shot_at


def shot_move_spec(shot) -> MoveSpec:
    return MoveSpec.from_dict(json.loads(shot.move_json)) if shot.move_json.strip() else MoveSpec()


def shot_adjustments(shot) -> LocalAdjustments:
    return LocalAdjustments.from_dict(json.loads(shot.adjustments_json)) if shot.adjustments_json.strip() \
        else LocalAdjustments()


def subject_parts(subject) -> list:
    """What the camera frames of a subject: the object and, for a rig or an empty, the meshes it carries or
    deforms (an imported character is an armature with its meshes parented or skinned to it); for one mesh of a
    skinned character (its body, say), the whole character, as the ID pass shows it (``object_ids.object_units``)."""
    rig = deforming_armature(subject)
    if rig is not None:
        return subject_parts(rig)
    parts = [subject] if subject.type in GEOMETRY_TYPES else []
    for obj in bpy.data.objects:
        if obj is subject or obj.type not in GEOMETRY_TYPES:
            continue
        deformed = any(m.type == "ARMATURE" and m.object is subject for m in getattr(obj, "modifiers", ()))
        parent = obj.parent
        while parent is not None and parent is not subject:
            parent = parent.parent
        if deformed or parent is subject:
            parts.append(obj)
    return parts or [subject]


def subject_box(subject, parts: list | None = None) -> np.ndarray:
    """(8 * parts, 3) world-space corners of the subject's evaluated bounding boxes at the current frame: a walking
    character's box follows its pose, not its rest shape or its origin at the feet."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    corners = []
    for part in parts or subject_parts(subject):
        evaluated = part.evaluated_get(depsgraph)
        if part.type in GEOMETRY_TYPES:
            corners += [tuple(evaluated.matrix_world @ Vector(c)) for c in evaluated.bound_box]
        elif instanced_collection(part) is not None:
            corners += instanced_corners(evaluated.matrix_world, instanced_collection(part))
        else:
            corners.append(tuple(evaluated.matrix_world.translation))
    return np.array(corners, dtype=np.float64)


def instanced_corners(matrix_world, collection, depth: int = 0) -> list[tuple[float, float, float]]:
    """World-space bounding-box corners of what a collection-instance empty shows (how a linked character or prop
    arrives): the collection's geometry, placed by the empty, nested instances included."""
    placed = matrix_world @ Matrix.Translation(-Vector(collection.instance_offset))
    corners = []
    for obj in collection.all_objects:
        if obj.type in GEOMETRY_TYPES:
            corners += [tuple(placed @ obj.matrix_world @ Vector(c)) for c in obj.bound_box]
        elif instanced_collection(obj) is not None and depth < 8:
            corners += instanced_corners(placed @ obj.matrix_world, instanced_collection(obj), depth + 1)
    return corners


def subject_centre(subject, parts: list | None = None) -> np.ndarray:
    corners = subject_box(subject, parts)
    return (corners.min(0) + corners.max(0)) / 2.0


def _subject_path(scene, subject, frames: range) -> list[list[float]]:
    """The centre of the subject's evaluated bounds at every frame."""
    current = scene.frame_current
    parts = subject_parts(subject)  # once: finding them scans every object of the file
    try:
        path = []
        for frame in frames:
            scene.frame_set(frame)
            path.append(list(subject_centre(subject, parts)))
        return path
    finally:
        scene.frame_set(current)


def shot_samples(scene, shot, *, with_adjustments: bool = True) -> list[CameraSample]:
    """The shot's camera per frame: the global move from the start pose, then (optionally) the local layer."""
    if shot.camera is None:
        raise ValueError(f"shot {shot.name!r} has no camera")
    if shot.frame_end < shot.frame_start:
        raise ValueError(f"shot {shot.name!r}: frame_end {shot.frame_end} is before frame_start {shot.frame_start}")
    if not shot.has_start_pose:
        capture_start_pose(shot)
    try:
        spec = shot_move_spec(shot)
        adjustments = shot_adjustments(shot)
    except json.JSONDecodeError as error:
        raise ValueError(f"shot {shot.name!r}: the camera move or local adjustments are not valid JSON: {error}") \
            from None
    params = spec.resolved_params()
    target_path = None
    if shot.subject is not None:
        frames = range(shot.frame_start, shot.frame_end + 1)
        tracked = spec.kind in camera_moves.TRACKING_MOVES and params.get("target") is None
        if tracked or (spec.kind == "follow" and params["target_path"] is None):
            target_path = _subject_path(scene, shot.subject, frames)  # where the subject is at every frame
        if tracked:  # moves around a subject aim at the shot's subject, where it is at the first frame
            spec = MoveSpec(spec.kind, {**spec.params, "target": target_path[0]}, spec.easing, spec.shake)
    start = CameraPose(tuple(shot.start_location), tuple(shot.start_rotation), shot.lens_mm)
    fps = scene.render.fps / scene.render.fps_base
    metres = render_passes.metres_per_unit(scene)
    samples = camera_moves.sample_move(*_in_metres(spec, start, metres), shot.frame_start,
                                       shot.frame_end, fps=fps, target_path=_in_metres_path(target_path, metres))
    if metres != 1.0:
        samples = [replace(s, location=tuple(v / metres for v in s.location)) for s in samples]
    return adjustments.apply(samples) if with_adjustments else samples


def _in_metres_path(path, metres: float):
    return path if path is None or metres == 1.0 else [[v * metres for v in point] for point in path]


def _in_metres(spec: MoveSpec, start: CameraPose, metres: float) -> tuple[MoveSpec, CameraPose]:
    """The move and its start in metres, which the move library works in (its lengths are stored in metres), from
    the scene's units (a set built in centimetres has unit scale 0.01): its points and the start location."""
    if metres == 1.0:
        return spec, start
    points = {key: [v * metres for v in value] for key, value in spec.params.items()
              if key in PARAM_SPECS and PARAM_SPECS[key].unit == "POINT" and value is not None}
    if isinstance(spec.params.get("target_path"), list):
        points["target_path"] = _in_metres_path(spec.params["target_path"], metres)
    return (MoveSpec(spec.kind, {**spec.params, **points}, spec.easing, spec.shake),
            CameraPose(tuple(v * metres for v in start.location), start.rotation_euler, start.lens_mm))


def apply_shot_move(scene, shot) -> list[CameraSample]:
    """Write the shot's move (global + local layer) as keyframes on its camera; returns the samples written."""
    samples = shot_samples(scene, shot)
    write_camera_samples(scene, shot.camera, samples)
    shot.camera.data.sensor_width = shot.sensor_mm
    return samples


def add_local_offset(scene, shot, frame: int, pin: bool = False) -> Offset | EditedKeyframe:
    """Keep the camera's current pose at ``frame`` in the shot's local layer, and re-key.

    The artist moves the camera by hand at a frame. As an offset, the difference to the (retimed) global move is
    kept, so the change rides along when the move is re-applied or replaced; pinned, the pose itself is kept
    (an edited keyframe), so the camera is exactly there at that frame whatever the global move does.
    """
    if not shot.frame_start <= frame <= shot.frame_end:
        raise ValueError(f"frame {frame} is outside shot {shot.name!r} ({shot.frame_start}-{shot.frame_end})")
    adjustments = shot_adjustments(shot)
    camera = shot.camera
    basis, angles, lens = camera.matrix_basis.copy(), tuple(camera.rotation_euler), camera.data.lens  # the hand-made
    location, rotation = pose_in_move_space(basis, angles, move_space(scene, camera, shot.frame_start))  # pose first
    if pin:
        item = EditedKeyframe(frame, location, rotation, lens)
    else:
        retimed = LocalAdjustments(time_remap=adjustments.time_remap).apply(
            shot_samples(scene, shot, with_adjustments=False))
        base = retimed[frame - shot.frame_start]
        item = Offset(
            frame,
            tuple(float(a - b) for a, b in zip(location, base.location, strict=True)),
            tuple(float(a - b) for a, b in zip(rotation, base.rotation_euler, strict=True)),
            float(lens - base.lens_mm),
        )
    updated = LocalAdjustments(  # the new entry replaces whatever the layer held at that frame
        offsets=[o for o in adjustments.offsets if o.frame != frame] + ([] if pin else [item]),
        keyframes=[k for k in adjustments.keyframes if k.frame != frame] + ([item] if pin else []),
        time_remap=adjustments.time_remap,
    )
    shot.adjustments_json = json.dumps(updated.to_dict())
    apply_shot_move(scene, shot)
    return item


def subject_extent(subject, heading: float, aspect: float) -> tuple[np.ndarray, float]:
    """World-space centre of the subject's evaluated bounds, and the height to frame it by: its height, or its
    width across the picture (seen from ``heading``) over the picture's aspect when that is larger, so a long
    quadruped fits sideways as a standing figure fits upright."""
    corners = subject_box(subject)
    height = float(np.ptp(corners[:, 2]))
    across = np.array([math.cos(heading), math.sin(heading), 0.0])  # the camera's right vector at this heading
    width = float(np.ptp(corners @ across))
    if max(height, width) <= 0:  # an empty: framed as a subject 1 m tall (a copy: the centre is moved later)
        return np.array(subject.matrix_world.translation, dtype=np.float64), 1.0
    return (corners.min(0) + corners.max(0)) / 2.0, max(height, width / aspect)


MIN_CAMERA_CLEARANCE_M = 0.15  # how close to the ground below it a framed camera may go


def ground_below(scene, location, ignore: set) -> float | None:
    """Height of the first surface straight below ``location`` (seen from 1 km above the camera, so a camera under
    the floor still finds it; a surface up to 2 m over the camera is the ground it sank through), skipping the
    subject's own parts; None over empty ground. In scene units."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    units = 1.0 / render_passes.metres_per_unit(scene)  # scene units in a metre
    origin = Vector((location[0], location[1], location[2] + 1000.0 * units))
    for _ in range(64):
        hit, point, _normal, _index, obj, _matrix = scene.ray_cast(depsgraph, origin, Vector((0.0, 0.0, -1.0)))
        if not hit:
            return None
        if obj is not None and obj.original.name not in ignore and point.z <= location[2] + 2.0 * units:
            return float(point.z)
        origin = point + Vector((0.0, 0.0, -1e-3))
    return None


def frame_shot_subject(scene, shot) -> CameraPose:
    """Place the shot's camera so its subject fills the shot size from the camera angle, then re-key the move.

    Sizes closer than a full shot show the top of the subject (for a character, the head), as the framing charts do.
    """
    if shot.subject is None:
        raise ValueError(f"shot {shot.name!r} has no subject to frame")
    if shot.camera is None:
        raise ValueError(f"shot {shot.name!r} has no camera")
    keyable_camera(shot.camera)  # before the camera and the shot's start pose change
    scene.view_layers[0].update()  # a subject placed by a script has no current matrix_world until evaluated
    aspect = render_passes.frame_aspect(scene)
    heading = shot.start_rotation[2] if shot.has_start_pose else 0.0
    current = scene.frame_current
    scene.frame_set(shot.frame_start)
    try:
        center, height = subject_extent(shot.subject, heading, aspect)
    finally:
        scene.frame_set(current)
    fraction = framing.SHOT_SIZES[shot.shot_size]
    if fraction > 1.0 and shot.camera_angle != "OVERHEAD":
        center[2] = center[2] + height / 2.0 - height / (2.0 * fraction)
    data = shot.camera.data
    pose = framing.frame_subject(
        center, height, shot.shot_size, shot.camera_angle, shot.lens_mm,
        sensor_width_mm=shot.sensor_mm, sensor_height_mm=data.sensor_height, sensor_fit=data.sensor_fit,
        aspect=aspect, heading_deg=math.degrees(heading),
    )
    ground = ground_below(scene, pose.location, {p.name for p in subject_parts(shot.subject)} | {shot.camera.name})
    shot.framing_note = ""
    metres = render_passes.metres_per_unit(scene)
    clearance = MIN_CAMERA_CLEARANCE_M / metres
    if ground is not None and pose.location[2] < ground + clearance:
        raised = (pose.location[0], pose.location[1], ground + clearance)
        shot.framing_note = (f"the {shot.camera_angle.lower().replace('_', ' ')} camera would be "
                             f"{(ground - pose.location[2]) * metres:.2f} m under the ground: raised to "
                             f"{MIN_CAMERA_CLEARANCE_M:.2f} m above it, still aimed at the subject")
        pose = CameraPose(raised, look_at_rotation(raised, center,
                                                                math.radians(framing.CAMERA_ANGLES[
                                                                    shot.camera_angle].roll_deg)), pose.lens_mm)
    shot.start_location, shot.start_rotation, shot.lens_mm = pose.location, pose.rotation_euler, pose.lens_mm
    shot.has_start_pose = True
    start = CameraSample(shot.frame_start, pose.location, pose.rotation_euler, pose.lens_mm)
    keyed = camera_channels([start], move_space(scene, shot.camera, shot.frame_start), shot.camera.rotation_euler)[0]
    shot.camera.location, shot.camera.rotation_euler, data.lens = keyed.location, keyed.rotation_euler, pose.lens_mm
    apply_shot_move(scene, shot)
    return pose


# --- operators ----------------------------------------------------------------------------------------------------

class CINEPREGEN_OT_apply_move(ShotOperator, bpy.types.Operator):
    """Key the active shot's camera from its camera move and local adjustments (keys in its frame range only)"""

    bl_idname = "cinepregen.apply_move"
    bl_label = "Apply Camera Move"

    capture_start: BoolProperty(name="From Current Camera",
                                description="Start the move from where the camera is now", default=False)

    @classmethod
    def description(cls, context, properties):
        if properties.capture_start:
            return "Start the camera move from where the camera is now, then key it"
        return cls.__doc__

    def run(self, context):
        shot = shot_at(context.scene)
        if self.capture_start and shot.camera is not None:
            capture_start_pose(shot)
        samples = apply_shot_move(context.scene, shot)
        self.report({"INFO"}, f"{shot.name}: keyed {len(samples)} frames")
        for warning in move_warnings(context.scene, shot):
            self.report({"WARNING"}, warning)
        return {"FINISHED"}


MOVE_ITEMS = [(kind, kind.replace("_", " ").title(), camera_moves.MOVE_DESCRIPTIONS[kind])
              for kind in camera_moves.MOVE_PARAMS]


class CINEPREGEN_OT_set_move(ShotOperator, bpy.types.Operator):
    """Give the active shot a camera move from the library (its default parameters) and key its camera"""

    bl_idname = "cinepregen.set_move"
    bl_label = "Set Camera Move"

    kind: EnumProperty(name="Move", description="The camera move from the library",
                       items=MOVE_ITEMS)
    easing: EnumProperty(name="Easing", items=move_properties.EASING_ITEMS, default="ease_in_out",
                         description="How the move speeds up and slows down over the shot")

    def run(self, context):
        shot = shot_at(context.scene)
        shot.move_json = json.dumps(MoveSpec(self.kind, {}, self.easing).to_dict())
        apply_shot_move(context.scene, shot)
        for warning in move_warnings(context.scene, shot):
            self.report({"WARNING"}, warning)
        return {"FINISHED"}


class CINEPREGEN_OT_frame_subject(ShotOperator, bpy.types.Operator):
    """Place the active shot's camera so its subject fills the shot size from the camera angle"""

    bl_idname = "cinepregen.frame_subject"
    bl_label = "Frame Subject"

    def run(self, context):
        shot = shot_at(context.scene)
        frame_shot_subject(context.scene, shot)
        if shot.framing_note:
            self.report({"WARNING"}, f"{shot.name}: {shot.framing_note}")
        for warning in move_warnings(context.scene, shot):
            self.report({"WARNING"}, warning)
        return {"FINISHED"}


class CINEPREGEN_OT_add_local_offset(ShotOperator, bpy.types.Operator):
    """Keep the camera's hand-made change at this frame as a local adjustment over the camera move"""

    bl_idname = "cinepregen.add_local_offset"
    bl_label = "Add Local Offset"

    pin: BoolProperty(name="Pin", description="Keep the pose itself at this frame, not its offset from the move")

    @classmethod
    def description(cls, context, properties):
        if properties.pin:
            return "Pin the camera's pose at this frame: it stays exactly there whatever the move does"
        return cls.__doc__

    def run(self, context):
        scene = context.scene
        add_local_offset(scene, shot_at(scene), scene.frame_current, self.pin)
        return {"FINISHED"}


class CINEPREGEN_OT_clear_local_adjustments(ShotOperator, bpy.types.Operator):
    """Drop the active shot's local adjustments and re-key its camera from the global move alone"""

    bl_idname = "cinepregen.clear_local_adjustments"
    bl_label = "Clear Local Adjustments"

    def run(self, context):
        shot = shot_at(context.scene)
        shot.adjustments_json = ""
        apply_shot_move(context.scene, shot)
        return {"FINISHED"}


class CINEPREGEN_OT_remove_local_adjustment(ShotOperator, bpy.types.Operator):
    """Remove one of the active shot's local adjustments and re-key its camera"""

    bl_idname = "cinepregen.remove_local_adjustment"
    bl_label = "Remove Local Adjustment"

    kind: EnumProperty(name="Kind", items=[("offset", "Offset", "A nudge at a frame"),
                                           ("keyframe", "Pinned Keyframe", "A pose pinned at a frame"),
                                           ("retime", "Retime", "A retiming pair")],
                       description="Which list the adjustment is in")
    index: IntProperty(name="Index", min=0, description="Its place in that list")

    def run(self, context):
        shot = shot_at(context.scene)
        shot.adjustments_json = json.dumps(shot_adjustments(shot).without(self.kind, self.index).to_dict())
        apply_shot_move(context.scene, shot)
        return {"FINISHED"}
