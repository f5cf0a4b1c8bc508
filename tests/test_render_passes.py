"""Guidance-pass rendering with real Cycles renders: geometry, IDs, motion and the render-passes CLI."""

import json
import subprocess
import sys
import textwrap

import bpy
import numpy as np
import pytest
from mathutils import Vector

from backend.blender.scenes import build_test_scene
from cinepregen_addon.core import camera_geometry, shot_bundle
from cinepregen_addon.object_ids import ID_PROPERTY
from cinepregen_addon.render_passes import (
    REFERENCE_PROPERTY,
    ShotRenderSpec,
    ensure_object_ids,
    render_shot_bundle,
)

FRAMES = 6


def _write_png(path, rgb: np.ndarray) -> None:
    height, width, _ = rgb.shape
    image = bpy.data.images.new("reference", width, height)
    rgba = np.concatenate([rgb / 255.0, np.ones((height, width, 1))], axis=-1)[::-1]
    image.pixels.foreach_set(rgba.astype(np.float32).ravel())
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)


def _artist_settings(scene) -> dict:
    render, layer = scene.render, scene.view_layers[0]
    return {"engine": render.engine, "resolution": (render.resolution_x, render.resolution_y),
            "filepath": render.filepath, "format": render.image_settings.file_format, "camera": scene.camera.name,
            "frame": scene.frame_current, "range": (scene.frame_start, scene.frame_end),
            "markers": [m.camera.name for m in scene.timeline_markers], "override": layer.material_override,
            "vector": layer.use_pass_vector}


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Two shots of one scene: a trucking camera with a moving prop, and a side camera with lens shift."""
    tmp = tmp_path_factory.mktemp("passes")
    info = build_test_scene(n_objects=3, moving=True, camera_move="truck", frame_end=FRAMES)
    scene = info["scene"]
    side = bpy.data.objects.new("SideCamera", bpy.data.cameras.new("SideCamera"))
    side.location = (6.0, 3.0, 1.0)
    side.rotation_euler = (Vector((0.0, 6.0, 0.0)) - side.location).to_track_quat("-Z", "Y").to_euler()
    side.data.shift_x, side.data.shift_y = 0.05, -0.03
    side.data.sensor_fit, side.data.sensor_height = "VERTICAL", 20.0
    scene.collection.objects.link(side)
    for frame, pan, lens in ((1, 0.0, 50.0), (3, 0.08, 60.0)):  # pan and zoom: flow depends on every entry of K
        side.rotation_euler.z += pan
        side.data.lens = lens
        side.keyframe_insert("rotation_euler", frame=frame)
        side.data.keyframe_insert("lens", frame=frame)

    cube_ref, sphere_ref = np.zeros((8, 16, 3), np.uint8), np.zeros((6, 6, 3), np.uint8)
    cube_ref[..., 0], cube_ref[:, :8, 1] = 200, 90
    sphere_ref[..., 2] = 255
    _write_png(tmp / "cube.png", cube_ref)
    _write_png(tmp / "sphere.png", sphere_ref)
    scene.objects["Sphere"][REFERENCE_PROPERTY] = str(tmp / "sphere.png")

    # An animatic's camera markers: the pass render must still use each shot's own camera, whichever marker is
    # bound and whichever camera the scene has when the render starts.
    scene.timeline_markers.new("side", frame=1).camera = side
    scene.timeline_markers.new("truck", frame=2).camera = scene.objects[info["camera"]]
    settings = _artist_settings(scene)
    ids = ensure_object_ids(scene)
    truck = render_shot_bundle(scene, ShotRenderSpec("truck", info["camera"], 1, FRAMES, prompt="a test"),
                               tmp / "truck")
    side_spec = ShotRenderSpec("side", "SideCamera", 1, 3, references={"Cube": str(tmp / "cube.png")})
    side_path = render_shot_bundle(scene, side_spec, tmp / "side")
    return {"info": info, "ids": ids, "truck": truck, "side": side_path,
            "settings": (settings, _artist_settings(scene)),
            "references": {"Cube": cube_ref, "Sphere": sphere_ref}}


def test_render_leaves_the_artists_settings_as_they_were(shots):
    before, after = shots["settings"]
    assert before == after


def _location(info, name, frame):
    return info["path"][frame] if name == info["moving"] else info["objects"][name]


def test_bundles_validate_and_describe_the_shot(shots):
    for key, frames in (("truck", FRAMES), ("side", 3)):
        assert shot_bundle.validate_bundle(shots[key]) == []
        bundle = shot_bundle.read_bundle(shots[key])
        assert len(bundle.passes) == len(bundle.cameras) == frames
        assert (bundle.width, bundle.height) == (128, 72)
    meta = json.loads((shots["truck"] / "shot.json").read_text())
    assert meta["prompt"] == "a test" and meta["shot"]["camera_name"] == shots["info"]["camera"]


def test_projected_objects_land_on_their_ids(shots):
    info = shots["info"]
    for key in ("truck", "side"):
        bundle = shot_bundle.read_bundle(shots[key])
        for camera, passes in zip(bundle.cameras, bundle.passes, strict=True):
            for name in info["objects"]:
                centre = np.array([_location(info, name, camera.frame)])
                uv, z = camera_geometry.project_points(camera.K, camera.world_to_camera, centre)
                u, v = np.rint(uv[0]).astype(int)
                assert passes.object_id[v, u] == shots["ids"][name], (key, camera.frame, name)
                # the visible surface at the centre's pixel lies in front of the centre, within the prop's size
                assert z[0] - 0.7 < passes.depth[v, u] < z[0], (key, camera.frame, name)


def test_sphere_front_depth_matches_its_projection(shots):
    """The ray through a sphere's projected centre hits it one radius in front (faceting aside)."""
    bundle = shot_bundle.read_bundle(shots["truck"])
    centre = np.array([shots["info"]["objects"]["Sphere"]])
    for camera, passes in zip(bundle.cameras, bundle.passes, strict=True):
        uv, z = camera_geometry.project_points(camera.K, camera.world_to_camera, centre)
        u, v = np.rint(uv[0]).astype(int)
        assert passes.depth[v, u] == pytest.approx(z[0] - 0.4, abs=0.02)


