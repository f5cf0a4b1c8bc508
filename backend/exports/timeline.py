"""The board as an editorial timeline: an OpenTimelineIO ``.otio`` and a CMX 3600 EDL written through OTIO's adapter.

One video track, the shots in board order back to back from 00:00:00:00. Each clip is named after its shot; its
source range is the shot's frames on the scene's timeline at the scene's rate; its media is the generated clip
(the active take) or, for a shot without one, a ``MissingReference`` (media offline, as editorial shows a shot still
to come: unlike a gap it keeps the shot's name, markers and metadata, and an EDL event of its own). Markers at the
shot's first frame carry its move, lens and size; ``metadata["cinepregen"]`` its prompt, seed, model, camera and notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from backend.exports.shot_list import ShotRecord


def _otio():
    try:
        import opentimelineio
    except ImportError as error:  # an install without the export extras
        raise RuntimeError("OTIO and EDL export need OpenTimelineIO: pip install opentimelineio "
                           "otio-cmx3600-adapter") from error
    return opentimelineio


def board_timeline(records: Sequence[ShotRecord], rate: Fraction, name: str):
    """An ``opentimelineio.schema.Timeline`` of the board."""
    otio = _otio()
    fps = float(rate)
    timeline = otio.schema.Timeline(name=name, global_start_time=otio.opentime.RationalTime(0, fps))
    track = otio.schema.Track(name="Shots", kind=otio.schema.TrackKind.Video)
    for record in records:
        shot_range = otio.opentime.TimeRange(otio.opentime.RationalTime(record.frame_start, fps),
                                             otio.opentime.RationalTime(record.frames, fps))
        if record.clip_path:
            media = otio.schema.ExternalReference(target_url=Path(record.clip_path).resolve().as_uri(),
                                                  available_range=shot_range)
        else:
            media = otio.schema.MissingReference(name=f"{record.name} (not generated)")
        clip = otio.schema.Clip(name=record.name, media_reference=media, source_range=shot_range)
        clip.metadata["cinepregen"] = {"prompt": record.prompt, "seed": record.seed, "model": record.model,
                                       "camera": record.camera, "notes": record.notes}
        at_start = otio.opentime.TimeRange(shot_range.start_time, otio.opentime.RationalTime(0, fps))
        for label, value, colour in (("move", record.move, otio.schema.MarkerColor.GREEN),
                                     ("lens", record.lens, otio.schema.MarkerColor.BLUE),
                                     ("size", f"{record.size}, {record.angle}", otio.schema.MarkerColor.YELLOW)):
            marker = otio.schema.Marker(name=f"{label}: {value}", marked_range=at_start, color=colour)
            marker.metadata["cinepregen"] = {label: value}
            clip.markers.append(marker)
        track.append(clip)
    timeline.tracks.append(track)
    return timeline


def write_otio(records: Sequence[ShotRecord], rate: Fraction, name: str, path: str | Path) -> Path:
    otio = _otio()
    otio.adapters.write_to_file(board_timeline(records, rate, name), str(path))
    return Path(path)


def write_edl(records: Sequence[ShotRecord], rate: Fraction, name: str, path: str | Path) -> Path:
    """CMX 3600 through OTIO's ``cmx_3600`` adapter: one event a shot, reel names from the shot names."""
    otio = _otio()
    timeline = board_timeline(records, rate, name)
    for clip in timeline.find_clips():
        clip.metadata["cmx_3600"] = {"reel": _reel_name(clip.name)}
    otio.adapters.write_to_file(timeline, str(path), adapter_name="cmx_3600")
    return Path(path)


def _reel_name(shot_name: str) -> str:
    """A CMX 3600 reel: at most 8 characters of letters, digits and underscores."""
    reel = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in shot_name)[:8]
    return reel or "AX"
