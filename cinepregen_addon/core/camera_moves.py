"""Cinematic camera moves as per-frame camera samples, plus the artist's local adjustments on top.

A shot's camera is two layers. The *global* move is a preset (``MoveSpec``: a kind, its parameters, an easing and
an optional handheld shake) sampled from a start pose by ``sample_move``. The *local* layer (``LocalAdjustments``)
holds what the artist changed by hand: offsets at chosen frames, edited keyframes and a retiming. It is stored apart
from the samples, keyed by frame and normalised time, so it survives re-applying or swapping the global move.

Conventions (Blender's): the world is Z-up; a camera looks down its local -Z with local +Y up; rotations are XYZ
Euler angles in radians, i.e. ``matrix = Rz(z) @ Ry(y) @ Rx(x)``; distances are metres, lenses millimetres. Angles in
move parameters are degrees (``*_deg``), as the artist types them. Everything here is plain Python and numpy, so it
runs inside Blender's own Python and in tests without bpy. ``camera_geometry`` (OpenCV extrinsics and intrinsics)
starts where this module stops: ``sample_to_matrix_world`` is the hand-over point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

Vec3 = tuple[float, float, float]
TargetPath = Callable[[int], Sequence[float]] | Sequence[Sequence[float]]

_WORLD_UP = np.array([0.0, 0.0, 1.0])


# ----------------------------------------------------------------------------------------------------------------
# Rotations
# ----------------------------------------------------------------------------------------------------------------


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def euler_to_matrix(rotation_euler: Sequence[float]) -> np.ndarray:
    """Blender XYZ Euler (radians) to a 3x3 rotation matrix."""
    x, y, z = (float(a) for a in rotation_euler)
    return _rot_z(z) @ _rot_y(y) @ _rot_x(x)


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
    right = np.cross(forward, _WORLD_UP)
    if np.linalg.norm(right) < 1e-9:  # straight down or up: picture top faces world +Y, as Euler (0, 0, 0) does
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    back = -forward
    return np.column_stack([right, np.cross(back, right), back])


def _look_matrix(eye: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    direction = np.asarray(target, dtype=np.float64) - np.asarray(eye, dtype=np.float64)
    if np.linalg.norm(direction) < 1e-9:
        raise ValueError("target: the camera sits on its target, there is no direction to look at")
    return _level_look_matrix(direction) @ _rot_z(roll)


def _roll_of(rotation: np.ndarray) -> float:
    """Roll of a camera about its view axis, relative to the level camera looking the same way."""
    relative = _level_look_matrix(-rotation[:, 2]).T @ rotation
    return math.atan2(relative[1, 0], relative[0, 0])


def look_at_rotation(eye: Sequence[float], target: Sequence[float], roll: float = 0.0) -> Vec3:
    """Blender Euler that points a camera at ``eye`` to ``target``; ``roll`` (radians) turns it about the view axis.

    Looking straight down, the top of the picture faces world +Y, as a camera with rotation (0, 0, 0) does.
    """
    return matrix_to_euler(_look_matrix(np.asarray(eye, float), np.asarray(target, float), roll))


# ----------------------------------------------------------------------------------------------------------------
# Poses and samples
# ----------------------------------------------------------------------------------------------------------------


def _vec3(value: Sequence[float], name: str) -> Vec3:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected 3 numbers, got {value!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name}: expected 3 finite numbers, got {value!r}")
    return values


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _frame(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer frame, got {value!r}")
    return value


def _fields(cls: type, data: object, name: str) -> dict:
    """Check a JSON object against a dataclass's fields, so a typo is a ValueError naming it."""
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected an object, got {data!r}")
    unknown = sorted(set(data) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{name}.{unknown[0]}: not a field of {cls.__name__}")
    return data


def _positive(value: object, name: str) -> float:
    if _finite(value, name) <= 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class CameraPose:
    """Where a camera is: the start of a move, or what framing helpers return."""

    location: Vec3
    rotation_euler: Vec3
    lens_mm: float = 50.0

    def __post_init__(self):
        object.__setattr__(self, "location", _vec3(self.location, "location"))
        object.__setattr__(self, "rotation_euler", _vec3(self.rotation_euler, "rotation_euler"))
        object.__setattr__(self, "lens_mm", _positive(self.lens_mm, "lens_mm"))


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
        return None if value is None else list(_vec3(value, name))
    if key == "target_path":
        if value is None:
            return None
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) == 0:
            raise ValueError(f"{name}: expected a list of [x, y, z] points, one per frame")
        return [list(_vec3(point, f"{name}[{i}]")) for i, point in enumerate(value)]
    if key in _POSITIVE_PARAMS:
        _positive(value, name)
        return value
    _finite(value, name)
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
            if _finite(getattr(self, key), f"shake.{key}") < 0:
                raise ValueError(f"shake.{key}: expected a number >= 0, got {getattr(self, key)!r}")
        _positive(self.frequency_hz, "shake.frequency_hz")
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
        data = _fields(cls, data, "move")
        shake = data.get("shake")
        shake = None if shake is None else HandheldShake(**_fields(HandheldShake, shake, "shake"))
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
    return start.location - start.rotation[:, 2] * _positive(p["target_distance"], "params.target_distance")


