"""Storyboard operators (``bpy.ops.cinepregen.*``): shots, the animatic layout, camera moves as real keyframes.

The logic lives in plain functions (scene and shot in, Blender data out) so that scripts and tests can call them;
the operators are thin and turn every ``ValueError`` into a report instead of a traceback.

A shot's camera keyframes are computed, never accumulated: ``apply_shot_move`` evaluates the shot's global move
(``move_json``) from the shot's start pose and puts the artist's local layer (``adjustments_json``) on top with
``core.camera_moves``, then replaces the camera's keys inside the shot's frame range (keys outside it are kept).
The start pose is stored on the shot (``start_location``, ``start_rotation``, ``lens_mm``), so re-applying or
changing the move always starts from the same place and a local offset is never applied twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from mathutils import Matrix, Vector

from .core import camera_moves, framing
from .core.camera_moves import CameraPose, EditedKeyframe, LocalAdjustments, MoveSpec, Offset

DEFAULT_SHOT_LENGTH = 48
KEY_EPSILON = 1e-3
OBJECT_CHANNELS = (("location", 3), ("rotation_euler", 3))


# --- shots --------------------------------------------------------------------------------------------------------

def storyboard(scene):
    board = getattr(scene, "cinepregen", None)
    if board is None:
        raise ValueError("the scene has no CinePreGen storyboard (is the add-on enabled?)")
    return board


def shot_at(scene, index: int | None = None):
    """The shot at ``index`` (the active shot when None or negative)."""
    board = storyboard(scene)
    if index is None or index < 0:
        index = board.active_shot_index
    if not 0 <= index < len(board.shots):
        raise ValueError(f"no shot {index}: the storyboard has {len(board.shots)} shots")
    return board.shots[index]


def activate_shot(scene, index: int) -> None:
    """Make the shot's camera the scene camera and its frame range the preview range (playback loops the shot)."""
    board = storyboard(scene)
    if not 0 <= index < len(board.shots):
        return
    shot = board.shots[index]
    if shot.camera is not None:
        scene.camera = shot.camera
    scene.use_preview_range = True
    scene.frame_preview_start = shot.frame_start
    scene.frame_preview_end = max(shot.frame_end, shot.frame_start)
    if not shot.frame_start <= scene.frame_current <= shot.frame_end:
        scene.frame_set(shot.frame_start)


def new_camera(scene, name: str, matrix_world: Matrix | None = None, lens_mm: float = 50.0):
    data = bpy.data.cameras.new(name)
    data.lens = lens_mm
    camera = bpy.data.objects.new(name, data)
    scene.collection.objects.link(camera)
    if matrix_world is not None:
        camera.matrix_world = matrix_world
    else:  # 10 m back from the origin, eye height, looking along +Y
        camera.location = (0.0, -10.0, 1.6)
        camera.rotation_euler = (math.pi / 2, 0.0, 0.0)
    return camera


def capture_start_pose(shot) -> None:
    """The camera's current transform and lens become the start of the shot's global move."""
    camera = shot.camera
    shot.start_location = camera.location
    shot.start_rotation = camera.rotation_euler
    shot.lens_mm = camera.data.lens
    shot.sensor_mm = camera.data.sensor_width
    shot.has_start_pose = True


def add_shot(scene, name: str = "", camera=None, length: int = DEFAULT_SHOT_LENGTH):
    """Append a shot after the last one on the timeline, with a new camera where the scene camera is."""
    board = storyboard(scene)
    if length < 1:
        raise ValueError(f"length: a shot needs at least 1 frame, got {length}")
    start = max((s.frame_end + 1 for s in board.shots), default=scene.frame_start)
    shot = board.shots.add()
    shot.name = name or f"Shot {len(board.shots):03d}"
    if camera is None:
        source = scene.camera
        camera = new_camera(scene, f"CAM_{shot.name}", source.matrix_world.copy() if source else None,
                            source.data.lens if source is not None and source.type == "CAMERA" else 50.0)
    shot.camera = camera
    shot.frame_start, shot.frame_end = start, start + length - 1
    capture_start_pose(shot)
    board.active_shot_index = len(board.shots) - 1
    return shot


