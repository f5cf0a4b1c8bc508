"""Viewport overlay: the active shot's camera path (one point per frame, with frame ticks) and its frustum.

Drawn with Blender's ``gpu`` module from the GLSL sources in ``shaders/`` (inside the installed extension they are
``<package>/shaders``, in the repository ``../shaders``). The geometry is plain numpy (``camera_path_lines``), read
from the camera's F-curves without changing the current frame, so drawing never triggers a scene update.
``draw_camera_path_offscreen`` draws the same thing into an offscreen buffer and returns its pixels, for tests and
for scripts; in background mode the GPU is started first with a tiny Workbench render.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import gpu
import numpy as np
from gpu_extras.batch import batch_for_shader

from .keyframes import fcurves_of, parent_space
from .shots import shot_at

PATH_COLOR = (1.0, 0.55, 0.1, 1.0)
TICK_COLOR = (1.0, 0.9, 0.3, 1.0)
FRUSTUM_COLOR = (0.3, 0.8, 1.0, 1.0)
FRUSTUM_DEPTH_M = 1.0

_handler = None
_shader = None


def shaders_folder() -> Path:
    package = Path(__file__).resolve().parent
    for folder in (package / "shaders", package.parent / "shaders"):
        if (folder / "camera_path.vert.glsl").is_file():
            return folder
    raise FileNotFoundError(f"camera path shaders not found in {package / 'shaders'} or {package.parent / 'shaders'}")


def _gpu_ready() -> bool:
    try:
        gpu.platform.backend_type_get()
        gpu.types.GPUOffScreen(1, 1).free()
        return True
    except SystemError:
        return False


def ensure_gpu() -> None:
    """Start Blender's GPU backend in background mode (it starts with the first GPU render, here a 4x4 Workbench)."""
    if _gpu_ready():
        return
    scene = bpy.data.scenes.new("cinepregen_gpu_start")
    camera = bpy.data.objects.new("cinepregen_gpu_start", bpy.data.cameras.new("cinepregen_gpu_start"))
    try:
        scene.collection.objects.link(camera)
        scene.camera = camera
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.render.resolution_x = scene.render.resolution_y = 4
        bpy.ops.render.render(scene=scene.name)
    finally:
        data = camera.data
        bpy.data.objects.remove(camera)
        bpy.data.cameras.remove(data)
        bpy.data.scenes.remove(scene)
    if not _gpu_ready():
        raise RuntimeError("the GPU module is not available (no OpenGL/EGL)")


def camera_path_shader():
    """The overlay shader, compiled once from ``shaders/camera_path.{vert,frag}.glsl``."""
    global _shader
    if _shader is None:
        folder = shaders_folder()
        interface = gpu.types.GPUStageInterfaceInfo("cinepregen_camera_path_interface")
        interface.smooth("VEC4", "finalColor")
        info = gpu.types.GPUShaderCreateInfo()
        info.vertex_in(0, "VEC3", "pos")
        info.vertex_in(1, "VEC4", "color")
        info.vertex_out(interface)
        info.push_constant("MAT4", "viewProjectionMatrix")
        info.fragment_out(0, "VEC4", "fragColor")
        info.vertex_source((folder / "camera_path.vert.glsl").read_text())
        info.fragment_source((folder / "camera_path.frag.glsl").read_text())
        _shader = gpu.shader.create_from_info(info)
    return _shader


# --- geometry -----------------------------------------------------------------------------------------------------

def camera_path_points(camera, frame_start: int, frame_end: int) -> np.ndarray:
    """(F, 3) camera locations over the frames, from its location F-curves (the static location where unkeyed)."""
    frames = range(frame_start, frame_end + 1)
    points = np.tile(np.asarray(camera.location, dtype=np.float64), (len(frames), 1))
    fcurves = fcurves_of(camera)
    for axis in range(3):
        fcurve = fcurves.find("location", index=axis) if fcurves is not None else None
        if fcurve is not None:
            points[:, axis] = [fcurve.evaluate(f) for f in frames]
    space = parent_space(camera)
    if space is not None:  # the keys are in the parent's space (its inverse at parenting time included)
        space = np.asarray(space, dtype=np.float64)
        points = points @ space[:3, :3].T + space[:3, 3]
    return points


def frustum_corners(camera, scene) -> np.ndarray:
    """(5, 3): the camera's origin and its four view-frame corners ``FRUSTUM_DEPTH_M`` along the view, world space."""
    matrix = np.asarray(camera.matrix_world, dtype=np.float64)
    frame = np.array([tuple(v) for v in camera.data.view_frame(scene=scene)], dtype=np.float64)
    frame *= FRUSTUM_DEPTH_M / abs(frame[0, 2])
    local = np.vstack([np.zeros(3), frame])
    return local @ matrix[:3, :3].T + matrix[:3, 3]


