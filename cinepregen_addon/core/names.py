"""Unique names for things the artist names (shots): two shots never share a name, so they never share a folder
on disk or a strip in the sequencer."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Collection


def unique_name(wanted: str, taken: Collection[str]) -> str:
    """``wanted``, or, when it is taken, ``wanted`` with the first free ``.NNN`` suffix (Blender's own scheme)."""
    if wanted not in taken:
        return wanted
    base = re.sub(r"\.\d{3}$", "", wanted)
    return next(f"{base}.{n:03d}" for n in itertools.count(1) if f"{base}.{n:03d}" not in taken)


def next_shot_name(taken: Collection[str], start: int) -> str:
    """The first free ``Shot NNN`` from ``start`` on."""
    return next(f"Shot {n:03d}" for n in itertools.count(max(start, 1)) if f"Shot {n:03d}" not in taken)


def safe_name(name: str) -> str:
    """A name as a file or folder name on every system: runs of anything but letters, digits, ``.``, ``_`` and
    ``-`` become one ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "shot"


def shot_folder_name(name: str, board: Collection[str] = ()) -> str:
    """The folder (and file stem) of a shot's bundle and clips: ``safe_name``, with a short hash of the exact name
    added when another shot of the ``board`` cleans up to the same name ("Scene 1 / Shot A" and "Scene_1_Shot_A",
    or "日本" and "🎬"): one shot's bundle would overwrite the other's."""
    safe = safe_name(name)
    if not any(other != name and safe_name(other) == safe for other in board):
        return safe
    return f"{safe}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"