def test_wall_depth_is_planar_and_normal_faces_camera(shots):
    bundle = shot_bundle.read_bundle(shots["truck"])
    wall_id = shots["ids"][shots["info"]["wall"]["name"]]
    distance = shots["info"]["wall"]["distance"]
    for passes in bundle.passes:
        wall = passes.object_id == wall_id
        assert wall[0, 0] and wall[-1, -1]  # corners: a ray-length depth would read 12% too far there
        assert np.abs(passes.depth[wall] / distance - 1).max() < 0.01
        assert np.abs(passes.normal[wall] - [0.0, 0.0, -1.0]).max() < 1e-3


def test_sphere_normals_point_out_of_its_centre_in_camera_space(shots):
    """Under an arbitrary camera rotation the world-to-camera rotation of the normals shows (flat facets of a
    12-ring UV sphere tilt up to about 11 degrees from the true sphere normal)."""
    centre = np.array(shots["info"]["objects"]["Sphere"])
    bundle = shot_bundle.read_bundle(shots["side"])
    for camera, passes in zip(bundle.cameras, bundle.passes, strict=True):
        mask = passes.object_id == shots["ids"]["Sphere"]
        points = camera_geometry.unproject_depth(camera.K, camera.world_to_camera, passes.depth)[mask]
        expected = (points - centre) @ camera.world_to_camera[:3, :3].T
        expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
        assert mask.sum() > 50
        cosines = np.einsum("ij,ij->i", passes.normal[mask], expected)
        assert cosines.min() > np.cos(np.radians(15)) and cosines.mean() > 0.99


def test_normals_are_unit_and_background_is_zero(shots):
    bundle = shot_bundle.read_bundle(shots["side"])
    passes = bundle.passes[0]
    background = passes.depth == 0
    assert 0 < background.sum() < background.size, "the side camera sees past the wall's edge"
    assert np.all(passes.object_id[background] == 0)
    assert np.all(passes.normal[background] == 0) and np.all(passes.vector[background] == 0)
    lengths = np.linalg.norm(passes.normal[~background], axis=-1)
    assert np.abs(lengths - 1).max() < 1e-5
    assert np.all(passes.object_id[~background] > 0)


