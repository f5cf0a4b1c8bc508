"""Cinematic camera moves as per-frame camera samples: the *global* layer of a shot's camera.

A move is a preset (``MoveSpec``: a kind, its parameters, an easing and an optional handheld shake) sampled from a
start pose by ``sample_move``. What the artist changes by hand on top lives in ``local_adjustments``; poses, samples
and Blender's rotation conventions in ``camera_pose``. Angles in move parameters are degrees (``*_deg``), as the
artist types them. Plain Python and numpy, so it runs inside Blender's own Python and in tests without bpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .camera_pose import (
    WORLD_UP,
    CameraPose,
    CameraSample,
    check_fields,
    check_finite,
    check_frame,
    check_positive,
    check_vec3,
    euler_to_matrix,
    look_matrix,
    matrix_to_euler,
    roll_of,
    rot_x,
    rot_y,
    rot_z,
)

TargetPath = Callable[[int], Sequence[float]] | Sequence[Sequence[float]]


# ----------------------------------------------------------------------------------------------------------------
# Easing
# ----------------------------------------------------------------------------------------------------------------

EASINGS: dict[str, Callable[[float], float]] = {
    "linear": lambda t: t,
    "ease_in": lambda t: t * t,
    "ease_out": lambda t: 1.0 - (1.0 - t) * (1.0 - t),
    "ease_in_out": lambda t: t * t * (3.0 - 2.0 * t),  # smoothstep: starts and stops at rest
    "smooth": lambda t: t * t * t * (t * (6.0 * t - 15.0) + 10.0),  # smootherstep: no jolt of acceleration either
}


def ease(name: str, t: float) -> float:
    """Progress of a move at normalised time ``t`` in [0, 1] under the named easing."""
    if name not in EASINGS:
        raise ValueError(f"easing: unknown easing {name!r}, expected one of {sorted(EASINGS)}")
    return EASINGS[name](min(max(float(t), 0.0), 1.0))


# ----------------------------------------------------------------------------------------------------------------
# Move specs
# ----------------------------------------------------------------------------------------------------------------

# Each move's parameters and their defaults. ``target`` is a world point (None: ``target_distance`` metres along the
# start view axis). Signs: dolly/dolly_zoom + pushes in; truck + goes right; pedestal + goes up the camera's up axis;
# pan and orbit + turn counter-clockwise seen from above; tilt + looks up; roll + turns the camera
# counter-clockwise as seen from behind it (the horizon in the picture turns clockwise).
MOVE_DESCRIPTIONS = {
    "static": "The camera holds its start pose",
    "dolly": "The camera travels along its view: in, or out with a negative distance",
    "truck": "The camera travels sideways, right or left, keeping its aim",
    "pedestal": "The camera rises or sinks along its up axis, keeping its aim",
    "pan": "The camera turns left or right on the spot",
    "tilt": "The camera turns up or down on the spot",
    "roll": "The camera rolls about its view axis (the horizon turns)",
    "orbit": "The camera circles the target (a moving subject too) and keeps it centred",
    "crane": "The camera rises and reaches toward the target on a crane arm, keeping it in view",
    "zoom": "The lens changes focal length; the camera stays put",
    "dolly_zoom": "The camera travels while the lens keeps the subject the same size (the Vertigo effect)",
    "follow": "The camera keeps the subject in view, travelling with it or turning from where it stands",
    "handheld": "The camera holds its start pose with a handheld wobble",
}
MOVE_PARAMS: dict[str, dict[str, object]] = {
    "static": {},
    "dolly": {"distance": 1.0},
    "truck": {"distance": 1.0},
    "pedestal": {"distance": 0.5},
    "pan": {"angle_deg": 30.0},
    "tilt": {"angle_deg": 15.0},
    "roll": {"angle_deg": 15.0},
    "orbit": {"angle_deg": 45.0, "target": None, "target_distance": 5.0},
    "crane": {"rise": 2.0, "reach": 0.0, "target": None, "target_distance": 5.0},
    "zoom": {"lens_end_mm": 85.0},
    "dolly_zoom": {"distance": 2.0, "target": None, "target_distance": 5.0},
    "follow": {"translate": True, "offset": None, "target_path": None},
    "handheld": {},
}


def _in_units(value, unit: str) -> str:
    if unit == "POINT":
        return "(" + ", ".join(f"{float(v):.2f}" for v in value) + ")"
    if unit == "BOOL":
        return "on" if value else "off"
    return f"{float(value):g}" + {"LENGTH": " m", "ANGLE": "°", "LENS": " mm"}.get(unit, "")


@dataclass(frozen=True)
class ParamSpec:
    """How a move parameter is edited: its label, unit, tooltip and soft range (the panel's properties are made
    from these, so the UI and the move library agree on what each parameter means)."""

    label: str
    unit: str  # "LENGTH" (metres), "ANGLE" (degrees here, shown in the scene's rotation units), "LENS" (mm),
    # "BOOL", "POINT" (a world point, or None)
    description: str
    soft_min: float = -10.0
    soft_max: float = 10.0


# Every parameter but ``target_path``, which is not edited: Frame Subject takes it from the subject.
PARAM_SPECS: dict[str, ParamSpec] = {
    "distance": ParamSpec("Distance", "LENGTH", "How far the camera travels over the shot: + pushes in (dolly, dolly "
                          "zoom), goes right (truck) or goes up (pedestal)", -20.0, 20.0),
    "angle_deg": ParamSpec("Angle", "ANGLE", "How far the camera turns over the shot: + pans or orbits "
                           "counter-clockwise seen from above, tilts up, rolls the camera counter-clockwise",
                           -360.0, 360.0),
    "target": ParamSpec("Target", "POINT", "The world point the move turns around and keeps in view (off: the "
                        "point Target Distance ahead of the start view; Frame Subject sets it to the subject)"),
    "target_distance": ParamSpec("Target Distance", "LENGTH", "Without a target, how far ahead of the start view "
                                 "the move's centre is", 0.1, 50.0),
    "rise": ParamSpec("Rise", "LENGTH", "How far the crane lifts the camera over the shot (negative: lowers it)"),
    "reach": ParamSpec("Reach", "LENGTH", "How far the crane's arm reaches toward the target over the shot"),
    "lens_end_mm": ParamSpec("End Lens", "LENS", "Focal length at the end of the zoom (the start is the shot's "
                             "lens)", 8.0, 300.0),
    "translate": ParamSpec("Travel With Subject", "BOOL", "On: the camera travels with the subject at its offset; "
                           "off: it stays put and only turns to keep the subject in view"),
    "offset": ParamSpec("Offset", "POINT", "Where the camera stays relative to the followed subject (off: where it "
                        "is at the first frame)"),
}
SHAKE_SPECS: dict[str, ParamSpec] = {
    "amplitude_m": ParamSpec("Shake", "LENGTH", "Root-mean-square handheld wobble of the camera's position",
                             0.0, 0.1),
    "rotation_deg": ParamSpec("Shake Rotation", "ANGLE", "Root-mean-square handheld wobble of the camera's aim",
                              0.0, 5.0),
    "frequency_hz": ParamSpec("Shake Frequency", "NONE", "How fast the camera wobbles, in hertz", 0.1, 5.0),
    "seed": ParamSpec("Shake Seed", "NONE", "Another seed gives another wobble of the same size", 0.0, 1000.0),
}
_VECTOR_PARAMS = {key for key, spec in PARAM_SPECS.items() if spec.unit == "POINT"}
TRACKING_MOVES = ("orbit", "crane", "dolly_zoom")  # moves around a subject, made around a moving one too
_POSITIVE_PARAMS = {"target_distance", "lens_end_mm"}


def _check_param(key: str, value: object) -> object:
    """Validate one move parameter; returns it in its JSON form (lists, not tuples) so round trips are exact."""
    name = f"params.{key}"
    if key == "translate":
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value
    if key in _VECTOR_PARAMS:
        return None if value is None else list(check_vec3(value, name))
    if key == "target_path":
        if value is None:
            return None
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) == 0:
            raise ValueError(f"{name}: expected a list of [x, y, z] points, one per frame")
        return [list(check_vec3(point, f"{name}[{i}]")) for i, point in enumerate(value)]
    if key in _POSITIVE_PARAMS:
        check_positive(value, name)
        return value
    check_finite(value, name)
    return value


@dataclass(frozen=True)
class HandheldShake:
    """Seeded, smooth handheld wobble layered on top of any move (camera-local offsets and turns)."""

    amplitude_m: float = 0.01
    rotation_deg: float = 0.3
    frequency_hz: float = 1.2
    seed: int = 0

    def __post_init__(self):
        for key in ("amplitude_m", "rotation_deg"):
            if check_finite(getattr(self, key), f"shake.{key}") < 0:
                raise ValueError(f"shake.{key}: expected a number >= 0, got {getattr(self, key)!r}")
        check_positive(self.frequency_hz, "shake.frequency_hz")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"shake.seed: expected an integer, got {self.seed!r}")

    def offsets(self, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera-local location (N,3) metres and rotation (N,3) radians at the given times.

        Each channel is three sines at about 1, 2 and 3 times the frequency, with seeded frequencies and phases:
        smooth, zero-mean over a few periods, with a root-mean-square of exactly the amplitude.
        """
        rng = np.random.default_rng(self.seed)
        octaves, weights = np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.4, 0.15])
        frequencies = self.frequency_hz * octaves * rng.uniform(0.8, 1.2, size=(6, 3))  # (channel, octave)
        phases = rng.uniform(0.0, 2.0 * math.pi, size=(6, 3))
        waves = np.sin(2.0 * math.pi * frequencies[None] * np.asarray(seconds, float)[:, None, None] + phases[None])
        noise = (waves * weights).sum(-1) / math.sqrt((weights**2).sum() / 2.0)  # (N, 6), unit RMS per channel
        return self.amplitude_m * noise[:, :3], math.radians(self.rotation_deg) * noise[:, 3:]


