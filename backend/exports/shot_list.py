"""The board as plain records (what every export writes), SMPTE timecode, and the shot list CSV.

Two clocks: a shot's *source* range is its frames on the scene's timeline (what layout and the passes use); its
*record* range is where it sits in the cut, the board's shots back to back in board order from 00:00:00:00 (where
OTIO's CMX 3600 writer starts every EDL's record side). Out points are exclusive, as in an EDL: the first frame after
the shot.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path


@dataclass(frozen=True)
class ShotRecord:
    """One shot as the exports see it."""

    name: str
    frame_start: int
    frame_end: int  # inclusive, as on Blender's timeline
    size: str = ""  # "Medium Shot"
    angle: str = ""  # "Eye Level"
    lens_mm: float = 50.0  # at the shot's first frame
    lens_end_mm: float | None = None  # at its last frame, when the lens changes over the shot (a zoom)
    sensor_mm: float = 36.0
    move: str = ""  # "Dolly In: distance 2 m, ease in out"
    prompt: str = ""
    notes: str = ""
    seed: int = 0
    model: str = ""
    clip_path: str = ""  # the generated clip (the active take), "" when the shot has none
    camera: str = ""  # the camera object's name in the .blend
    key_frames: tuple[str, ...] = field(default=(), compare=False)  # image files for the storyboard
    key_frame_source: str = ""  # what they show: "clip", "clay pass", "normals pass" or "viewport render"

    @property
    def frames(self) -> int:
        return self.frame_end - self.frame_start + 1

    @property
    def lens(self) -> str:
        """ "35 mm", or "35 -> 17.5 mm" for a lens that changes over the shot."""
        if self.lens_end_mm is None or abs(self.lens_end_mm - self.lens_mm) < 1e-3:
            return f"{self.lens_mm:g} mm"
        return f"{self.lens_mm:g} -> {self.lens_end_mm:g} mm"


def frame_rate(fps: int, fps_base: float = 1.0) -> Fraction:
    """Blender's ``render.fps / render.fps_base`` as an exact rate (23.976 is 24000/1001)."""
    rate = Fraction(fps) / Fraction(fps_base).limit_denominator(1001)
    return rate.limit_denominator(1001)


def timecode(frame: int, rate: Fraction) -> str:
    """Non-drop-frame SMPTE timecode of a frame count at ``rate`` (frames numbered at the rounded rate, as NDF
    timecode does for 23.976 and 29.97)."""
    if frame < 0:
        raise ValueError(f"timecode of a negative frame ({frame})")
    base = round(rate)
    frames, seconds = frame % base, frame // base
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}:{frames:02d}"


def record_ranges(records: Sequence[ShotRecord], rate: Fraction) -> list[tuple[int, int]]:
    """(record in, record out) frame counts of each shot in the cut, out exclusive."""
    start, ranges = 0, []
    for record in records:
        ranges.append((start, start + record.frames))
        start += record.frames
    return ranges


CSV_COLUMNS = ["shot", "frame_start", "frame_end", "frames", "seconds", "source_tc_in", "source_tc_out",
               "record_tc_in", "record_tc_out", "size", "angle", "lens_mm", "lens_end_mm", "sensor_mm", "move",
               "prompt", "notes", "model", "seed", "clip"]


def write_shot_list_csv(records: Sequence[ShotRecord], rate: Fraction, path: str | Path) -> Path:
    """One row a shot, in board order (UTF-8, header row, RFC 4180 quoting)."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for record, (rec_in, rec_out) in zip(records, record_ranges(records, rate), strict=True):
            writer.writerow([
                record.name, record.frame_start, record.frame_end, record.frames,
                f"{float(record.frames / rate):.3f}", timecode(record.frame_start, rate),
                timecode(record.frame_end + 1, rate), timecode(rec_in, rate), timecode(rec_out, rate),
                record.size, record.angle, f"{record.lens_mm:g}",
                "" if record.lens_end_mm is None else f"{record.lens_end_mm:g}", f"{record.sensor_mm:g}", record.move,
                record.prompt, record.notes, record.model, record.seed, record.clip_path,
            ])
    return path
