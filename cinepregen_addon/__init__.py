"""CinePreGen Blender extension.

The Blender layer is imported only inside ``register()``, so the pure modules in ``core`` (camera moves, the shot
bundle format, the backend client) import without bpy, for the backend and for tests. Inside the add-on package
every import is relative: installed as an extension the package is ``bl_ext.<repo>.cinepregen``.
"""

_registered_modules = []


def _modules():
    from . import exports, generate, operators, overlay, preferences, properties, ui

    return (properties, preferences, operators, generate, exports, ui, overlay)


def register():
    import bpy

    for module in _modules():
        for cls in module.classes:
            bpy.utils.register_class(cls)
        _registered_modules.append(module)
        if module.__name__.endswith(".properties"):
            module.register_properties()
    from . import generate

    generate.register_timers()


def unregister():
    import bpy

    from . import exports, generate, overlay

    generate.unregister_timers()
    exports.stop_export()
    overlay.remove_handler()
    while _registered_modules:
        module = _registered_modules.pop()
        if module.__name__.endswith(".properties"):
            module.unregister_properties()
        for cls in reversed(module.classes):
            bpy.utils.unregister_class(cls)