def camera_path_lines(points: np.ndarray, frustum: np.ndarray | None = None, tick_size: float = 0.05
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Line-list vertices (N, 3) and colours (N, 4): the path, a small 3D cross at every frame, the frustum."""
    points = np.asarray(points, dtype=np.float64)
    segments, colors = [], []
    if len(points) > 1:
        segments.append(np.stack([points[:-1], points[1:]], axis=1).reshape(-1, 3))
        colors.append(np.tile(PATH_COLOR, (2 * (len(points) - 1), 1)))
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = tick_size
        segments.append(np.stack([points - step, points + step], axis=1).reshape(-1, 3))
        colors.append(np.tile(TICK_COLOR, (2 * len(points), 1)))
    if frustum is not None:
        origin, corners = frustum[0], frustum[1:]
        rays = np.stack([np.tile(origin, (4, 1)), corners], axis=1).reshape(-1, 3)
        rim = np.stack([corners, np.roll(corners, -1, axis=0)], axis=1).reshape(-1, 3)
        segments += [rays, rim]
        colors.append(np.tile(FRUSTUM_COLOR, (16, 1)))
    return np.concatenate(segments).astype(np.float32), np.concatenate(colors).astype(np.float32)


def shot_lines(scene, shot) -> tuple[np.ndarray, np.ndarray]:
    if shot.camera is None:
        raise ValueError(f"shot {shot.name!r} has no camera")
    points = camera_path_points(shot.camera, shot.frame_start, shot.frame_end)
    extent = float(np.ptp(points, axis=0).max()) if len(points) else 0.0
    return camera_path_lines(points, frustum_corners(shot.camera, scene), tick_size=max(0.02, 0.01 * extent))


# --- drawing ------------------------------------------------------------------------------------------------------

def draw_lines(vertices: np.ndarray, colors: np.ndarray, view_projection) -> None:
    shader = camera_path_shader()
    batch = batch_for_shader(shader, "LINES", {"pos": vertices, "color": colors})
    shader.bind()
    shader.uniform_float("viewProjectionMatrix", view_projection)
    batch.draw(shader)


def _draw_callback() -> None:
    scene = bpy.context.scene
    board = getattr(scene, "cinepregen", None)
    if board is None or not board.show_camera_path:
        return
    try:
        vertices, colors = shot_lines(scene, shot_at(scene))
    except ValueError:
        return
    view_projection = gpu.matrix.get_projection_matrix() @ gpu.matrix.get_model_view_matrix()
    gpu.state.depth_test_set("LESS_EQUAL")
    draw_lines(vertices, colors, view_projection)
    gpu.state.depth_test_set("NONE")


def add_handler() -> None:
    global _handler
    if _handler is None:
        _handler = bpy.types.SpaceView3D.draw_handler_add(_draw_callback, (), "WINDOW", "POST_VIEW")


def remove_handler() -> None:
    global _handler, _shader
    if _handler is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handler, "WINDOW")
        _handler = None
    _shader = None


def sync(context) -> None:
    """Add or remove the draw handler to match the panel's toggle, and redraw the 3D Views."""
    if context.scene.cinepregen.show_camera_path:
        add_handler()
    else:
        remove_handler()
    screen = getattr(context, "screen", None)
    for area in screen.areas if screen is not None else ():
        if area.type == "VIEW_3D":
            area.tag_redraw()


def draw_camera_path_offscreen(scene, shot, view_matrix, projection_matrix, width: int, height: int) -> np.ndarray:
    """Draw the shot's camera path and frustum into an offscreen buffer; returns (H, W, 4) uint8 RGBA, top row first.

    The background is transparent black. ``view_matrix`` is world-to-view and ``projection_matrix`` the OpenGL
    projection (both ``mathutils.Matrix``, e.g. ``viewer.matrix_world.inverted()`` and
    ``viewer.calc_matrix_camera(depsgraph, x=width, y=height)``).
    """
    ensure_gpu()
    vertices, colors = shot_lines(scene, shot)
    offscreen = gpu.types.GPUOffScreen(width, height)
    try:
        with offscreen.bind():
            framebuffer = gpu.state.active_framebuffer_get()
            framebuffer.clear(color=(0.0, 0.0, 0.0, 0.0), depth=1.0)
            draw_lines(vertices, colors, projection_matrix @ view_matrix)
            buffer = framebuffer.read_color(0, 0, width, height, 4, 0, "UBYTE")
    finally:
        offscreen.free()
    pixels = np.array(buffer.to_list(), dtype=np.uint8).reshape(height, width, 4)
    return pixels[::-1]


classes = ()
