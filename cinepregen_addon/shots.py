"""The storyboard's shots (``bpy.ops.cinepregen.shot_*``): adding, duplicating, removing and ordering shots, their
cameras, and the animatic layout of the board on the timeline.

The logic lives in plain functions (scene and shot in, Blender data out) so that scripts and tests can call them;
the operators are thin and turn every ``ValueError`` into a report instead of a traceback.
"""

from __future__ import annotations

import json
import math

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from mathutils import Matrix

from .core.model_choice import FALLBACK_SHOT_LENGTH
from .core.names import next_shot_name, unique_name
from .keyframes import keyable_camera, move_space, pose_in_move_space, remove_keys

VIEWPORT_SENSOR_MM = 72.0  # the 3D View's lens is measured against a 72 mm sensor (a camera's default is 36 mm)


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


def new_camera(scene, name: str, matrix_world: Matrix | None = None, lens_mm: float = 50.0, like=None):
    """A camera for a shot; ``like`` (camera data) gives it that camera's lens, sensor, clipping and shift, so the
    shot sees what the scene camera sees (lens alone changed the field of view and clipped large sets)."""
    data = like.copy() if like is not None else bpy.data.cameras.new(name)
    if like is not None:
        data.name = name
        data.animation_data_clear()  # the shot keys its own lens
        data.type = "PERSP"  # what the moves and the passes work with, whatever the scene camera is
    else:
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
    """The camera's current transform and lens become the start of the shot's global move (in its parent's space at
    the shot's first frame, for a camera with a parent: ``keyframes.move_space``)."""
    camera = shot.camera
    keyable_camera(camera)
    basis, angles = camera.matrix_basis.copy(), tuple(camera.rotation_euler)  # before a frame change resets them
    shot.start_location, shot.start_rotation = pose_in_move_space(
        basis, angles, move_space(shot.id_data, camera, shot.frame_start))
    shot.lens_mm = camera.data.lens
    shot.sensor_mm = camera.data.sensor_width
    shot.has_start_pose = True


def chosen_model(board):
    """The board's model entry (``board.models``, filled by Check Backend), or None while none is known."""
    if not board.models:
        return None
    return board.models.get(board.model) if board.model else board.models[0]


def suggested_length(board) -> int:
    """A new shot's length: what the board's model suggests, or 2 s at 24 fps before the backend was asked."""
    model = chosen_model(board)
    return model.default_frames if model is not None and model.default_frames > 0 else FALLBACK_SHOT_LENGTH


def add_shot(scene, name: str = "", camera=None, length: int = 0):
    """Append a shot after the last one on the timeline, with a new camera where the scene camera is; ``length``
    0 takes the board model's suggested length."""
    board = storyboard(scene)
    length = length or suggested_length(board)
    if length < 1:
        raise ValueError(f"length: a shot needs at least 1 frame, got {length}")
    start = max((s.frame_end + 1 for s in board.shots), default=scene.frame_start)
    taken = {s.name for s in board.shots}
    shot = board.shots.add()
    shot.name = unique_name(name, taken) if name else next_shot_name(taken, len(board.shots))
    if camera is None:
        source = scene.camera
        like = source.data if source is not None and source.type == "CAMERA" else None
        camera = new_camera(scene, f"CAM_{shot.name}", source.matrix_world.copy() if source else None,
                            like=like)
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
    shot.name = unique_name(f"{source.name} copy", {s.name for s in board.shots if s != shot})
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
        from . import moves  # moves builds on shots: imported here, where a duplicate is re-keyed

        moves.apply_shot_move(scene, shot)
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
    from . import moves  # moves builds on shots: imported here, where the board is re-keyed

    cursor = scene.frame_start if start is None else start
    for shot in board.shots:
        delta = cursor - shot.frame_start
        if delta:
            remove_keys(shot.camera, shot.frame_start, shot.frame_end)
            remove_keys(shot.camera.data, shot.frame_start, shot.frame_end)
            shift_shot(shot, delta)
        moves.apply_shot_move(scene, shot)
        cursor = shot.frame_end + 1
    for marker in [m for m in scene.timeline_markers if m.camera is not None]:
        scene.timeline_markers.remove(marker)
    for shot in board.shots:
        marker = scene.timeline_markers.new(shot.name, frame=shot.frame_start)
        marker.camera = shot.camera
    scene.frame_start = board.shots[0].frame_start
    scene.frame_end = board.shots[-1].frame_end
    scene.use_preview_range = False



def camera_from_view(scene, region_3d, view_lens_mm: float, name: str):
    """A camera that sees what the viewport sees: the inverse view matrix and the viewport lens on a 36 mm sensor."""
    lens = view_lens_mm * 36.0 / VIEWPORT_SENSOR_MM
    camera = new_camera(scene, name, region_3d.view_matrix.inverted(), lens)
    camera.data.sensor_width = 36.0
    return camera


# --- operators ----------------------------------------------------------------------------------------------------

class CINEPREGEN_OT_random_seed(bpy.types.Operator):
    """Give the active shot a new random seed (a new take of the same shot)"""

    bl_idname = "cinepregen.random_seed"
    bl_label = "Random Seed"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        board = getattr(context.scene, "cinepregen", None)
        return board is not None and 0 <= board.active_shot_index < len(board.shots)

    def execute(self, context):
        import random

        shot = shot_at(context.scene)
        shot.seed = random.randrange(2**31 - 1)
        return {"FINISHED"}


class ShotOperator:
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

    name: StringProperty(name="Name", default="", description="The new shot's name (empty: the next Shot NNN)")
    length: IntProperty(name="Length", default=0, min=0,
                        description="Frames of the new shot (0: the length the board's model suggests)")

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


class CINEPREGEN_OT_shot_duplicate(ShotOperator, bpy.types.Operator):
    """Duplicate the active shot and its camera, at the end of the timeline"""

    bl_idname = "cinepregen.shot_duplicate"
    bl_label = "Duplicate Shot"

    def run(self, context):
        shot = duplicate_shot(context.scene, context.scene.cinepregen.active_shot_index)
        self.report({"INFO"}, f"duplicated as {shot.name}")
        return {"FINISHED"}


class CINEPREGEN_OT_shot_remove(ShotOperator, bpy.types.Operator):
    """Remove the active shot from the storyboard"""

    bl_idname = "cinepregen.shot_remove"
    bl_label = "Remove Shot"

    delete_camera: BoolProperty(name="Delete Camera", description="Also delete its camera if no other shot uses it")

    def run(self, context):
        remove_shot(context.scene, context.scene.cinepregen.active_shot_index, self.delete_camera)
        return {"FINISHED"}


class CINEPREGEN_OT_shot_move(ShotOperator, bpy.types.Operator):
    """Move the active shot up or down the storyboard"""

    bl_idname = "cinepregen.shot_move"
    bl_label = "Move Shot"

    direction: EnumProperty(items=[("UP", "Up", "Earlier in the board"), ("DOWN", "Down", "Later in the board")],
                            default="UP", name="Direction", description="Which way the shot moves in the board")

    def run(self, context):
        move_shot(context.scene, context.scene.cinepregen.active_shot_index, self.direction)
        return {"FINISHED"}


class CINEPREGEN_OT_shot_select(ShotOperator, bpy.types.Operator):
    """Make a shot active: its camera becomes the scene camera and its frames the preview range"""

    bl_idname = "cinepregen.shot_select"
    bl_label = "Select Shot"

    index: IntProperty(name="Shot", default=0, min=0, description="The shot to select (its place in the board)")

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



