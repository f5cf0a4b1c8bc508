"""The add-on enabled inside this Python process (``bpy`` as a module), as Blender would enable it.

Batch jobs, the demo and tests drive the real operators and the Generate poller headless. Blender gives an enabled
add-on an entry in ``preferences.addons`` that holds its preferences (backend URL, token); registering the package
by hand does not, so the entry is added here the way installing it would.
"""

from __future__ import annotations

import sys


def enable_addon_in_process():
    """Register ``cinepregen_addon`` (once) and give it a preferences entry; returns ``(addon_package, prefs)``, the
    package with its registered submodules (``jobs``, ``bundles``, ``local_backend``, ...) as attributes."""
    import bpy

    import cinepregen_addon

    if not hasattr(bpy.types.Scene, "cinepregen"):
        cinepregen_addon.register()
    generate = sys.modules[bpy.types.CINEPREGEN_OT_generate_shot.__module__]
    addons = bpy.context.preferences.addons
    entry = addons.get(generate.__package__)
    if entry is None:
        entry = addons.new()
        entry.module = generate.__package__
    return sys.modules[generate.__package__], entry.preferences
