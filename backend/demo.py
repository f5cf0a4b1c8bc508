"""The main job, ``cinepregen demo``: grows stage by stage as the product lands.

Each stage that is not built yet is reported as such; nothing is faked.
"""

from __future__ import annotations

import time
from pathlib import Path


def run_demo(out: Path) -> int:
    import bpy

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    mesh = bpy.data.meshes.new("Floor")
    mesh.from_pydata([(-5, -5, 0), (5, -5, 0), (5, 5, 0), (-5, 5, 0)], [], [(0, 1, 2, 3)])
    floor = bpy.data.objects.new("Floor", mesh)
    scene.collection.objects.link(floor)
    blend = out / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend.resolve()))
    report = out / "report.md"
    report.write_text(
        "# CinePreGen demo\n\n"
        f"Built a placeholder scene in Blender {bpy.app.version_string} and saved it to `{blend.name}` "
        f"in {time.perf_counter() - started:.2f} s.\n\n"
        "Not built yet: storyboard, camera moves, guidance passes, the video model and the backend service. "
        "This demo produces no clips until those land.\n"
    )
    print(f"demo: wrote {blend} and {report}")
    print("demo: storyboard, passes, model and service are not built yet; no clips were generated")
    return 0
