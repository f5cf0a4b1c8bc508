import os

import pytest

os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="module")
def addon():
    """The add-on registered in this process (the installed-extension path is tested in a subprocess)."""
    import bpy

    import cinepregen_addon

    registered_here = not hasattr(bpy.types.Scene, "cinepregen")
    if registered_here:
        cinepregen_addon.register()
    yield cinepregen_addon
    if registered_here:
        cinepregen_addon.unregister()


@pytest.fixture
def scene(addon):
    """An empty scene, frames 1-100 at 24 fps, with the add-on registered."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)  # keeps add-ons and the startup screens (read_factory_settings would not)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 100
    scene.render.fps, scene.render.fps_base = 24, 1.0
    return scene