def _copy_shot_settings(source, target) -> None:
    for key in source.bl_rna.properties.keys():
        if key not in {"rna_type", "camera"} and not source.bl_rna.properties[key].is_readonly:
            setattr(target, key, getattr(source, key))


def duplicate_shot(scene, index: int):
    """Copy a shot and its camera (the copy gets its own keys) and place it at the end of the timeline."""
    board = storyboard(scene)
    shot_at(scene, index)
    start = max(s.frame_end for s in board.shots) + 1
    board.shots.add()  # may reallocate the collection: items are looked up by index afterwards
    source, shot = board.shots[index], board.shots[len(board.shots) - 1]
    _copy_shot_settings(source, shot)
    shot.name = f"{source.name} copy"
    shot.status, shot.status_message, shot.job_id, shot.result_path, shot.bundle_path = "DRAFT", "", "", "", ""
    shot.progress = 0.0
    if source.camera is not None:
        camera = source.camera.copy()
        camera.data = source.camera.data.copy()
        camera.animation_data_clear()
        camera.data.animation_data_clear()
        camera.name = f"CAM_{shot.name}"
        scene.collection.objects.link(camera)
        shot.camera = camera
    shift_shot(shot, start - shot.frame_start)
    board.shots.move(len(board.shots) - 1, index + 1)
    shot = board.shots[index + 1]
    if shot.camera is not None:
        apply_shot_move(scene, shot)
    board.active_shot_index = index + 1
    return shot


def remove_shot(scene, index: int, delete_camera: bool = False) -> None:
    board = storyboard(scene)
    camera = shot_at(scene, index).camera
    board.shots.remove(index)
    if delete_camera and camera is not None and all(s.camera != camera for s in board.shots):
        bpy.data.objects.remove(camera)
    if board.active_shot_index >= len(board.shots):
        board.active_shot_index = max(len(board.shots) - 1, 0)


def move_shot(scene, index: int, direction: str) -> int:
    """Move a shot one place up or down the list; returns its new index."""
    board = storyboard(scene)
    shot_at(scene, index)
    target = index - 1 if direction == "UP" else index + 1
    if not 0 <= target < len(board.shots):
        return index
    board.shots.move(index, target)
    board.active_shot_index = target
    return target


# --- keyframes (4.5 and 5.x layered actions) ---------------------------------------------------------------------

def fcurves_of(id_data, create: bool = False):
    """The F-curves animating ``id_data`` (an object or camera data), or None when it has none and not ``create``.

    Blender 4.4+ stores keys in layered actions: action -> layer -> keyframe strip -> channelbag per slot. 5.0
    removed the legacy ``action.fcurves``; 4.5 still has it but it is the same channelbag, so the layered path is
    used whenever it exists.
    """
    adt = id_data.animation_data
    if adt is None or adt.action is None:
        if not create:
            return None
        adt = adt or id_data.animation_data_create()
        adt.action = bpy.data.actions.new(f"{id_data.name}Action")
    action = adt.action
    if not hasattr(action, "layers"):  # Blender before 4.4
        return action.fcurves
    slot = adt.action_slot
    if slot is None:
        if not create:
            return None
        slot = action.slots.new(id_type=id_data.id_type, name=id_data.name)
        adt.action_slot = slot
    if len(action.layers) == 0:
        if not create:
            return None
        action.layers.new("Layer")
    layer = action.layers[0]
    if len(layer.strips) == 0:
        if not create:
            return None
        layer.strips.new(type="KEYFRAME")
    channelbag = layer.strips[0].channelbag(slot, ensure=create)
    return None if channelbag is None else channelbag.fcurves


