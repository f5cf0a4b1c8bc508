"""Framing: where a camera goes so that a subject fills a shot size from a camera angle.

Shot sizes are read against the subject's whole height (for a character, standing head to toe), so one character
keeps one ``subject_height`` across every shot of a board. The number is how many frame heights that height spans;
above 1 the frame shows only part of the subject, so for close sizes centre on the part the shot is about (for a
character, the face) by passing it as ``subject_center``. The values follow the usual framing charts for a standing
person about 1.75 m tall:

    ELS  extreme long shot    0.15   a small figure in its surroundings
    LS   long shot            0.5    the whole figure with plenty of room
    FS   full shot            0.9    head to toe, just inside the frame
    MFS  medium full shot     1.3    head to knees (the "cowboy")
    MS   medium shot          2.0    head to waist
    MCU  medium close-up      3.0    head to mid-chest
    CU   close-up             5.0    head and top of the shoulders
    ECU  extreme close-up     12.0   eyes to mouth

The subject's extent is measured across the picture's vertical, perpendicular to the line of sight, so a size means
the same thing from every angle (seen from overhead, "height" is the subject's extent along the picture's up axis).
Sensor fit follows Blender's: AUTO spreads ``sensor_width_mm`` over the larger image side, HORIZONTAL over the width,
VERTICAL spreads ``sensor_height_mm`` over the height (``camera_geometry`` builds the full intrinsics the same way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .camera_pose import CameraPose, check_finite, check_positive, check_vec3, matrix_to_euler, rot_x, rot_z

SHOT_SIZES: dict[str, float] = {
    "ELS": 0.15,
    "LS": 0.5,
    "FS": 0.9,
    "MFS": 1.3,
    "MS": 2.0,
    "MCU": 3.0,
    "CU": 5.0,
    "ECU": 12.0,
}


class CameraAngle(NamedTuple):
    """How the camera looks at the subject: degrees below the horizon (negative looks up) and roll about the view."""

    down_deg: float
    roll_deg: float


CAMERA_ANGLES: dict[str, CameraAngle] = {
    "EYE_LEVEL": CameraAngle(0.0, 0.0),
    "HIGH": CameraAngle(30.0, 0.0),
    "LOW": CameraAngle(-25.0, 0.0),
    "OVERHEAD": CameraAngle(90.0, 0.0),
    "DUTCH": CameraAngle(0.0, 20.0),
}

SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")


def frame_height_mm(sensor_width_mm: float, sensor_height_mm: float, sensor_fit: str, aspect: float) -> float:
    """Height of the picture on the sensor, in mm, for an image of ``aspect`` = width / height."""
    sensor_width_mm = check_positive(sensor_width_mm, "sensor_width_mm")
    sensor_height_mm = check_positive(sensor_height_mm, "sensor_height_mm")
    aspect = check_positive(aspect, "aspect")
    if sensor_fit not in SENSOR_FITS:
        raise ValueError(f"sensor_fit: expected one of {SENSOR_FITS}, got {sensor_fit!r}")
    if sensor_fit == "VERTICAL":
        return sensor_height_mm
    if sensor_fit == "AUTO" and aspect < 1.0:
        return sensor_width_mm
    return sensor_width_mm / aspect


def frame_subject(
    subject_center: Sequence[float],
    subject_height: float,
    shot_size: str,
    camera_angle: str = "EYE_LEVEL",
    lens_mm: float = 50.0,
    *,
    sensor_width_mm: float = 36.0,
    sensor_height_mm: float = 24.0,
    sensor_fit: str = "AUTO",
    aspect: float = 16 / 9,
    heading_deg: float = 0.0,
) -> CameraPose:
    """Camera pose that shows the subject at ``shot_size`` from ``camera_angle``, centred in the picture.

    ``heading_deg`` is the way the camera faces, as Blender's Z rotation: 0 looks along +Y, 90 along -X.
    """
    center = np.asarray(check_vec3(subject_center, "subject_center"))
    subject_height = check_positive(subject_height, "subject_height")
    lens_mm = check_positive(lens_mm, "lens_mm")
    if shot_size not in SHOT_SIZES:
        raise ValueError(f"shot_size: unknown shot size {shot_size!r}, expected one of {list(SHOT_SIZES)}")
    if camera_angle not in CAMERA_ANGLES:
        raise ValueError(f"camera_angle: unknown camera angle {camera_angle!r}, expected one of {list(CAMERA_ANGLES)}")
    picture_mm = frame_height_mm(sensor_width_mm, sensor_height_mm, sensor_fit, aspect)
    down, roll = (math.radians(a) for a in CAMERA_ANGLES[camera_angle])
    heading = math.radians(check_finite(heading_deg, "heading_deg"))

    pitch = math.pi / 2 - down  # Euler X: 90 degrees looks at the horizon, 0 straight down
    rotation = rot_z(heading) @ rot_x(pitch) @ rot_z(roll)
    distance = lens_mm * subject_height / (SHOT_SIZES[shot_size] * picture_mm)  # pinhole: size = f * H / depth
    location = center + rotation[:, 2] * distance  # the camera looks down its -Z
    return CameraPose(tuple(location), matrix_to_euler(rotation, compat=(pitch, 0.0, heading)), lens_mm)