@dataclass(frozen=True)
class MoveSpec:
    """A global camera move: what the storyboard stores per shot (as JSON, see ``to_dict``)."""

    kind: str = "static"
    params: dict = field(default_factory=dict)
    easing: str = "ease_in_out"
    shake: HandheldShake | None = None

    def __post_init__(self):
        if self.kind not in MOVE_PARAMS:
            raise ValueError(f"kind: unknown camera move {self.kind!r}, expected one of {sorted(MOVE_PARAMS)}")
        if self.easing not in EASINGS:
            raise ValueError(f"easing: unknown easing {self.easing!r}, expected one of {sorted(EASINGS)}")
        if not isinstance(self.params, dict):
            raise ValueError(f"params: expected a dict, got {type(self.params).__name__}")
        allowed = MOVE_PARAMS[self.kind]
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(f"params.{unknown[0]}: not a parameter of a {self.kind} move, expected {sorted(allowed)}")
        checked = {key: _check_param(key, value) for key, value in self.params.items()}
        object.__setattr__(self, "params", checked)
        if self.shake is not None and not isinstance(self.shake, HandheldShake):
            raise ValueError("shake: expected a HandheldShake or None")

    def resolved_params(self) -> dict:
        """The parameters with the move's defaults filled in."""
        return {**MOVE_PARAMS[self.kind], **self.params}

    def summary(self) -> str:
        """The move in words for shot lists and boards: "Dolly In: distance 2 m, ease in out, handheld"."""
        parts = [f"{PARAM_SPECS[key].label.lower()} {_in_units(value, PARAM_SPECS[key].unit)}"
                 for key, value in self.resolved_params().items() if key in PARAM_SPECS and value is not None]
        if self.kind != "static":
            parts.append(self.easing.replace("_", " "))
        if self.shake is not None:
            parts.append("handheld")
        name = self.kind.replace("_", " ").title()
        return f"{name}: {', '.join(parts)}" if parts else name

    def to_dict(self) -> dict:
        shake = None if self.shake is None else asdict(self.shake)
        return {"kind": self.kind, "params": dict(self.params), "easing": self.easing, "shake": shake}

    @classmethod
    def from_dict(cls, data: dict) -> MoveSpec:
        data = check_fields(cls, data, "move")
        shake = data.get("shake")
        shake = None if shake is None else HandheldShake(**check_fields(HandheldShake, shake, "shake"))
        return cls(data.get("kind", "static"), data.get("params", {}), data.get("easing", "ease_in_out"), shake)


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Pose:
    location: np.ndarray
    rotation: np.ndarray
    lens_mm: float


