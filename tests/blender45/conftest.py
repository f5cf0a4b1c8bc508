"""This folder is run by tests/blender45/run.sh under bpy 4.5 LTS; under bpy 5.x the same tests run from tests/."""

import bpy

collect_ignore_glob = ["test_*.py"] if bpy.app.version >= (5, 0, 0) else []