def _target_path_fn(path: TargetPath | None, frame_start: int, frame_end: int) -> Callable[[int], np.ndarray]:
    if path is None:
        raise ValueError("target_path: a follow move needs the target's position per frame (a callable or a list)")
    if callable(path):
        return lambda f: np.asarray(_vec3(path(f), f"target_path({f})"))
    points = [np.asarray(_vec3(p, f"target_path[{i}]")) for i, p in enumerate(path)]
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
        return _Pose(loc, _rot_z(math.radians(p["angle_deg"]) * s) @ rot, lens)
    if kind == "tilt":
        return _Pose(loc, rot @ _rot_x(math.radians(p["angle_deg"]) * s), lens)
    if kind == "roll":
        return _Pose(loc, rot @ _rot_z(math.radians(p["angle_deg"]) * s), lens)
    if kind == "zoom":  # geometric, so the picture grows at a steady rate
        return _Pose(loc, rot, lens * (_positive(p["lens_end_mm"], "params.lens_end_mm") / lens) ** s)
    if kind == "orbit":
        center = _target_point(start, p)
        turn = _rot_z(math.radians(p["angle_deg"]) * s)
        return _Pose(center + moved + turn @ (loc - center), turn @ _look_matrix(loc, center, _roll_of(rot)), lens)
    if kind == "crane":
        center = _target_point(start, p) + moved
        loc = loc + moved * np.array([1.0, 1.0, 0.0])  # the crane's base travels with the subject over the ground
        toward = (center - loc) * np.array([1.0, 1.0, 0.0])  # the arm reaches horizontally toward the subject
        if np.linalg.norm(toward) < 1e-9:
            toward = view * np.array([1.0, 1.0, 0.0])
        length = np.linalg.norm(toward)
        reach = toward / length * p["reach"] if length > 1e-9 else np.zeros(3)
        new_loc = loc + (_WORLD_UP * p["rise"] + reach) * s
        return _Pose(new_loc, _look_matrix(new_loc, center, _roll_of(rot)), lens)
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
        return _Pose(new_loc, _look_matrix(new_loc, target, _roll_of(rot)), lens)
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
    if _frame(frame_end, "frame_end") < _frame(frame_start, "frame_start"):
        raise ValueError(f"frame_end: {frame_end} is before frame_start {frame_start}")
    fps = _positive(fps, "fps")
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
            pose.rotation = pose.rotation @ _rot_x(ax) @ _rot_y(ay) @ _rot_z(az)

    samples, euler = [], start.rotation_euler
    for f, pose in zip(frames, poses, strict=True):
        euler = matrix_to_euler(pose.rotation, compat=euler)
        location = tuple(float(v) for v in pose.location)
        samples.append(CameraSample(f, location, euler, _positive(pose.lens_mm, "lens_mm")))
    return samples


# ----------------------------------------------------------------------------------------------------------------
# Local adjustments
# ----------------------------------------------------------------------------------------------------------------


def _monotone_cubic(xk: np.ndarray, yk: np.ndarray, x: np.ndarray, hold_ends: bool) -> np.ndarray:
    """Monotone cubic Hermite (Fritsch-Carlson) through keys: no overshoot between keys, C1 everywhere.

    ``hold_ends``: zero slope at the first and last key and constant outside them, as Blender holds an F-curve;
    otherwise the end slopes follow the neighbouring segment (an identity stays an identity).
    """
    if len(xk) == 1:
        return np.full(x.shape + yk.shape[1:], yk[0], dtype=np.float64)
    h = np.diff(xk)
    delta = np.diff(yk, axis=0) / h.reshape((-1,) + (1,) * (yk.ndim - 1))
    slopes = np.zeros_like(yk, dtype=np.float64)
    for k in range(1, len(xk) - 1):
        w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
        same_sign = delta[k - 1] * delta[k] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            harmonic = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
        slopes[k] = np.where(same_sign, harmonic, 0.0)
    if not hold_ends:
        slopes[0], slopes[-1] = delta[0], delta[-1]
    xc = np.clip(x, xk[0], xk[-1])
    i = np.clip(np.searchsorted(xk, xc, side="right") - 1, 0, len(xk) - 2)
    t = ((xc - xk[i]) / h[i]).reshape((-1,) + (1,) * (yk.ndim - 1))
    hi = h[i].reshape(t.shape)
    h00, h10, h01, h11 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t, -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * yk[i] + h10 * hi * slopes[i] + h01 * yk[i + 1] + h11 * hi * slopes[i + 1]


