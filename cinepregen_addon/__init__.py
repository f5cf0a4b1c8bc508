"""CinePreGen Blender extension.

The Blender layer is loaded only inside ``register()``, so the pure modules in ``core`` (camera moves, the shot
bundle format, the backend client) import without bpy, for the backend and for tests.
"""

_registered_modules = []


def register():
    pass


def unregister():
    pass
