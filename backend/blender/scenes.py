"""Small procedural scenes built with bpy, shared by tests, benchmarks and demos that need a real shot.

The layout is fixed and simple so that tests can reason about it: a camera at the origin looking down world +Y
(Blender camera local -Z), a wall facing the camera at a known distance, and a row of props in front of it. The
props are a cube, a UV sphere and a cylinder, cycled when more are asked for. The first prop can move sideways at a
constant speed; the camera can truck sideways, so there is both object and camera motion to check flow against.
"""

from __future__ import annotations

import math

CAMERA_NAME = "TestCamera"
WALL_NAME = "Wall"
PROP_SHAPES = ("Cube", "Sphere", "Cylinder")


def shape_mesh(name: str, shape: str, size: float):
    """A mesh of one of ``PROP_SHAPES`` or "Plane", ``size`` across, centred on its origin."""
    import bmesh
    import bpy

    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    if shape == "Cube":
        bmesh.ops.create_cube(bm, size=size)
    elif shape == "Sphere":
        bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=12, radius=size / 2)
    elif shape == "Cylinder":
        bmesh.ops.create_cone(bm, cap_ends=True, segments=24, radius1=size / 2, radius2=size / 2, depth=size)
    elif shape == "Plane":
        bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=size / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def _key_linear(id_data, data_path: str, frames_values: list[tuple[int, tuple]]) -> None:
    for frame, value in frames_values:
        setattr(id_data, data_path, value)
        id_data.keyframe_insert(data_path=data_path, frame=frame)
    for fcurve in _fcurves(id_data):
        for point in fcurve.keyframe_points:
            point.interpolation = "LINEAR"


def _fcurves(id_data):
    """F-curves of an ID's action on both the 5.x layered API (channelbags) and 4.5."""
    anim = id_data.animation_data
    action = anim.action
    if hasattr(anim, "action_slot"):
        from bpy_extras import anim_utils

        return anim_utils.action_get_channelbag_for_slot(action, anim.action_slot).fcurves
    return action.fcurves


def build_test_scene(
    n_objects: int = 3,
    moving: bool = True,
    camera_move: str = "static",
    frame_start: int = 1,
    frame_end: int = 8,
    wall_distance: float = 10.0,
    lens_mm: float = 35.0,
    resolution: tuple[int, int] = (128, 72),
    reset: bool = True,
) -> dict:
    """Build the test scene in ``bpy.context.scene`` and describe it.

    Returns a dict with ``scene`` (the bpy scene), ``camera`` (camera object name), ``wall`` (name and distance
    along the view axis), ``objects`` ({name: world location at ``frame_start``}), ``moving`` (name of the moving
    prop or None), ``path`` ({frame: location} of the moving prop), ``velocity`` (world units per frame),
    ``frame_start``, ``frame_end``.
    """
    import bpy

    if n_objects < 0:
        raise ValueError(f"n_objects must be >= 0, got {n_objects}")
    if frame_end < frame_start:
        raise ValueError(f"frame_end ({frame_end}) must be >= frame_start ({frame_start})")
    if camera_move not in ("static", "truck"):
        raise ValueError(f"camera_move must be 'static' or 'truck', got {camera_move!r}")
    if reset:
        bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = frame_start, frame_end
    scene.render.fps = 24
    scene.render.resolution_x, scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100

    world = bpy.data.worlds.new("TestWorld")
    world.color = (0.05, 0.05, 0.05)
    scene.world = world
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.rotation_euler = (0.6, 0.2, 0.5)
    scene.collection.objects.link(sun)

    camera = bpy.data.objects.new(CAMERA_NAME, bpy.data.cameras.new(CAMERA_NAME))
    camera.data.lens = lens_mm
    camera.rotation_euler = (math.pi / 2, 0.0, 0.0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    if camera_move == "truck":
        _key_linear(camera, "location", [(frame_start, (-0.5, 0.0, 0.0)), (frame_end, (0.5, 0.0, 0.0))])

    wall = bpy.data.objects.new(WALL_NAME, shape_mesh(WALL_NAME, "Plane", 40.0))
    wall.location = (0.0, wall_distance, 0.0)
    wall.rotation_euler = (math.pi / 2, 0.0, 0.0)  # plane normal +Z -> -Y, towards the camera
    scene.collection.objects.link(wall)

    objects, path, velocity, moving_name = {}, {}, (0.0, 0.0, 0.0), None
    depth = 0.6 * wall_distance
    for i in range(n_objects):
        shape = PROP_SHAPES[i % len(PROP_SHAPES)]
        name = f"{shape}{i // len(PROP_SHAPES) + 1 if i >= len(PROP_SHAPES) else ''}"
        x = (i - (n_objects - 1) / 2) * 1.6
        location = (x, depth + 0.3 * (i % 2), 0.35 * ((i % 3) - 1))
        obj = bpy.data.objects.new(name, shape_mesh(name, shape, 0.8))
        obj.location = location
        scene.collection.objects.link(obj)
        objects[name] = location
        if moving and i == 0:
            moving_name = name
            velocity = (0.05, 0.0, 0.02)
            end = tuple(c + v * (frame_end - frame_start) for c, v in zip(location, velocity, strict=True))
            _key_linear(obj, "location", [(frame_start, location), (frame_end, end)])
            path = {
                f: tuple(c + v * (f - frame_start) for c, v in zip(location, velocity, strict=True))
                for f in range(frame_start, frame_end + 1)
            }
    scene.frame_set(frame_start)
    return {
        "scene": scene,
        "camera": camera.name,
        "wall": {"name": wall.name, "distance": wall_distance},
        "objects": objects,
        "moving": moving_name,
        "path": path,
        "velocity": velocity,
        "frame_start": frame_start,
        "frame_end": frame_end,
    }