def replace_keys(id_data, data_path: str, index: int, frames, values, frame_start: int, frame_end: int) -> None:
    """Replace the keys of one channel inside [frame_start, frame_end] by one key per frame; keys outside stay."""
    fcurves = fcurves_of(id_data, create=True)
    fcurve = fcurves.find(data_path, index=index) or fcurves.new(data_path, index=index)
    points = fcurve.keyframe_points
    for i in reversed(range(len(points))):
        if frame_start - KEY_EPSILON <= points[i].co.x <= frame_end + KEY_EPSILON:
            points.remove(points[i], fast=True)
    for frame, value in zip(frames, values, strict=True):
        points.insert(frame, value, options={"FAST"})
    fcurve.update()


def remove_keys(id_data, frame_start: int, frame_end: int) -> None:
    fcurves = fcurves_of(id_data)
    for fcurve in fcurves or ():
        points = fcurve.keyframe_points
        for i in reversed(range(len(points))):
            if frame_start - KEY_EPSILON <= points[i].co.x <= frame_end + KEY_EPSILON:
                points.remove(points[i], fast=True)
        fcurve.update()


def write_camera_samples(camera, samples: list[camera_moves.CameraSample]) -> None:
    """Key location and rotation on the camera object and the lens on its data, one key per sample frame."""
    if not samples:
        return
    frames = [s.frame for s in samples]
    first, last = frames[0], frames[-1]
    for data_path, size in OBJECT_CHANNELS:
        for i in range(size):
            values = [getattr(s, data_path)[i] for s in samples]
            replace_keys(camera, data_path, i, frames, values, first, last)
    replace_keys(camera.data, "lens", 0, frames, [s.lens_mm for s in samples], first, last)


# --- camera moves -------------------------------------------------------------------------------------------------

def shot_move_spec(shot) -> MoveSpec:
    return MoveSpec.from_dict(json.loads(shot.move_json)) if shot.move_json.strip() else MoveSpec()


def shot_adjustments(shot) -> LocalAdjustments:
    return LocalAdjustments.from_dict(json.loads(shot.adjustments_json)) if shot.adjustments_json.strip() \
        else LocalAdjustments()


def _subject_path(scene, subject, frames: range) -> list[list[float]]:
    current = scene.frame_current
    try:
        path = []
        for frame in frames:
            scene.frame_set(frame)
            path.append(list(subject.matrix_world.translation))
        return path
    finally:
        scene.frame_set(current)


def shot_samples(scene, shot, *, with_adjustments: bool = True) -> list[camera_moves.CameraSample]:
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
        if "target" in params and params["target"] is None:  # moves around a subject aim at the shot's subject
            spec = MoveSpec(spec.kind, {**spec.params, "target": list(shot.subject.matrix_world.translation)},
                            spec.easing, spec.shake)
        if spec.kind == "follow" and params["target_path"] is None:
            target_path = _subject_path(scene, shot.subject, range(shot.frame_start, shot.frame_end + 1))
    start = CameraPose(tuple(shot.start_location), tuple(shot.start_rotation), shot.lens_mm)
    fps = scene.render.fps / scene.render.fps_base
    samples = camera_moves.sample_move(spec, start, shot.frame_start, shot.frame_end, fps=fps,
                                       target_path=target_path)
    return adjustments.apply(samples) if with_adjustments else samples


def apply_shot_move(scene, shot) -> list[camera_moves.CameraSample]:
    """Write the shot's move (global + local layer) as keyframes on its camera; returns the samples written."""
    samples = shot_samples(scene, shot)
    shot.camera.data.sensor_width = shot.sensor_mm
    write_camera_samples(shot.camera, samples)
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
    if pin:
        item = EditedKeyframe(frame, tuple(camera.location), tuple(camera.rotation_euler), camera.data.lens)
    else:
        retimed = LocalAdjustments(time_remap=adjustments.time_remap).apply(
            shot_samples(scene, shot, with_adjustments=False))
        base = retimed[frame - shot.frame_start]
        item = Offset(
            frame,
            tuple(float(a - b) for a, b in zip(camera.location, base.location, strict=True)),
            tuple(float(a - b) for a, b in zip(camera.rotation_euler, base.rotation_euler, strict=True)),
            float(camera.data.lens - base.lens_mm),
        )
    updated = LocalAdjustments(  # the new entry replaces whatever the layer held at that frame
        offsets=[o for o in adjustments.offsets if o.frame != frame] + ([] if pin else [item]),
        keyframes=[k for k in adjustments.keyframes if k.frame != frame] + ([item] if pin else []),
        time_remap=adjustments.time_remap,
    )
    shot.adjustments_json = json.dumps(updated.to_dict())
    apply_shot_move(scene, shot)
    return item