def test_ids_are_exact_and_stable_across_shots(shots):
    by_shot = {}
    for key in ("truck", "side"):
        bundle = shot_bundle.read_bundle(shots[key])
        ids = np.stack([p.object_id for p in bundle.passes])
        assert ids.dtype == np.int32
        assert set(np.unique(ids).tolist()) - {0} == {o.id for o in bundle.objects}
        by_shot[key] = {o.name: o.id for o in bundle.objects}
    assert by_shot["truck"] == {n: shots["ids"][n] for n in by_shot["truck"]}
    assert by_shot["side"] == {n: shots["ids"][n] for n in by_shot["side"]}
    assert set(by_shot["truck"]) & set(by_shot["side"]) >= {"Cube", "Sphere", "Cylinder"}


def test_reference_images_come_from_spec_and_object_property(shots):
    bundle = shot_bundle.read_bundle(shots["side"])
    ids = shots["ids"]
    assert set(bundle.reference_images) == {ids["Cube"], ids["Sphere"]}
    for name, image in shots["references"].items():
        np.testing.assert_array_equal(bundle.reference_images[ids[name]], image)


def test_ensure_object_ids_keeps_ids_and_renumbers_duplicates():
    info = build_test_scene(n_objects=2, moving=False)
    scene = info["scene"]
    first = ensure_object_ids(scene)
    copy = scene.objects["Cube"].copy()  # copies the custom property, as Shift+D does
    copy.name = "CubeCopy"
    scene.collection.objects.link(copy)
    second = ensure_object_ids(scene)
    assert {n: second[n] for n in first} == first
    assert second["CubeCopy"] == max(first.values()) + 1
    assert scene.objects["CubeCopy"][ID_PROPERTY] == second["CubeCopy"]
    assert all(scene.objects[n].pass_index == 0 for n in second)  # pass indices are the artist's


def test_a_prop_keyed_to_pop_in_mid_shot_has_its_id_when_it_shows(tmp_path):
    info = build_test_scene(n_objects=1, frame_end=3)
    scene = info["scene"]
    prop = scene.objects[next(iter(info["objects"]))]
    prop.hide_render = True
    prop.keyframe_insert("hide_render", frame=1)
    prop.hide_render = False
    prop.keyframe_insert("hide_render", frame=3)
    scene.frame_set(1)
    path = render_shot_bundle(scene, ShotRenderSpec("pop", info["camera"], 1, 3, resolution=(48, 27)), tmp_path / "pop")
    bundle = shot_bundle.read_bundle(path)
    last = bundle.passes[-1]
    assert prop.name in [o.name for o in bundle.objects]
    assert not ((last.depth > 0) & (last.object_id == 0)).any()  # it read as background where it showed


def test_the_artists_pass_indices_come_back_after_the_render(tmp_path):
    """Compositing masks read pass indices: the render uses the IDs as pass indices and puts the artist's back."""
    info = build_test_scene(n_objects=3, frame_end=1)
    scene = info["scene"]
    artist = {name: 1 for name in info["objects"]}  # one mask for all props, as an artist might set it
    for name, index in artist.items():
        scene.objects[name].pass_index = index
    path = render_shot_bundle(scene, ShotRenderSpec("masks", info["camera"], 1, 1, resolution=(48, 27)),
                              tmp_path / "masks")
    ids = {o.name: o.id for o in shot_bundle.read_bundle(path).objects}
    assert len({ids[name] for name in artist}) == 3  # three objects, three IDs in the passes
    assert {name: scene.objects[name].pass_index for name in artist} == artist


def test_collection_instances_get_their_sources_id(tmp_path):
    info = build_test_scene(n_objects=1, moving=False, frame_end=1)
    scene = info["scene"]
    props = bpy.data.collections.new("Props")  # not linked to the scene: only the instance renders
    source = bpy.data.objects.new("Statue", bpy.data.objects["Cube"].data.copy())
    props.objects.link(source)
    instance = bpy.data.objects.new("StatueInstance", None)
    instance.instance_type, instance.instance_collection = "COLLECTION", props
    instance.location = (1.5, 6.0, 0.0)
    scene.collection.objects.link(instance)
    path = render_shot_bundle(scene, ShotRenderSpec("instances", info["camera"], 1, 1, resolution=(64, 36)),
                              tmp_path / "instances")
    bundle = shot_bundle.read_bundle(path)
    statue_id = {o.name: o.id for o in bundle.objects}["Statue"]
    assert statue_id == source[ID_PROPERTY] and np.any(bundle.passes[0].object_id == statue_id)