def _target_point(start: _Pose, p: dict) -> np.ndarray:
    if p["target"] is not None:
        return np.asarray(p["target"], float)
    return start.location - start.rotation[:, 2] * check_positive(p["target_distance"], "params.target_distance")


def _target_path_fn(path: TargetPath | None, frame_start: int, frame_end: int) -> Callable[[int], np.ndarray]:
    if path is None:
        raise ValueError("target_path: a follow move needs the target's position per frame (a callable or a list)")
    if callable(path):
        return lambda f: np.asarray(check_vec3(path(f), f"target_path({f})"))
    points = [np.asarray(check_vec3(p, f"target_path[{i}]")) for i, p in enumerate(path)]
    if len(points) < frame_end - frame_start + 1:
        raise ValueError(f"target_path: {len(points)} points for {frame_end - frame_start + 1} frames")
    return lambda f: points[f - frame_start]


def _move_pose(kind: str, start: _Pose, s: float, p: dict, target: np.ndarray | None,
               moved: np.ndarray | None = None) -> _Pose:
    """The camera at eased progress ``s`` of a move (``target``: the followed subject at this frame; ``moved``: how
    far the subject of an orbit, crane or dolly zoom has moved since the first frame)."""
    moved = np.zeros(3) if moved is None else moved
    loc, rot, lens = start.location, start.rotation, start.lens_mm
    right, up, view = rot[:, 0], rot[:, 1], -rot[:, 2]
    if kind in ("static", "handheld"):
        return _Pose(loc, rot, lens)
    if kind == "dolly":
        return _Pose(loc + view * p["distance"] * s, rot, lens)
    if kind == "truck":
        return _Pose(loc + right * p["distance"] * s, rot, lens)
    if kind == "pedestal":
        return _Pose(loc + up * p["distance"] * s, rot, lens)
    if kind == "pan":
        return _Pose(loc, rot_z(math.radians(p["angle_deg"]) * s) @ rot, lens)
    if kind == "tilt":
        return _Pose(loc, rot @ rot_x(math.radians(p["angle_deg"]) * s), lens)
    if kind == "roll":
        return _Pose(loc, rot @ rot_z(math.radians(p["angle_deg"]) * s), lens)
    if kind == "zoom":  # geometric, so the picture grows at a steady rate
        return _Pose(loc, rot, lens * (check_positive(p["lens_end_mm"], "params.lens_end_mm") / lens) ** s)
    if kind == "orbit":
        center = _target_point(start, p)
        turn = rot_z(math.radians(p["angle_deg"]) * s)
        return _Pose(center + moved + turn @ (loc - center), turn @ look_matrix(loc, center, roll_of(rot)), lens)
    if kind == "crane":
        center = _target_point(start, p) + moved
        loc = loc + moved * np.array([1.0, 1.0, 0.0])  # the crane's base travels with the subject over the ground
        toward = (center - loc) * np.array([1.0, 1.0, 0.0])  # the arm reaches horizontally toward the subject
        if np.linalg.norm(toward) < 1e-9:
            toward = view * np.array([1.0, 1.0, 0.0])
        length = np.linalg.norm(toward)
        reach = toward / length * p["reach"] if length > 1e-9 else np.zeros(3)
        new_loc = loc + (WORLD_UP * p["rise"] + reach) * s
        return _Pose(new_loc, look_matrix(new_loc, center, roll_of(rot)), lens)
    if kind == "dolly_zoom":
        center = _target_point(start, p)
        depth = float(np.dot(center - loc, view))
        if depth <= 0:
            raise ValueError("params.target: a dolly zoom's subject must be in front of the camera")
        if p["distance"] >= depth:
            raise ValueError(f"params.distance: {p['distance']} m would reach the subject {depth:.3f} m away")
        across = moved - view * float(np.dot(moved, view))  # a moving subject stays centred ...
        new_loc = loc + across + view * p["distance"] * s
        new_depth = float(np.dot(center + moved - new_loc, view))  # ... and at its size
        if new_depth <= 0:
            raise ValueError("params.target: the subject walks behind the dolly-zoom camera")
        return _Pose(new_loc, rot, lens * new_depth / depth)
    if kind == "follow":
        new_loc = target + p["offset"] if p["translate"] else loc
        return _Pose(new_loc, look_matrix(new_loc, target, roll_of(rot)), lens)
    raise ValueError(f"kind: unknown camera move {kind!r}")