def shift_shot(shot, delta: int) -> None:
    """Move a shot's frame range and its frame-keyed local adjustments by ``delta`` frames (keys are not touched)."""
    if delta == 0:
        return
    if shot.adjustments_json.strip():
        data = json.loads(shot.adjustments_json)
        for key in ("offsets", "keyframes"):
            for item in data.get(key, []):
                item["frame"] += delta
        shot.adjustments_json = json.dumps(data)
    shot.frame_start += delta
    shot.frame_end += delta


def layout_board(scene, start: int | None = None) -> None:
    """Lay the shots out one after another and bind a camera marker at each start: the board plays as an animatic.

    Each shot keeps its length; its camera keys are rewritten at the new range. Markers bound to a camera make
    Blender switch the scene camera as playback crosses them. Markers bound to cameras that were left from an
    earlier layout are replaced.
    """
    board = storyboard(scene)
    if len(board.shots) == 0:
        raise ValueError("the storyboard has no shots")
    missing = [s.name for s in board.shots if s.camera is None]
    if missing:
        raise ValueError(f"shots without a camera: {', '.join(missing)}")
    cursor = scene.frame_start if start is None else start
    for shot in board.shots:
        delta = cursor - shot.frame_start
        if delta:
            remove_keys(shot.camera, shot.frame_start, shot.frame_end)
            remove_keys(shot.camera.data, shot.frame_start, shot.frame_end)
            shift_shot(shot, delta)
        apply_shot_move(scene, shot)
        cursor = shot.frame_end + 1
    for marker in [m for m in scene.timeline_markers if m.camera is not None]:
        scene.timeline_markers.remove(marker)
    for shot in board.shots:
        marker = scene.timeline_markers.new(shot.name, frame=shot.frame_start)
        marker.camera = shot.camera
    scene.frame_start = board.shots[0].frame_start
    scene.frame_end = board.shots[-1].frame_end
    scene.use_preview_range = False


def subject_extent(subject) -> tuple[np.ndarray, float]:
    """World-space centre and height (Z extent) of an object's bounding box."""
    corners = np.array([subject.matrix_world @ Vector(c) for c in subject.bound_box])
    if np.ptp(corners[:, 2]) <= 0:
        return np.asarray(subject.matrix_world.translation), 1.0
    return (corners.min(0) + corners.max(0)) / 2.0, float(np.ptp(corners[:, 2]))


def frame_shot_subject(scene, shot) -> CameraPose:
    """Place the shot's camera so its subject fills the shot size from the camera angle, then re-key the move.

    Sizes closer than a full shot show the top of the subject (for a character, the head), as the framing charts do.
    """
    if shot.subject is None:
        raise ValueError(f"shot {shot.name!r} has no subject to frame")
    if shot.camera is None:
        raise ValueError(f"shot {shot.name!r} has no camera")
    scene.view_layers[0].update()  # a subject placed by a script has no current matrix_world until evaluated
    center, height = subject_extent(shot.subject)
    fraction = framing.SHOT_SIZES[shot.shot_size]
    if fraction > 1.0 and shot.camera_angle != "OVERHEAD":
        center[2] = center[2] + height / 2.0 - height / (2.0 * fraction)
    data = shot.camera.data
    render = scene.render
    aspect = (render.resolution_x * render.pixel_aspect_x) / (render.resolution_y * render.pixel_aspect_y)
    pose = framing.frame_subject(
        center, height, shot.shot_size, shot.camera_angle, shot.lens_mm,
        sensor_width_mm=shot.sensor_mm, sensor_height_mm=data.sensor_height, sensor_fit=data.sensor_fit,
        aspect=aspect, heading_deg=math.degrees(shot.start_rotation[2]) if shot.has_start_pose else 0.0,
    )
    shot.start_location, shot.start_rotation, shot.lens_mm = pose.location, pose.rotation_euler, pose.lens_mm
    shot.has_start_pose = True
    shot.camera.location, shot.camera.rotation_euler, data.lens = pose.location, pose.rotation_euler, pose.lens_mm
    apply_shot_move(scene, shot)
    return pose