def _forward_flow(vector: np.ndarray) -> np.ndarray:
    return np.stack([-vector[..., 2], vector[..., 3]], axis=-1)


def test_vector_pass_matches_the_moving_objects_projected_motion(shots):
    info = shots["info"]
    bundle = shot_bundle.read_bundle(shots["truck"])
    moving_id = shots["ids"][info["moving"]]
    velocity = np.array(info["velocity"])
    for c0, c1, passes in zip(bundle.cameras[:-1], bundle.cameras[1:], bundle.passes[:-1], strict=True):
        mask = passes.object_id == moving_id
        points = camera_geometry.unproject_depth(c0.K, c0.world_to_camera, passes.depth)[mask]
        uv0, _ = camera_geometry.project_points(c0.K, c0.world_to_camera, points)
        uv1, _ = camera_geometry.project_points(c1.K, c1.world_to_camera, points + velocity)
        flow = _forward_flow(passes.vector)[mask]
        assert np.abs(flow - (uv1 - uv0)).max() < 1e-3
        # uniform motion: the motion towards the previous frame mirrors the motion towards the next
        backward = np.stack([passes.vector[..., 0], -passes.vector[..., 1]], axis=-1)[mask]
        if c0.frame > 1:
            assert np.abs(backward + flow).max() < 1e-3
        assert np.linalg.norm(uv1 - uv0, axis=-1).min() > 1.0


@pytest.mark.parametrize("key", ["truck", "side"])
def test_flow_from_depth_agrees_with_vector_pass_on_static_geometry(shots, key):
    """Cycles projects with Blender's own camera model, so this also checks K (shift, sensor fit, zoom)."""
    bundle = shot_bundle.read_bundle(shots[key])
    moving_id = shots["ids"][shots["info"]["moving"]]
    for c0, c1, passes in zip(bundle.cameras[:-1], bundle.cameras[1:], bundle.passes[:-1], strict=True):
        flow, valid = camera_geometry.flow_from_depth(passes.depth, c0.K, c0.world_to_camera, c1.K,
                                                      c1.world_to_camera)
        static = valid & (passes.object_id > 0) & (passes.object_id != moving_id)
        assert static.mean() > 0.3
        assert np.abs(flow[static] - _forward_flow(passes.vector)[static]).max() < 1e-3
        assert np.abs(flow[static]).max() > 1.0


def test_a_set_built_in_centimetres_is_written_in_metres(tmp_path):
    """The bundle is in metres: the same set with a unit scale of 0.01 (one Blender unit is a centimetre) gives
    depth and camera positions 100x smaller (they were written in scene units: a box 7 m away read 712)."""
    bundles = {}
    for scale in (1.0, 0.01):
        info = build_test_scene(n_objects=2, camera_move="truck", frame_end=2)
        info["scene"].unit_settings.system, info["scene"].unit_settings.scale_length = "METRIC", scale
        path = render_shot_bundle(info["scene"], ShotRenderSpec("units", info["camera"], 1, 2, resolution=(48, 27)),
                                  tmp_path / f"x{scale:g}")
        bundles[scale] = shot_bundle.read_bundle(path)
    units, centimetres = bundles[1.0], bundles[0.01]
    for a, b in zip(units.passes, centimetres.passes, strict=True):
        np.testing.assert_allclose(b.depth, a.depth * 0.01, rtol=1e-5)
        np.testing.assert_array_equal(b.object_id, a.object_id)
    for a, b in zip(units.cameras, centimetres.cameras, strict=True):
        assert abs(a.world_to_camera[:3, 3]).max() > 0.3  # the truck moves it off the origin
        np.testing.assert_allclose(b.world_to_camera[:3, 3], a.world_to_camera[:3, 3] * 0.01, rtol=1e-6)
        np.testing.assert_allclose(b.world_to_camera[:3, :3], a.world_to_camera[:3, :3])


