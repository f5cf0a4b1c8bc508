"""Camera geometry of a shot: Blender's camera model as pinhole intrinsics and OpenCV extrinsics.

Conventions (see docs/shot-bundle.md):

* Blender's world is Z-up and a Blender camera looks down its local -Z with +Y up. Extrinsics are world-to-camera
  4x4 matrices in the OpenCV convention (x right, y down, z forward): ``diag(1,-1,-1,1) @ inverse(matrix_world)``.
* Pixel ``(u, v)`` with integer values is the *centre* of the pixel in column ``u``, row ``v`` (row 0 at the top),
  so the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` and an unshifted principal point is ``(W/2 - 0.5,
  H/2 - 0.5)``.
* Depth is planar: the camera-space z in metres, not the distance along the ray.
"""

from __future__ import annotations

import numpy as np

SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")
BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def intrinsics_from_blender(lens_mm: float, sensor_width_mm: float, sensor_height_mm: float, sensor_fit: str,
                            width_px: int, height_px: int, shift_x: float = 0.0, shift_y: float = 0.0,
                            pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0) -> np.ndarray:
    """The 3x3 pinhole matrix of a Blender perspective camera, following Blender's own view-plane computation.

    The fit dimension (HORIZONTAL: width; VERTICAL: height; AUTO: the larger of width*aspect_x and
    height*aspect_y) spans the sensor; AUTO always uses ``sensor_width`` for that dimension, as Blender does.
    Lens shift is in units of the fit dimension; non-square pixels stretch the other axis.
    """
    if sensor_fit not in SENSOR_FITS:
        raise ValueError(f"sensor_fit must be one of {SENSOR_FITS}, got {sensor_fit!r}")
    if min(lens_mm, sensor_width_mm, sensor_height_mm, pixel_aspect_x, pixel_aspect_y) <= 0:
        raise ValueError("lens, sensor sizes and pixel aspect must be positive")
    if width_px <= 0 or height_px <= 0:
        raise ValueError(f"resolution must be positive, got {width_px}x{height_px}")
    if sensor_fit == "AUTO":
        horizontal = pixel_aspect_x * width_px >= pixel_aspect_y * height_px
        sensor_mm = sensor_width_mm
    else:
        horizontal = sensor_fit == "HORIZONTAL"
        sensor_mm = sensor_width_mm if horizontal else sensor_height_mm
    ycor = pixel_aspect_y / pixel_aspect_x
    if horizontal:
        fit_px = float(width_px)
        fx = lens_mm / sensor_mm * width_px
        fy = fx / ycor
    else:
        fit_px = ycor * height_px
        fy = lens_mm / sensor_mm * height_px
        fx = fy * ycor
    cx = width_px / 2.0 - 0.5 - shift_x * fit_px
    cy = height_px / 2.0 - 0.5 + shift_y * fit_px / ycor
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def world_to_camera_from_matrix_world(matrix_world: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera 4x4 of a Blender camera object's ``matrix_world`` (scale removed)."""
    m = np.asarray(matrix_world, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"matrix_world must be 4x4, got shape {m.shape}")
    scale = np.linalg.norm(m[:3, :3], axis=0)
    if np.any(scale < 1e-12):
        raise ValueError("matrix_world has a zero scale axis")
    rigid = np.eye(4)
    rigid[:3, :3] = m[:3, :3] / scale
    rigid[:3, 3] = m[:3, 3]
    return BLENDER_TO_OPENCV @ _rigid_inverse(rigid)


def camera_to_world(world_to_camera: np.ndarray) -> np.ndarray:
    """Inverse of a rigid world-to-camera matrix (OpenCV camera to world)."""
    return _rigid_inverse(np.asarray(world_to_camera, dtype=np.float64))


def _rigid_inverse(m: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    inv[:3, :3] = m[:3, :3].T
    inv[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return inv


def project_points(K: np.ndarray, world_to_camera: np.ndarray, points_world: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(N,2)`` and planar depth ``(N,)`` of world points; points behind have ``z <= 0``."""
    points = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    cam = points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pix = cam @ np.asarray(K, dtype=np.float64).T
        uv = pix[:, :2] / z[:, None]
    return uv, z


def _pixel_grid(height: int, width: int) -> np.ndarray:
    """Homogeneous pixel-centre coordinates ``(H,W,3)``."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([u, v, np.ones_like(u)], axis=-1)


def unproject_depth(K: np.ndarray, world_to_camera: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """World points ``(H,W,3)`` seen at each pixel centre with planar depth ``depth`` (metres)."""
    depth = np.asarray(depth, dtype=np.float64)
    cam = (_pixel_grid(*depth.shape) @ np.linalg.inv(K).T) * depth[..., None]
    c2w = camera_to_world(world_to_camera)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def pixel_rays(K: np.ndarray, world_to_camera: np.ndarray, height: int, width: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """World-space ray origins and unit directions ``(H,W,3)`` through every pixel centre."""
    c2w = camera_to_world(world_to_camera)
    directions = (_pixel_grid(height, width) @ np.linalg.inv(K).T) @ c2w[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    origins = np.broadcast_to(c2w[:3, 3], directions.shape).copy()
    return origins, directions


def plucker_embedding(K: np.ndarray, world_to_camera: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-pixel Plücker coordinates ``(H,W,6)`` = (direction, origin x direction) of the camera rays."""
    origins, directions = pixel_rays(K, world_to_camera, height, width)
    return np.concatenate([directions, np.cross(origins, directions)], axis=-1)


def flow_from_depth(depth0: np.ndarray, K0: np.ndarray, w2c0: np.ndarray, K1: np.ndarray, w2c1: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Optical flow ``(H,W,2)`` in pixels from frame 0 to frame 1 for static geometry, and its validity mask.

    Valid pixels have geometry (``depth0 > 0``), land in front of camera 1 and inside its image; flow is zero
    elsewhere.
    """
    depth0 = np.asarray(depth0, dtype=np.float64)
    height, width = depth0.shape
    points = unproject_depth(K0, w2c0, depth0).reshape(-1, 3)
    uv1, z1 = project_points(K1, w2c1, points)
    uv1, z1 = uv1.reshape(height, width, 2), z1.reshape(height, width)
    flow = uv1 - _pixel_grid(height, width)[..., :2]
    with np.errstate(invalid="ignore"):
        valid = ((depth0 > 0) & (z1 > 1e-9) & (uv1[..., 0] >= -0.5) & (uv1[..., 0] < width - 0.5)
                 & (uv1[..., 1] >= -0.5) & (uv1[..., 1] < height - 0.5))
    flow = np.where(valid[..., None], flow, 0.0)
    return flow.astype(np.float32), valid