VIEWPORT_SENSOR_MM = 72.0  # the 3D View's lens is measured against a 72 mm sensor (a camera's default is 36 mm)


def camera_from_view(scene, region_3d, view_lens_mm: float, name: str):
    """A camera that sees what the viewport sees: the inverse view matrix and the viewport lens on a 36 mm sensor."""
    lens = view_lens_mm * 36.0 / VIEWPORT_SENSOR_MM
    camera = new_camera(scene, name, region_3d.view_matrix.inverted(), lens)
    camera.data.sensor_width = 36.0
    return camera


# --- operators ----------------------------------------------------------------------------------------------------

class _ShotOperator:
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        board = getattr(context.scene, "cinepregen", None)
        return board is not None and 0 <= board.active_shot_index < len(board.shots)

    def execute(self, context):
        try:
            return self.run(context)
        except (ValueError, RuntimeError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}


class CINEPREGEN_OT_shot_add(bpy.types.Operator):
    """Add a shot after the last one, with a new camera placed where the scene camera is"""

    bl_idname = "cinepregen.shot_add"
    bl_label = "Add Shot"
    bl_options = {"REGISTER", "UNDO"}

    name: StringProperty(name="Name", default="")
    length: IntProperty(name="Length", default=DEFAULT_SHOT_LENGTH, min=1)

    @classmethod
    def poll(cls, context):
        return getattr(context.scene, "cinepregen", None) is not None

    def execute(self, context):
        try:
            shot = add_shot(context.scene, self.name, length=self.length)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"added {shot.name} ({shot.frame_start}-{shot.frame_end})")
        return {"FINISHED"}


class CINEPREGEN_OT_shot_duplicate(_ShotOperator, bpy.types.Operator):
    """Duplicate the active shot and its camera, at the end of the timeline"""

    bl_idname = "cinepregen.shot_duplicate"
    bl_label = "Duplicate Shot"

    def run(self, context):
        shot = duplicate_shot(context.scene, context.scene.cinepregen.active_shot_index)
        self.report({"INFO"}, f"duplicated as {shot.name}")
        return {"FINISHED"}


class CINEPREGEN_OT_shot_remove(_ShotOperator, bpy.types.Operator):
    """Remove the active shot from the storyboard"""

    bl_idname = "cinepregen.shot_remove"
    bl_label = "Remove Shot"

    delete_camera: BoolProperty(name="Delete Camera", description="Also delete its camera if no other shot uses it")

    def run(self, context):
        remove_shot(context.scene, context.scene.cinepregen.active_shot_index, self.delete_camera)
        return {"FINISHED"}


class CINEPREGEN_OT_shot_move(_ShotOperator, bpy.types.Operator):
    """Move the active shot up or down the storyboard"""

    bl_idname = "cinepregen.shot_move"
    bl_label = "Move Shot"

    direction: EnumProperty(items=[("UP", "Up", ""), ("DOWN", "Down", "")], default="UP")

    def run(self, context):
        move_shot(context.scene, context.scene.cinepregen.active_shot_index, self.direction)
        return {"FINISHED"}


class CINEPREGEN_OT_shot_select(_ShotOperator, bpy.types.Operator):
    """Make a shot active: its camera becomes the scene camera and its frames the preview range"""

    bl_idname = "cinepregen.shot_select"
    bl_label = "Select Shot"

    index: IntProperty(name="Shot", default=0, min=0)

    def run(self, context):
        shot_at(context.scene, self.index)
        context.scene.cinepregen.active_shot_index = self.index  # the update callback activates it
        return {"FINISHED"}


