"""The viewport overlay's shaders compile and draw the active shot's camera path where it projects.

The drawing runs in a subprocess: Blender's GPU module starts on Mesa's software OpenGL (EGL) here, and a machine
without it aborts the whole process instead of raising.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH, HEIGHT = 160, 120

DRAW_SCRIPT = textwrap.dedent("""
    import json, sys
    import bpy
    import numpy as np
    import cinepregen_addon
    from cinepregen_addon import overlay

    cinepregen_addon.register()
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.cinepregen.shot_add(name="Truck", length=12)
    shot = scene.cinepregen.shots[0]
    shot.start_location, shot.start_rotation = (-2.0, 0.0, 0.0), (1.5708, 0.0, 0.0)
    shot.move_json = json.dumps({"kind": "truck", "params": {"distance": 4.0}, "easing": "linear"})
    bpy.ops.cinepregen.apply_move()
    scene.frame_set(1)

    viewer = bpy.data.objects.new("Viewer", bpy.data.cameras.new("Viewer"))
    scene.collection.objects.link(viewer)
    viewer.location = (0.0, 0.0, 12.0)  # straight above the path, looking down -Z
    viewer.data.lens = 35.0
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    width, height = int(sys.argv[2]), int(sys.argv[3])
    view = viewer.matrix_world.inverted()
    projection = viewer.calc_matrix_camera(depsgraph, x=width, y=height)
    pixels = overlay.draw_camera_path_offscreen(scene, shot, view, projection, width, height)
    vertices, colors = overlay.shot_lines(scene, shot)
    path = overlay.camera_path_points(shot.camera, shot.frame_start, shot.frame_end)
    np.savez(sys.argv[1], pixels=pixels, vertices=vertices, colors=colors, path=path,
             view_projection=np.array(projection @ view))
    print("DRAWN", overlay.shaders_folder())
""")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    out = tmp_path_factory.mktemp("overlay") / "overlay.npz"
    done = subprocess.run([sys.executable, "-c", DRAW_SCRIPT, str(out), str(WIDTH), str(HEIGHT)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    if done.returncode != 0 and "No OpenGL" in done.stderr + done.stdout:
        pytest.skip("no OpenGL/EGL on this machine")
    assert done.returncode == 0 and "DRAWN" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(np.load(out))


def to_pixels(view_projection, points):
    """World points to (column, row) pixel coordinates with row 0 at the top, as OpenGL rasterises them."""
    clip = np.c_[points, np.ones(len(points))] @ view_projection.T
    ndc = clip[:, :2] / clip[:, 3:]
    return np.c_[(ndc[:, 0] + 1) / 2 * WIDTH, (1 - ndc[:, 1]) / 2 * HEIGHT]


def distance_to_segments(pixels_xy, segments):
    """Distance from each pixel centre to the nearest of the 2D segments (S, 2, 2)."""
    a, b = segments[:, 0], segments[:, 1]
    ab = b - a
    t = np.clip(((pixels_xy[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    nearest = a + t[..., None] * ab
    return np.linalg.norm(pixels_xy[:, None] - nearest, axis=-1).min(1)


def test_path_is_drawn_where_it_projects_and_nowhere_else(drawn):
    pixels, view_projection = drawn["pixels"], drawn["view_projection"]
    assert pixels.shape == (HEIGHT, WIDTH, 4)
    lit = pixels[..., 3] > 0
    for corner in (lit[:4, :4], lit[:4, -4:], lit[-4:, :4], lit[-4:, -4:]):
        assert not corner.any(), "the corners must stay background"

    # every projected path point (one per frame) has drawn pixels of the path/tick colours right there
    path_px = to_pixels(view_projection, drawn["path"])
    assert path_px[:, 0].min() > 10 and path_px[:, 0].max() < WIDTH - 10  # the whole path is inside the picture
    orange = (pixels[..., 0] > 200) & (pixels[..., 2] < 150) & lit
    for column, row in path_px:
        c, r = int(column), int(row)
        assert orange[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3].any(), f"no path pixel near ({column:.1f}, {row:.1f})"
    # the truck goes 4 m along +X: the path spans that many pixels horizontally, on one row
    assert path_px[-1, 0] - path_px[0, 0] > 40 and np.ptp(path_px[:, 1]) < 1.0

    # and nothing is drawn away from the projected geometry (path, ticks, frustum)
    segments = to_pixels(view_projection, drawn["vertices"].astype(np.float64)).reshape(-1, 2, 2)
    rows, columns = np.nonzero(lit)
    distance = distance_to_segments(np.c_[columns + 0.5, rows + 0.5], segments)
    assert lit.sum() > 50 and distance.max() < 2.0


def test_colours_separate_path_ticks_and_frustum(drawn):
    colors = drawn["colors"]
    from_float = {tuple(np.round(c, 3)) for c in colors}
    assert len(from_float) == 3  # path, frame ticks, frustum
    pixels = drawn["pixels"][drawn["pixels"][..., 3] > 0][:, :3].astype(float)
    expected = np.array([c[:3] for c in from_float]) * 255
    nearest = np.abs(pixels[:, None] - expected[None]).max(-1)  # (pixels, colours), off by at most rounding
    assert nearest.min(1).max() <= 1.0  # every drawn pixel is one of the three colours, unblended
    assert set(nearest.argmin(1).tolist()) == {0, 1, 2}  # and all three were drawn