def test_non_square_pixels_and_stereo_views_render_square_single_view_passes(tmp_path):
    """A pixel aspect of 2:1 failed every frame (Blender 5.0.1 cannot write such a multilayer EXR) and stereo views
    wrote no image under the expected name: the passes render with square pixels, one view, and say so in K."""
    info = build_test_scene(n_objects=2, frame_end=2)
    scene, render = info["scene"], info["scene"].render
    render.pixel_aspect_x, render.use_multiview = 2.0, True
    path = render_shot_bundle(scene, ShotRenderSpec("anamorphic", info["camera"], 1, 2, resolution=(48, 27)),
                              tmp_path / "anamorphic")
    bundle = shot_bundle.read_bundle(path)
    K = bundle.cameras[0].K
    assert K[0, 0] == pytest.approx(K[1, 1])  # square pixels
    assert (render.pixel_aspect_x, render.use_multiview) == (2.0, True)  # the artist's settings come back
    assert all((p.depth > 0).mean() > 0.5 for p in bundle.passes)


def test_geometry_nodes_instances_get_ids_and_geometry_without_one_is_reported(tmp_path):
    """A scatter made with geometry nodes from an object kept out of the scene renders with that object's ID (it
    read as background); what still renders without an ID (hair particles of an object hidden from the render) is
    measured in the bundle and named on the shot's status line."""
    from cinepregen_addon import bundles

    info = build_test_scene(n_objects=0, frame_end=1)
    scene = info["scene"]
    loose = bpy.data.objects.new("Loose rock", bpy.data.meshes.new("Loose rock"))  # in no scene
    loose.data.from_pydata([(x, y, z) for x in (-0.3, 0.3) for y in (-0.3, 0.3) for z in (-0.3, 0.3)], [],
                           [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
    host = bpy.data.objects.new("Scatter", bpy.data.meshes.new("Scatter"))
    host.data.from_pydata([(-1.0, 5.0, 0.0), (1.0, 5.0, 0.0)], [], [])
    scene.collection.objects.link(host)
    tree = bpy.data.node_groups.new("Scatter", "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    into, out = tree.nodes.new("NodeGroupInput"), tree.nodes.new("NodeGroupOutput")
    place, source = tree.nodes.new("GeometryNodeInstanceOnPoints"), tree.nodes.new("GeometryNodeObjectInfo")
    source.inputs["Object"].default_value, source.inputs["As Instance"].default_value = loose, True
    tree.links.new(into.outputs[0], place.inputs["Points"])
    tree.links.new(source.outputs["Geometry"], place.inputs["Instance"])
    tree.links.new(place.outputs[0], out.inputs[0])
    host.modifiers.new("Scatter", "NODES").node_group = tree
    path = render_shot_bundle(scene, ShotRenderSpec("scatter", info["camera"], 1, 1, resolution=(48, 27)),
                              tmp_path / "scatter")
    bundle = shot_bundle.read_bundle(path)
    rock = next(o.id for o in bundle.objects if o.name == "Loose rock")
    passes = bundle.passes[0]
    assert (passes.object_id == rock).sum() > 20 and not ((passes.depth > 0) & (passes.object_id == 0)).any()
    assert bundle.shot["untracked_geometry"] == 0 and bundles.untracked_note(path) == ""

    pebble = bpy.data.objects.new("Pebble", loose.data)
    scene.collection.objects.link(pebble)
    pebble.hide_render = True
    host.modifiers.clear()
    emitter = bpy.data.objects.new("Ground", bpy.data.meshes.new("Ground"))
    emitter.data.from_pydata([(-2, 4, -1), (2, 4, -1), (2, 6, 1), (-2, 6, 1)], [], [(0, 1, 2, 3)])
    scene.collection.objects.link(emitter)
    hair = emitter.modifiers.new("Hair", "PARTICLE_SYSTEM").particle_system.settings
    hair.type, hair.count, hair.render_type, hair.instance_object = "HAIR", 60, "OBJECT", pebble
    emitter.show_instancer_for_render = False
    path = render_shot_bundle(scene, ShotRenderSpec("hair", info["camera"], 1, 1, resolution=(48, 27)),
                              tmp_path / "hair")
    share = shot_bundle.read_bundle(path).shot["untracked_geometry"]  # Cycles draws these without an index
    assert share >= bundles.UNTRACKED_NOTE_SHARE and "without an object ID" in bundles.untracked_note(path)


def test_the_passes_render_the_view_layer_the_artist_works_in(tmp_path):
    """A set with two view layers: the hero is excluded from the first and shown in the artist's; the passes show
    what the artist sees (they rendered the first layer, without the hero)."""
    info = build_test_scene(n_objects=0, frame_end=1)
    scene = info["scene"]
    hero = bpy.data.collections.new("Hero")
    scene.collection.children.link(hero)
    body = bpy.data.objects.new("Hero body", bpy.data.meshes.new("Hero body"))
    body.data.from_pydata([(x, y, z) for x in (-0.5, 0.5) for y in (4.5, 5.5) for z in (-0.8, 0.8)], [],
                          [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
    hero.objects.link(body)
    scene.view_layers[0].layer_collection.children["Hero"].exclude = True
    working = scene.view_layers.new("Animation")
    ids = ensure_object_ids(scene)
    with bpy.context.temp_override(view_layer=working):
        path = render_shot_bundle(scene, ShotRenderSpec("layers", info["camera"], 1, 1, resolution=(48, 27)),
                                  tmp_path / "layers")
    assert (shot_bundle.read_bundle(path).passes[0].object_id == ids["Hero body"]).sum() > 20
    assert [layer.use for layer in scene.view_layers] == [True, True]  # the artist's settings come back


def test_render_passes_cli_writes_a_valid_bundle_from_a_saved_blend(tmp_path):
    from backend.cli import main

    info = build_test_scene(n_objects=3, moving=True, frame_end=4)
    ids = ensure_object_ids(info["scene"])
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    out = tmp_path / "bundles"
    argv = ["render-passes", str(blend), "--camera", info["camera"], "--frames", "2:4", "--name", "Shot 1",
            "--resolution", "64x36", "--out", str(out)]
    assert main(argv) == 0
    path = out / "Shot_1"
    assert shot_bundle.validate_bundle(path) == []
    bundle = shot_bundle.read_bundle(path)
    assert (bundle.frame_start, bundle.frame_end, bundle.width, bundle.height) == (2, 4, 64, 36)
    assert {o.name: o.id for o in bundle.objects} == {n: ids[n] for n in (o.name for o in bundle.objects)}
    assert main(["render-passes", str(blend), "--camera", "NoSuchCamera", "--out", str(out)]) == 1


def test_render_passes_cli_renders_storyboard_shots(tmp_path):
    """--all and --shot read ``scene.cinepregen.shots``; the add-on registers in a child process so this one
    keeps its own add-on state."""
    script = textwrap.dedent(f"""
        import sys
        import bpy
        import cinepregen_addon
        from backend.blender.scenes import build_test_scene
        from backend.cli import main
        info = build_test_scene(frame_end=4)
        cinepregen_addon.register()
        for name, start, end in (("Opening", 1, 2), ("Close up", 3, 4)):
            shot = bpy.context.scene.cinepregen.shots.add()
            shot.name, shot.frame_start, shot.frame_end, shot.prompt = name, start, end, name + " prompt"
            shot.camera = bpy.data.objects[info["camera"]]
        blend = r"{tmp_path / 'board.blend'}"
        bpy.ops.wm.save_as_mainfile(filepath=blend)
        common = ["--resolution", "64x36", "--out", r"{tmp_path / 'out'}"]
        codes = [main(["render-passes", blend, "--all", *common]),
                 main(["render-passes", blend, "--shot", "Close up", "--overwrite", *common]),
                 main(["render-passes", blend, "--shot", "Missing", *common])]
        cinepregen_addon.unregister()  # as Blender does on quit; the 4.5 module hangs at exit otherwise
        sys.exit(0 if codes == [0, 0, 1] else 10 + codes[0] + 2 * codes[1])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = (("Opening", (1, 2), "Opening prompt"), ("Close_up", (3, 4), "Close up prompt"))
    for folder, (start, end), prompt in expected:
        assert shot_bundle.validate_bundle(tmp_path / "out" / folder) == []
        bundle = shot_bundle.read_bundle(tmp_path / "out" / folder)
        assert (bundle.frame_start, bundle.frame_end, bundle.prompt) == (start, end, prompt)
        assert [c.frame for c in bundle.cameras] == list(range(start, end + 1))


def test_clay_pass_is_grey_clay_under_the_scenes_own_light(tmp_path):
    """The clay pass shows the scene's light and shadow on grey surfaces: the lit side of a prop is brighter than its
    far side, and turning the sun off darkens the whole pass."""
    import bpy

    from backend.blender.scenes import build_test_scene
    from cinepregen_addon.render_passes import ShotRenderSpec, render_shot_bundle

    info = build_test_scene(frame_end=2)
    spec = ShotRenderSpec("clay", info["camera"], 1, 2, resolution=(64, 36), include_clay=True)
    bundle = shot_bundle.read_bundle(render_shot_bundle(info["scene"], spec, tmp_path / "clay"))
    wall_id = {o.name: o.id for o in bundle.objects}["Wall"]
    for p in bundle.passes:
        assert p.clay.shape == (36, 64, 3) and p.clay.dtype == np.uint8
        wall, props = p.object_id == wall_id, (p.object_id > 0) & (p.object_id != wall_id)
        assert abs(float(p.clay[props].mean()) - float(p.clay[wall].mean())) > 1.0
        assert np.abs(p.clay[..., 0].astype(int) - p.clay[..., 2]).max() <= 2 + 0.1 * p.clay.max()  # grey surfaces
    for light in (o for o in info["scene"].objects if o.type == "LIGHT"):
        light.data.energy = 0.0
    dark = shot_bundle.read_bundle(render_shot_bundle(info["scene"], spec, tmp_path / "dark"))
    assert dark.passes[0].clay.mean() < 0.8 * bundle.passes[0].clay.mean()
    assert bpy.data.materials.get("CinePreGen Clay").users == 0  # the override is undone


def test_spec_rejects_bad_input():
    with pytest.raises(ValueError, match="frame_end"):
        ShotRenderSpec("bad", "Camera", 5, 1)
    with pytest.raises(ValueError, match="resolution"):
        ShotRenderSpec("bad", "Camera", 1, 2, resolution=(0, 72))


def test_bench_passes_prints_a_row_per_resolution(capsys):
    from backend.cli import main

    assert main(["bench", "passes", "--frames", "2", "--resolutions", "32x18,48x27"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith(("32x", "48x"))]
    assert [row[:2] for row in rows] == [["32x18", "2"], ["48x27", "2"]]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)


def test_render_passes_cli_keeps_object_ids_across_runs_and_skips_helpers(tmp_path):
    """IDs the CLI gives are saved in the .blend: after an object is added (named to sort first), re-rendering keeps
    every earlier object's ID. A bone display shape (as the glTF importer makes) and an object hidden from the
    render get no ID. Blender's per-frame lines stay out of the command's output."""
    from backend.cli import main

    info = build_test_scene(n_objects=3, frame_end=2)
    scene = info["scene"]
    shape = bpy.data.objects.new("Icosphere", bpy.data.meshes.new("Icosphere"))
    scene.collection.objects.link(shape)
    armature = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig"))
    scene.collection.objects.link(armature)
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    bone = armature.data.edit_bones.new("root")
    bone.tail = (0, 0, 1)
    bpy.ops.object.mode_set(mode="OBJECT")
    armature.pose.bones["root"].custom_shape = shape
    hidden = bpy.data.objects.new("HiddenProp", bpy.data.meshes.new("HiddenProp"))
    hidden.hide_render = True
    scene.collection.objects.link(hidden)
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    argv = ["render-passes", str(blend), "--camera", info["camera"], "--resolution", "32x18", "--overwrite"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    first = {o.name: o.id for o in shot_bundle.read_bundle(tmp_path / "a" / info["camera"]).objects}

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    saved = {o.name: o.get("cinepregen_id") for o in bpy.data.objects}
    assert saved["Icosphere"] is None and saved["HiddenProp"] is None  # helpers and hidden objects: no ID
    assert all(saved[name] == value for name, value in first.items())
    newcomer = bpy.data.objects.new("AAA_newcomer", bpy.data.meshes.new("AAA"))
    bpy.context.scene.collection.objects.link(newcomer)
    bpy.ops.wm.save_mainfile()
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    again = {o.name: o.get("cinepregen_id") for o in bpy.data.objects}
    assert all(again[name] == value for name, value in first.items())  # nobody's ID moved
    assert isinstance(again["AAA_newcomer"], int) and again["AAA_newcomer"] not in first.values()