class CINEPREGEN_OT_shot_new_from_view(bpy.types.Operator):
    """Add a shot whose camera sees what the 3D View shows"""

    bl_idname = "cinepregen.shot_new_from_view"
    bl_label = "New Shot from View"
    bl_options = {"REGISTER", "UNDO"}

    name: StringProperty(name="Name", default="")

    @classmethod
    def poll(cls, context):
        return (getattr(context.scene, "cinepregen", None) is not None and context.area is not None
                and context.area.type == "VIEW_3D" and context.region_data is not None)

    def execute(self, context):
        scene = context.scene
        board = scene.cinepregen
        name = self.name or f"Shot {len(board.shots) + 1:03d}"
        camera = camera_from_view(scene, context.region_data, context.space_data.lens, f"CAM_{name}")
        shot = add_shot(scene, name, camera=camera)
        self.report({"INFO"}, f"added {shot.name} from the view")
        return {"FINISHED"}


class CINEPREGEN_OT_layout_board(bpy.types.Operator):
    """Lay the shots out one after another and add camera markers, so the board plays as an animatic"""

    bl_idname = "cinepregen.layout_board"
    bl_label = "Lay Out Board"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        board = getattr(context.scene, "cinepregen", None)
        return board is not None and len(board.shots) > 0

    def execute(self, context):
        try:
            layout_board(context.scene)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}


class CINEPREGEN_OT_apply_move(_ShotOperator, bpy.types.Operator):
    """Key the active shot's camera from its camera move and local adjustments (keys in its frame range only)"""

    bl_idname = "cinepregen.apply_move"
    bl_label = "Apply Camera Move"

    capture_start: BoolProperty(name="From Current Camera",
                                description="Start the move from where the camera is now", default=False)

    def run(self, context):
        shot = shot_at(context.scene)
        if self.capture_start and shot.camera is not None:
            capture_start_pose(shot)
        samples = apply_shot_move(context.scene, shot)
        self.report({"INFO"}, f"{shot.name}: keyed {len(samples)} frames")
        return {"FINISHED"}


class CINEPREGEN_OT_set_move(_ShotOperator, bpy.types.Operator):
    """Give the active shot a camera move from the library (its default parameters) and key its camera"""

    bl_idname = "cinepregen.set_move"
    bl_label = "Set Camera Move"

    kind: EnumProperty(name="Move", items=[(k, k.replace("_", " ").title(), "") for k in camera_moves.MOVE_PARAMS])
    easing: EnumProperty(name="Easing", items=[(k, k.replace("_", " ").title(), "") for k in camera_moves.EASINGS],
                         default="ease_in_out")

    def run(self, context):
        shot = shot_at(context.scene)
        shot.move_json = json.dumps(MoveSpec(self.kind, {}, self.easing).to_dict())
        apply_shot_move(context.scene, shot)
        return {"FINISHED"}


class CINEPREGEN_OT_frame_subject(_ShotOperator, bpy.types.Operator):
    """Place the active shot's camera so its subject fills the shot size from the camera angle"""

    bl_idname = "cinepregen.frame_subject"
    bl_label = "Frame Subject"

    def run(self, context):
        frame_shot_subject(context.scene, shot_at(context.scene))
        return {"FINISHED"}


class CINEPREGEN_OT_add_local_offset(_ShotOperator, bpy.types.Operator):
    """Keep the camera's hand-made change at this frame as a local adjustment over the camera move"""

    bl_idname = "cinepregen.add_local_offset"
    bl_label = "Add Local Offset"

    pin: BoolProperty(name="Pin", description="Keep the pose itself at this frame, not its offset from the move")

    def run(self, context):
        scene = context.scene
        add_local_offset(scene, shot_at(scene), scene.frame_current, self.pin)
        return {"FINISHED"}


