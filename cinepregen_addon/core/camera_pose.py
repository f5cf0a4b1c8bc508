"""Camera poses and the rotation maths under them, in Blender's conventions, plus the checks every camera value passes.

The world is Z-up; a camera looks down its local -Z with local +Y up; rotations are XYZ Euler angles in radians, i.e.
``matrix = Rz(z) @ Ry(y) @ Rx(x)``; distances are metres, lenses millimetres. Plain Python and numpy, so it runs inside
Blender's own Python and in tests without bpy. ``camera_geometry`` (OpenCV extrinsics and intrinsics) starts where
this module stops: ``sample_to_matrix_world`` is the hand-over point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Vec3 = tuple[float, float, float]

WORLD_UP = np.array([0.0, 0.0, 1.0])

# ----------------------------------------------------------------------------------------------------------------
# Rotations
# ----------------------------------------------------------------------------------------------------------------


def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def euler_to_matrix(rotation_euler: Sequence[float]) -> np.ndarray:
    """Blender XYZ Euler (radians) to a 3x3 rotation matrix."""
    x, y, z = (float(a) for a in rotation_euler)
    return rot_z(z) @ rot_y(y) @ rot_x(x)


def matrix_to_euler(matrix: np.ndarray, compat: Sequence[float] | None = None) -> Vec3:
    """3x3 rotation to Blender XYZ Euler; with ``compat``, the equivalent angles nearest to it.

    Keyframes are interpolated per channel, so consecutive frames must not jump by 2*pi or flip to the other Euler
    solution: passing the previous frame's angles as ``compat`` keeps a 360 degree pan a smooth curve.
    """
    r = np.asarray(matrix, dtype=np.float64)
    cos_y = math.hypot(r[0, 0], r[1, 0])
    if cos_y > 1e-9:
        x, y, z = math.atan2(r[2, 1], r[2, 2]), math.atan2(-r[2, 0], cos_y), math.atan2(r[1, 0], r[0, 0])
        candidates = [(x, y, z), (x + math.pi, math.pi - y, z + math.pi)]
    else:  # gimbal lock: only x - z (or x + z) is defined; keep x where it was
        x = float(compat[0]) if compat is not None else 0.0
        if r[2, 0] < 0:
            candidates = [(x, math.pi / 2, x - math.atan2(r[0, 1], r[1, 1]))]
        else:
            candidates = [(x, -math.pi / 2, math.atan2(-r[0, 1], r[1, 1]) - x)]
    if compat is None:
        return tuple(float(a) for a in candidates[0])
    tau = 2.0 * math.pi
    wrapped = [tuple(a + tau * round((c - a) / tau) for a, c in zip(cand, compat, strict=True)) for cand in candidates]
    return min(wrapped, key=lambda e: sum(abs(a - c) for a, c in zip(e, compat, strict=True)))


def _level_look_matrix(direction: np.ndarray) -> np.ndarray:
    """Camera rotation looking along ``direction`` with the horizon level (no roll)."""
    forward = direction / np.linalg.norm(direction)
    right = np.cross(forward, WORLD_UP)
    if np.linalg.norm(right) < 1e-9:  # straight down or up: picture top faces world +Y, as Euler (0, 0, 0) does
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    back = -forward
    return np.column_stack([right, np.cross(back, right), back])


def look_matrix(eye: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    direction = np.asarray(target, dtype=np.float64) - np.asarray(eye, dtype=np.float64)
    if np.linalg.norm(direction) < 1e-9:
        raise ValueError("target: the camera sits on its target, there is no direction to look at")
    return _level_look_matrix(direction) @ rot_z(roll)


def roll_of(rotation: np.ndarray) -> float:
    """Roll of a camera about its view axis, relative to the level camera looking the same way."""
    relative = _level_look_matrix(-rotation[:, 2]).T @ rotation
    return math.atan2(relative[1, 0], relative[0, 0])


def look_at_rotation(eye: Sequence[float], target: Sequence[float], roll: float = 0.0) -> Vec3:
    """Blender Euler that points a camera at ``eye`` to ``target``; ``roll`` (radians) turns it about the view axis.

    Looking straight down, the top of the picture faces world +Y, as a camera with rotation (0, 0, 0) does.
    """
    return matrix_to_euler(look_matrix(np.asarray(eye, float), np.asarray(target, float), roll))


# ----------------------------------------------------------------------------------------------------------------
# Poses and samples
# ----------------------------------------------------------------------------------------------------------------


def check_vec3(value: Sequence[float], name: str) -> Vec3:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected 3 numbers, got {value!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name}: expected 3 finite numbers, got {value!r}")
    return values


def check_finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def check_frame(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer frame, got {value!r}")
    return value


def check_fields(cls: type, data: object, name: str) -> dict:
    """Check a JSON object against a dataclass's fields, so a typo is a ValueError naming it."""
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected an object, got {data!r}")
    unknown = sorted(set(data) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{name}.{unknown[0]}: not a field of {cls.__name__}")
    return data


def check_positive(value: object, name: str) -> float:
    if check_finite(value, name) <= 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class CameraPose:
    """Where a camera is: the start of a move, or what framing helpers return."""

    location: Vec3
    rotation_euler: Vec3
    lens_mm: float = 50.0

    def __post_init__(self):
        object.__setattr__(self, "location", check_vec3(self.location, "location"))
        object.__setattr__(self, "rotation_euler", check_vec3(self.rotation_euler, "rotation_euler"))
        object.__setattr__(self, "lens_mm", check_positive(self.lens_mm, "lens_mm"))


@dataclass(frozen=True)
class CameraSample:
    """The camera at one frame: what the add-on writes as location, rotation and lens keyframes."""

    frame: int
    location: Vec3
    rotation_euler: Vec3
    lens_mm: float


def sample_to_matrix_world(sample: CameraSample | CameraPose) -> np.ndarray:
    """4x4 camera-to-world matrix (Blender's ``matrix_world``, no scale) of a sample or pose."""
    matrix = np.eye(4)
    matrix[:3, :3] = euler_to_matrix(sample.rotation_euler)
    matrix[:3, 3] = sample.location
    return matrix
