"""What the board needs to know of the backend's models (``/v1/health`` ``models``), without bpy: which can be
picked, what a new shot's length should be, and how many frames a model really generates for a shot."""

from __future__ import annotations

from typing import Any

FALLBACK_SHOT_LENGTH = 48  # when the backend has not been asked yet


def pickable_models(health: dict[str, Any]) -> list[dict[str, Any]]:
    """The catalogue entries a job can name (entries with an ``error`` cannot be served)."""
    return [entry for entry in health.get("models", []) if isinstance(entry, dict) and "name" in entry
            and "error" not in entry]


def generated_frames(length: int, frame_rule: str) -> int:
    """Frames the model generates for a shot of ``length`` (it is cut back to ``length``): "4k+1" models round up
    to the next 4k+1, "any" generates exactly ``length``."""
    if frame_rule == "4k+1":
        return length + (1 - length) % 4
    return length


def frame_note(length: int, frame_rule: str) -> str:
    """A sentence for the panel when the model cannot generate ``length`` frames as they are, else ''."""
    generated = generated_frames(length, frame_rule)
    if generated == length:
        return ""
    return f"this model generates {generated} frames (4k+1) and keeps the first {length}"