@dataclass(frozen=True)
class Offset:
    """A nudge at one frame, added on top of the global move (world metres, Euler radians, millimetres)."""

    frame: int
    location: Vec3 = (0.0, 0.0, 0.0)
    rotation_euler: Vec3 = (0.0, 0.0, 0.0)
    lens_mm: float = 0.0

    def __post_init__(self):
        _frame(self.frame, "offsets.frame")
        object.__setattr__(self, "location", _vec3(self.location, f"offsets[{self.frame}].location"))
        object.__setattr__(self, "rotation_euler", _vec3(self.rotation_euler, f"offsets[{self.frame}].rotation_euler"))
        object.__setattr__(self, "lens_mm", _finite(self.lens_mm, f"offsets[{self.frame}].lens_mm"))


@dataclass(frozen=True)
class EditedKeyframe:
    """An artist's keyframe: at its frame these channels take exactly these values, whatever the global move says."""

    frame: int
    location: Vec3 | None = None
    rotation_euler: Vec3 | None = None
    lens_mm: float | None = None

    def __post_init__(self):
        _frame(self.frame, "keyframes.frame")
        for key in ("location", "rotation_euler"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _vec3(getattr(self, key), f"keyframes[{self.frame}].{key}"))
        if self.lens_mm is not None:
            object.__setattr__(self, "lens_mm", _positive(self.lens_mm, f"keyframes[{self.frame}].lens_mm"))


_CHANNELS = ("location", "rotation_euler", "lens_mm")