class CINEPREGEN_OT_clear_local_adjustments(_ShotOperator, bpy.types.Operator):
    """Drop the active shot's local adjustments and re-key its camera from the global move alone"""

    bl_idname = "cinepregen.clear_local_adjustments"
    bl_label = "Clear Local Adjustments"

    def run(self, context):
        shot = shot_at(context.scene)
        shot.adjustments_json = ""
        apply_shot_move(context.scene, shot)
        return {"FINISHED"}


class CINEPREGEN_OT_render_passes(_ShotOperator, bpy.types.Operator):
    """Render the active shot's guidance passes (Cycles, CPU) into its shot bundle"""

    bl_idname = "cinepregen.render_passes"
    bl_label = "Render Guidance Passes"

    def run(self, context):
        from . import generate

        scene = context.scene
        index = scene.cinepregen.active_shot_index
        shot = shot_at(scene, index)
        wm = context.window_manager
        wm.progress_begin(0, 100)
        try:
            folder = generate.render_bundle(scene, index, progress=lambda f, stage: wm.progress_update(int(100 * f)))
        except (ValueError, RuntimeError, OSError):
            raise
        except Exception as error:  # a renderer or EXR failure must reach the artist as a report, not a traceback
            raise RuntimeError(f"{shot.name}: rendering the guidance passes failed: {error!r}") from error
        finally:
            wm.progress_end()
        self.report({"INFO"}, f"{shot.name}: guidance passes written to {folder}")
        return {"FINISHED"}


class CINEPREGEN_OT_bind_reference(bpy.types.Operator):
    """Bind a reference image to an object: it applies in every shot the object appears in"""

    bl_idname = "cinepregen.bind_reference"
    bl_label = "Bind Reference Image"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH")
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    object_name: StringProperty(name="Object", description="Object to bind to (empty: the active object)")

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def _target(self, context):
        if self.object_name:
            return bpy.data.objects.get(self.object_name)
        return context.active_object

    def invoke(self, context, event):
        if self._target(context) is None:
            self.report({"ERROR"}, "select the character or prop to bind a reference image to")
            return {"CANCELLED"}
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        obj = self._target(context)
        if obj is None:
            self.report({"ERROR"}, f"no object {self.object_name!r}" if self.object_name else "no active object")
            return {"CANCELLED"}
        if not self.filepath or not Path(bpy.path.abspath(self.filepath)).is_file():
            self.report({"ERROR"}, f"reference image not found: {self.filepath!r}")
            return {"CANCELLED"}
        obj.cinepregen_reference = self.filepath
        self.report({"INFO"}, f"{obj.name}: reference {Path(self.filepath).name}")
        return {"FINISHED"}


class CINEPREGEN_OT_clear_reference(bpy.types.Operator):
    """Unbind an object's reference image"""

    bl_idname = "cinepregen.clear_reference"
    bl_label = "Clear Reference Image"
    bl_options = {"REGISTER", "UNDO"}

    object_name: StringProperty(name="Object")

    def execute(self, context):
        obj = bpy.data.objects.get(self.object_name) if self.object_name else context.active_object
        if obj is None:
            self.report({"ERROR"}, "no object to clear")
            return {"CANCELLED"}
        obj.cinepregen_reference = ""
        return {"FINISHED"}


classes = (
    CINEPREGEN_OT_shot_add,
    CINEPREGEN_OT_shot_duplicate,
    CINEPREGEN_OT_shot_remove,
    CINEPREGEN_OT_shot_move,
    CINEPREGEN_OT_shot_select,
    CINEPREGEN_OT_shot_new_from_view,
    CINEPREGEN_OT_layout_board,
    CINEPREGEN_OT_apply_move,
    CINEPREGEN_OT_set_move,
    CINEPREGEN_OT_frame_subject,
    CINEPREGEN_OT_add_local_offset,
    CINEPREGEN_OT_clear_local_adjustments,
    CINEPREGEN_OT_render_passes,
    CINEPREGEN_OT_bind_reference,
    CINEPREGEN_OT_clear_reference,
)
