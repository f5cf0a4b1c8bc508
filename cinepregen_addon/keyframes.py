"""Camera keyframes written by the add-on, on Blender 4.5 and 5.x (layered actions): a shot's keys are replaced
inside its frame range, keys outside it are kept."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import bpy
from mathutils import Euler, Matrix, Vector

from .core.camera_pose import CameraSample

KEY_EPSILON = 1e-3
OBJECT_CHANNELS = (("location", 3), ("rotation_euler", 3))
# constraints that move or aim a camera over its own channels, so a keyed move does not show as keyed
OVERRIDING_CONSTRAINTS = {"TRACK_TO", "DAMPED_TRACK", "LOCKED_TRACK", "COPY_ROTATION", "COPY_LOCATION",
                          "COPY_TRANSFORMS", "CHILD_OF", "FOLLOW_PATH", "TRANSFORM", "PIVOT"}


def keyable_camera(camera) -> None:
    """Make the camera ready for a move's keys: in XYZ Euler rotation, which the moves key (a camera in quaternion
    or axis-angle mode, as a glTF import leaves them, ignores rotation_euler: a 30 degree pan turned it 0), keeping
    its orientation. A camera (or lens) linked from another file is refused: Blender plays keys set on it until the
    file is reopened, then they are gone."""
    for data, what in ((camera, "it"), (camera.data, "its lens")):
        if data.library is not None:
            raise ValueError(f"camera {camera.name!r}: {what} is linked from {Path(data.library.filepath).name}, so "
                             "keys on it are not saved; make it editable (Object > Library Override > Make) or give "
                             "the shot a camera of this file")
    if camera.rotation_mode != "XYZ":
        rotation = camera.matrix_basis.to_quaternion()
        camera.rotation_mode = "XYZ"
        camera.rotation_euler = rotation.to_euler("XYZ")


def move_space(scene, camera, frame: int) -> Matrix | None:
    """The space a shot's move is keyed in: the camera's parent space at the shot's first ``frame``, so a move on a
    camera parented to a rig or a layout empty plays in the set where it was designed (it was keyed in the parent's
    space, wherever the parent stood) and rides along with what the parent does during the shot. None for a camera
    without a parent, whose channels are world space."""
    if camera.parent is None:
        return None
    current = scene.frame_current
    if current != frame:
        scene.frame_set(frame)
    else:
        bpy.context.view_layer.update()
    try:
        return parent_space(camera)
    finally:
        if current != frame:
            scene.frame_set(current)


def parent_space(camera) -> Matrix | None:
    """The space the camera's own channels are in, as evaluated now (None without a parent)."""
    if camera.parent is None:
        return None
    if camera.parent_type == "OBJECT":  # free of the camera's own channels and constraints
        return camera.parent.matrix_world @ camera.matrix_parent_inverse
    return camera.matrix_world @ camera.matrix_basis.inverted_safe()  # a bone or vertex parent


def pose_in_move_space(basis: Matrix, rotation_euler, space: Matrix | None) -> tuple[tuple, tuple]:
    """The camera's own channels (``basis``, its ``matrix_basis``, and its Euler angles) as a pose (location, XYZ
    Euler) in the move's space."""
    if space is None:
        return tuple(basis.translation), tuple(rotation_euler)
    location, rotation, _scale = (space @ basis).decompose()
    return tuple(location), tuple(rotation.to_euler("XYZ", Euler(rotation_euler, "XYZ")))


def camera_channels(samples: list[CameraSample], space: Matrix | None, rotation_euler) -> list[CameraSample]:
    """Samples posed in the move's space as the camera's own location and rotation channels; the angles follow on
    from ``rotation_euler`` (the camera's own now) frame by frame, so the keyed curves do not jump by 2 pi."""
    if space is None:
        return samples
    inverse = space.inverted_safe()
    previous = Euler(rotation_euler, "XYZ")
    channels = []
    for sample in samples:
        pose = Matrix.LocRotScale(Vector(sample.location), Euler(sample.rotation_euler, "XYZ"), None)
        location, rotation, _scale = (inverse @ pose).decompose()
        previous = rotation.to_euler("XYZ", previous)
        channels.append(dataclasses.replace(sample, location=tuple(location), rotation_euler=tuple(previous)))
    return channels


def parent_moves(scene, camera, frame_start: int, frame_end: int) -> bool:
    """Whether the camera's parent space changes over the frames (looked at at the first, middle and last)."""
    spaces = [move_space(scene, camera, f) for f in sorted({frame_start, (frame_start + frame_end) // 2, frame_end})]
    if spaces[0] is None:
        return False
    return any(max(abs(a - b) for row_a, row_b in zip(spaces[0], other, strict=True)
                   for a, b in zip(row_a, row_b, strict=True)) > 1e-6 for other in spaces[1:])


def move_warnings(scene, shot) -> list[str]:
    """What keeps a keyed move from playing as designed on the shot's camera: a parent that moves during the shot
    (the move rides along with it) or a constraint that moves or aims the camera."""
    camera = shot.camera
    warnings = []
    if parent_moves(scene, camera, shot.frame_start, shot.frame_end):
        warnings.append(f"camera {camera.name!r} is parented to {camera.parent.name!r}, which moves during the shot: "
                        "the move rides along with it (unparent the camera, keeping its transform, for a move in "
                        "the set alone)")
    overriding = [c.name for c in camera.constraints
                  if c.type in OVERRIDING_CONSTRAINTS and c.enabled and c.influence > 0]
    if overriding:
        warnings.append(f"camera {camera.name!r}: constraint {', '.join(overriding)} overrides the keyed move; "
                        "mute it to see the move")
    return warnings


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


def write_camera_samples(scene, camera, samples: list[CameraSample]) -> None:
    """Key location and rotation on the camera object (in its parent's space at the first sample's frame, when it
    has a parent: ``move_space``) and the lens on its data, one key per sample frame."""
    if not samples:
        return
    keyable_camera(camera)
    frames = [s.frame for s in samples]
    first, last = frames[0], frames[-1]
    keyed = camera_channels(samples, move_space(scene, camera, first), camera.rotation_euler)
    for data_path, size in OBJECT_CHANNELS:
        for i in range(size):
            values = [getattr(s, data_path)[i] for s in keyed]
            replace_keys(camera, data_path, i, frames, values, first, last)
    replace_keys(camera.data, "lens", 0, frames, [s.lens_mm for s in samples], first, last)
