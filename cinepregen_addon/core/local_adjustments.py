"""The artist's local layer over a global camera move: offsets, edited keyframes and a retiming.

It is stored apart from the move's samples, keyed by frame and normalised time, so it survives re-applying or
swapping the global move (``camera_moves``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .camera_pose import CameraSample, Vec3, check_fields, check_finite, check_frame, check_positive, check_vec3


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
        check_frame(self.frame, "offsets.frame")
        object.__setattr__(self, "location", check_vec3(self.location, f"offsets[{self.frame}].location"))
        rotation = check_vec3(self.rotation_euler, f"offsets[{self.frame}].rotation_euler")
        object.__setattr__(self, "rotation_euler", rotation)
        object.__setattr__(self, "lens_mm", check_finite(self.lens_mm, f"offsets[{self.frame}].lens_mm"))


@dataclass(frozen=True)
class EditedKeyframe:
    """An artist's keyframe: at its frame these channels take exactly these values, whatever the global move says."""

    frame: int
    location: Vec3 | None = None
    rotation_euler: Vec3 | None = None
    lens_mm: float | None = None

    def __post_init__(self):
        check_frame(self.frame, "keyframes.frame")
        for key in ("location", "rotation_euler"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, check_vec3(getattr(self, key), f"keyframes[{self.frame}].{key}"))
        if self.lens_mm is not None:
            object.__setattr__(self, "lens_mm", check_positive(self.lens_mm, f"keyframes[{self.frame}].lens_mm"))


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
            shot_t, move_t = (check_finite(v, f"time_remap[{i}]") for v in pair)
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
        data = check_fields(cls, data, "adjustments")
        return cls(
            offsets=[Offset(**check_fields(Offset, o, "offsets")) for o in data.get("offsets", [])],
            keyframes=[
                EditedKeyframe(**check_fields(EditedKeyframe, k, "keyframes")) for k in data.get("keyframes", [])
            ],
            time_remap=[tuple(pair) for pair in data.get("time_remap", [])],
        )