@dataclass
class LocalAdjustments:
    """The artist's layer over a global move, applied in this order:

    1. ``time_remap``: pairs (shot time, move time) in normalised time, both increasing (move time may stay put for
       a freeze); (0, 0) and (1, 1) are implied. Shot time ``t`` shows the move at ``remap(t)``, interpolated
       smoothly and monotonically between the pairs, so a retiming also survives a change of frame range.
    2. ``offsets`` and ``keyframes`` become per-channel deltas from the retimed global move at their frames,
       interpolated between those frames without overshoot and held before the first and after the last.
       An offset adds its delta at its frame; an edited keyframe pins its channels to its values at its frame
       (edited keyframes outside the samples' frames are ignored).
    """

    offsets: list[Offset] = field(default_factory=list)
    keyframes: list[EditedKeyframe] = field(default_factory=list)
    time_remap: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self):
        for name, items in (("offsets", self.offsets), ("keyframes", self.keyframes)):
            frames = [item.frame for item in items]
            repeated = sorted({f for f in frames if frames.count(f) > 1})
            if repeated:
                raise ValueError(f"{name}: frame {repeated[0]} appears more than once")
        pairs = []
        for i, pair in enumerate(self.time_remap):
            if len(pair) != 2:
                raise ValueError(f"time_remap[{i}]: expected a pair (shot time, move time), got {pair!r}")
            shot_t, move_t = (_finite(v, f"time_remap[{i}]") for v in pair)
            if not (0.0 < shot_t < 1.0 and 0.0 <= move_t <= 1.0):
                raise ValueError(f"time_remap[{i}]: times must lie in (0, 1) and [0, 1], got {pair!r}")
            pairs.append((shot_t, move_t))
        keys = [(0.0, 0.0), *pairs, (1.0, 1.0)]
        for (s0, m0), (s1, m1) in zip(keys, keys[1:], strict=False):
            if s1 <= s0 or m1 < m0:
                raise ValueError(f"time_remap: must be increasing (a monotone retiming), got {self.time_remap!r}")
        self.time_remap = pairs

    def remap(self, t: np.ndarray) -> np.ndarray:
        """Move time shown at shot time ``t`` (both normalised)."""
        keys = np.array([(0.0, 0.0), *self.time_remap, (1.0, 1.0)])
        return np.clip(_monotone_cubic(keys[:, 0], keys[:, 1], np.asarray(t, float), hold_ends=False), 0.0, 1.0)

    def apply(self, samples: Sequence[CameraSample]) -> list[CameraSample]:
        """The global move's samples (consecutive frames) with this layer on top; ``samples`` are not changed."""
        if not samples:
            return []
        frames = np.array([s.frame for s in samples])
        if np.any(np.diff(frames) != 1):
            raise ValueError("samples: expected one sample per consecutive frame")
        base = {
            "location": np.array([s.location for s in samples]),
            "rotation_euler": np.array([s.rotation_euler for s in samples]),
            "lens_mm": np.array([[s.lens_mm] for s in samples]),
        }
        if self.time_remap and len(samples) > 1:
            position = self.remap(np.linspace(0.0, 1.0, len(samples))) * (len(samples) - 1)
            lo = np.minimum(np.floor(position).astype(int), len(samples) - 2)
            w = (position - lo)[:, None]
            base = {key: (1 - w) * values[lo] + w * values[lo + 1] for key, values in base.items()}
        result = {}
        for key in _CHANNELS:
            deltas = {o.frame: np.atleast_1d(getattr(o, key)) for o in self.offsets}
            for k in self.keyframes:  # an edited keyframe overrides an offset at the same frame
                if getattr(k, key) is not None and frames[0] <= k.frame <= frames[-1]:
                    deltas[k.frame] = np.atleast_1d(getattr(k, key)) - base[key][k.frame - frames[0]]
            if not deltas:
                result[key] = base[key]
                continue
            xk = np.array(sorted(deltas), dtype=np.float64)
            yk = np.array([deltas[f] for f in sorted(deltas)])
            result[key] = base[key] + _monotone_cubic(xk, yk, frames.astype(np.float64), hold_ends=True)
        out = []
        for i, f in enumerate(frames):
            lens = float(result["lens_mm"][i, 0])
            if lens <= 0:
                raise ValueError(f"lens_mm: local adjustments make the lens {lens:.3f} mm at frame {f}")
            out.append(
                CameraSample(
                    int(f),
                    tuple(float(v) for v in result["location"][i]),
                    tuple(float(v) for v in result["rotation_euler"][i]),
                    lens,
                )
            )
        return out

    def rows(self) -> list[tuple[str, int, str]]:
        """What the layer holds, for a person: (kind, index, sentence) per offset ("offset"), edited keyframe
        ("keyframe") and retiming pair ("retime"), each kind in frame order; ``index`` is its place in its list."""

        def delta(values, unit: str, scale: float = 1.0) -> list[str]:
            return [f"{v * scale:+.2f}{unit} {axis}" for axis, v in zip("xyz", values, strict=True) if abs(v) > 1e-6]

        found = []
        for i, o in sorted(enumerate(self.offsets), key=lambda pair: pair[1].frame):
            parts = delta(o.location, " m") + delta(o.rotation_euler, "\u00b0", 180.0 / math.pi)
            parts += [f"{o.lens_mm:+.1f} mm lens"] if abs(o.lens_mm) > 1e-6 else []
            found.append(("offset", i, f"offset at frame {o.frame}: " + (", ".join(parts) or "none")))
        for i, k in sorted(enumerate(self.keyframes), key=lambda pair: pair[1].frame):
            parts = []
            if k.location is not None:
                parts.append("at ({:.2f}, {:.2f}, {:.2f}) m".format(*k.location))
            if k.rotation_euler is not None:
                degrees = (math.degrees(v) for v in k.rotation_euler)
                parts.append("turned ({:.1f}, {:.1f}, {:.1f})\u00b0".format(*degrees))
            if k.lens_mm is not None:
                parts.append(f"{k.lens_mm:.1f} mm lens")
            found.append(("keyframe", i, f"pinned at frame {k.frame}: " + ", ".join(parts)))
        for i, (shot_t, move_t) in enumerate(self.time_remap):
            found.append(("retime", i, f"retimed: {shot_t:.0%} of the shot shows {move_t:.0%} of the move"))
        return found

    def without(self, kind: str, index: int) -> LocalAdjustments:
        """The layer with one item of ``rows()`` removed."""
        lists = {"offset": "offsets", "keyframe": "keyframes", "retime": "time_remap"}
        if kind not in lists:
            raise ValueError(f"kind: expected one of {sorted(lists)}, got {kind!r}")
        items = list(getattr(self, lists[kind]))
        if not 0 <= index < len(items):
            raise ValueError(f"no {kind} {index} (the shot has {len(items)})")
        del items[index]
        return LocalAdjustments(**{**{"offsets": self.offsets, "keyframes": self.keyframes,
                                      "time_remap": self.time_remap}, lists[kind]: items})

    def to_dict(self) -> dict:
        return {
            "offsets": [asdict(o) for o in self.offsets],
            "keyframes": [asdict(k) for k in self.keyframes],
            "time_remap": [list(pair) for pair in self.time_remap],
        }

    @classmethod
    def from_dict(cls, data: dict) -> LocalAdjustments:
        data = _fields(cls, data, "adjustments")
        return cls(
            offsets=[Offset(**_fields(Offset, o, "offsets")) for o in data.get("offsets", [])],
            keyframes=[EditedKeyframe(**_fields(EditedKeyframe, k, "keyframes")) for k in data.get("keyframes", [])],
            time_remap=[tuple(pair) for pair in data.get("time_remap", [])],
        )
