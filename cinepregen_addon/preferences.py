"""Machine settings of the add-on: where the backend is, its token, and how to start a local one.

They belong to this computer, not to a .blend, so they live in the add-on preferences. ``bl_idname`` is
``__package__``, which is ``bl_ext.<repo>.cinepregen`` once installed as an extension. When the package is
registered by hand (tests, ``cinepregen render``) there is no preferences entry, and ``backend_settings`` answers
with the defaults.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import StringProperty

from .core.backend_client import DEFAULT_URL


@dataclass(frozen=True)
class BackendSettings:
    """The preferences as plain values, read once per operator call."""

    url: str = DEFAULT_URL
    token: str = ""
    python: str = ""
    data_folder: str = ""


class CINEPREGEN_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_url: StringProperty(
        name="Backend URL",
        description="Address of the CinePreGen backend (cinepregen serve)",
        default=DEFAULT_URL,
    )
    token: StringProperty(
        name="Token",
        description="Bearer token, when the backend was started with --token (leave empty for a local backend)",
        subtype="PASSWORD",
    )
    python_executable: StringProperty(
        name="Backend Python",
        description="Python of an environment with the cinepregen backend installed (pip install -e .), "
        "used by Start Local Backend",
        subtype="FILE_PATH",
    )
    data_folder: StringProperty(
        name="Backend Data",
        description="Jobs database and results of a local backend (empty: the add-on's user folder)",
        subtype="DIR_PATH",
    )

    def draw(self, context):
        draw_preferences(self.layout, self)


def draw_preferences(layout, prefs) -> None:
    layout.prop(prefs, "backend_url")
    layout.prop(prefs, "token")
    layout.operator("cinepregen.check_backend", icon="URL")
    box = layout.box()
    box.label(text="Local backend")
    box.prop(prefs, "python_executable")
    box.prop(prefs, "data_folder")
    box.operator("cinepregen.start_backend", icon="PLAY")


def backend_settings(context) -> BackendSettings:
    addon = context.preferences.addons.get(__package__)
    prefs = addon.preferences if addon is not None else None
    if prefs is None:
        return BackendSettings()
    return BackendSettings(
        url=prefs.backend_url,
        token=prefs.token,
        python=bpy.path.abspath(prefs.python_executable) if prefs.python_executable else "",
        data_folder=bpy.path.abspath(prefs.data_folder) if prefs.data_folder else "",
    )


def backend_python(settings: BackendSettings) -> str:
    """The Backend Python preference, checked: what runs the backend and the exports outside Blender."""
    if not settings.python or not Path(settings.python).is_file():
        raise ValueError("set Backend Python in the add-on preferences to the python of an environment with the "
                         f"cinepregen backend installed (got {settings.python!r})")
    return settings.python


def local_data_folder(settings: BackendSettings) -> Path:
    """Where a backend started from Blender keeps its jobs: the preference, else the add-on's own user folder."""
    if settings.data_folder:
        return Path(settings.data_folder)
    try:
        return Path(bpy.utils.extension_path_user(__package__, path="backend", create=True))
    except ValueError:  # registered by hand, not installed as an extension
        return Path(tempfile.gettempdir()) / "cinepregen-backend"


classes = (CINEPREGEN_AddonPreferences,)