def sample_move(
    spec: MoveSpec,
    start: CameraPose,
    frame_start: int,
    frame_end: int,
    *,
    fps: float = 24.0,
    target_path: TargetPath | None = None,
) -> list[CameraSample]:
    """One camera sample per frame, ``frame_start`` to ``frame_end`` inclusive, for a move from ``start``.

    ``target_path`` is the followed subject's world position per frame for a follow move: a callable of the frame,
    or a list indexed from ``frame_start``; without it, the spec's ``target_path`` parameter is used. For an orbit,
    crane or dolly zoom it is the subject's path too: the move is made around where the subject is at each frame
    (an orbit circles a walking character, a dolly zoom keeps it centred and at its size).
    """
    if check_frame(frame_end, "frame_end") < check_frame(frame_start, "frame_start"):
        raise ValueError(f"frame_end: {frame_end} is before frame_start {frame_start}")
    fps = check_positive(fps, "fps")
    p = spec.resolved_params()
    origin = _Pose(np.asarray(start.location), euler_to_matrix(start.rotation_euler), start.lens_mm)
    target_at = None
    if spec.kind == "follow":
        target_at = _target_path_fn(
            target_path if target_path is not None else p["target_path"], frame_start, frame_end
        )
        if p["offset"] is None:
            p["offset"] = origin.location - target_at(frame_start)
        p["offset"] = np.asarray(p["offset"], float)
    moved_at = None
    if spec.kind in TRACKING_MOVES and target_path is not None:  # a moving subject: the move goes with it
        subject_at = _target_path_fn(target_path, frame_start, frame_end)
        moved_at = lambda f: subject_at(f) - subject_at(frame_start)  # noqa: E731

    frames = range(frame_start, frame_end + 1)
    span = max(frame_end - frame_start, 1)
    poses = [
        _move_pose(spec.kind, origin, ease(spec.easing, (f - frame_start) / span), p,
                   target_at(f) if target_at else None, moved_at(f) if moved_at else None)
        for f in frames
    ]
    shake = spec.shake if spec.shake is not None or spec.kind != "handheld" else HandheldShake()
    if shake is not None:
        loc_noise, rot_noise = shake.offsets(np.array([(f - frame_start) / fps for f in frames]))
        for pose, dl, (ax, ay, az) in zip(poses, loc_noise, rot_noise, strict=True):
            pose.location = pose.location + pose.rotation @ dl
            pose.rotation = pose.rotation @ rot_x(ax) @ rot_y(ay) @ rot_z(az)

    samples, euler = [], start.rotation_euler
    for f, pose in zip(frames, poses, strict=True):
        euler = matrix_to_euler(pose.rotation, compat=euler)
        location = tuple(float(v) for v in pose.location)
        samples.append(CameraSample(f, location, euler, check_positive(pose.lens_mm, "lens_mm")))
    return samples
