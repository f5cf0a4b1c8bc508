"""Procedural training scenes: a set (floor, walls with openings, stairs, clutter), primitives and glTF characters
(rigged and walking, from ``backend.training.assets``), some moving, under one of several light rigs.

Every primitive wears its reference look (box-projected texture) and every asset its own materials (hue-shifted at
random), so the Cycles target render shows exactly "each object in its reference's look, following the geometry":
what the model must learn to paint. An object's reference is either its look as a swatch or a picture of the object
in its look (``render_reference_pictures``), the kind of image an artist binds. What goes into a scene is decided
beforehand, without bpy, by ``scene_plan.plan_scene``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from backend.training.scene_plan import SET_COLOUR, ProceduralScene, SceneLight


def _textured_material(bpy, name: str, image_path: Path | None, colour: tuple[float, float, float] = SET_COLOUR):
    mat = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0):  # node materials are the only kind from 5.0 on
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = 0.8
    if image_path is None:
        bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
        return mat
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = bpy.data.images.load(str(image_path), check_existing=True)
    tex.projection = "BOX"
    tex.projection_blend = 0.2
    coords = nodes.new("ShaderNodeTexCoord")
    links.new(coords.outputs["Object"], tex.inputs["Vector"])
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _primitive_mesh(bpy, primitive: str, name: str, size: float):
    import bmesh

    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    r = size / 2
    if primitive == "cube":
        bmesh.ops.create_cube(bm, size=size)
    elif primitive == "sphere":
        bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=12, radius=r)
    elif primitive == "cylinder":
        bmesh.ops.create_cone(bm, cap_ends=True, segments=24, radius1=r, radius2=r, depth=size)
    elif primitive == "cone":
        bmesh.ops.create_cone(bm, cap_ends=True, segments=24, radius1=r, radius2=0.0, depth=size)
    elif primitive == "ellipsoid":
        bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=12, radius=r)
        bmesh.ops.scale(bm, vec=(1.0, 1.0, 0.45), verts=bm.verts)
    elif primitive == "monkey":
        bmesh.ops.create_monkey(bm)
        bmesh.ops.scale(bm, vec=(r, r, r), verts=bm.verts)
    else:
        raise ValueError(f"unknown primitive {primitive!r}")
    for face in bm.faces:
        face.smooth = primitive in ("sphere", "ellipsoid", "monkey")
    bm.to_mesh(mesh)
    bm.free()
    return mesh


WALL_PLANES = {  # wall -> (fixed axis, coordinate, span axis)
    "WallBack": ("y", 6.0, "x"),
    "WallLeft": ("x", -6.0, "y"),
    "WallRight": ("x", 6.0, "y"),
}
WALL_HEIGHT, DOOR_HEIGHT = 6.0, 2.2


def _wall_quads(wall: str, opening: tuple[float, float] | None) -> list[tuple[float, float, float, float]]:
    """(span from, span to, z from, z to) rectangles of a wall, leaving a doorway where it has an opening."""
    if opening is None:
        return [(-12.0, 12.0, 0.0, WALL_HEIGHT)]
    centre, width = opening
    left, right = centre - width / 2, centre + width / 2
    return [(-12.0, left, 0.0, WALL_HEIGHT), (right, 12.0, 0.0, WALL_HEIGHT), (left, right, DOOR_HEIGHT, WALL_HEIGHT)]


def _box_mesh(bpy, name: str, centre, size, heading: float = 0.0):
    import bmesh
    from mathutils import Matrix

    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=1.0)
    bmesh.ops.transform(bm, verts=bm.verts, matrix=Matrix.Translation(centre) @ Matrix.Rotation(heading, 4, "Z")
                        @ Matrix.Diagonal((*size, 1.0)))
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def _shift_hues(bpy, objects, shift: float) -> None:
    """Turn the hue of every plain base colour of the objects' materials (textured ones are left as they are)."""
    import colorsys

    for material in {slot.material for obj in objects for slot in obj.material_slots if slot.material}:
        if material.node_tree is None:
            continue
        for node in material.node_tree.nodes:
            if node.type == "BSDF_PRINCIPLED" and not node.inputs["Base Color"].is_linked:
                r, g, b, a = node.inputs["Base Color"].default_value
                h, light, sat = colorsys.rgb_to_hls(r, g, b)
                node.inputs["Base Color"].default_value = (*colorsys.hls_to_rgb((h + shift) % 1.0, light, sat), a)


def build_scene(plan: ProceduralScene, asset_dir: Path | None = None):
    """Build ``plan`` into a fresh Blender scene; returns the scene. Objects get their reference bound."""
    import bpy

    from backend.training.assets import HELDOUT_ASSETS, TRAIN_ASSETS, import_asset

    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.context.preferences.edit.keyframe_new_interpolation_type = "LINEAR"
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = plan.frame_start, plan.frame_end
    set_material = _textured_material(bpy, "Set", None, plan.set_colour)

    def link(obj):
        scene.collection.objects.link(obj)
        return obj

    floor_mesh = bpy.data.meshes.new("Floor")
    floor_mesh.from_pydata([(-12, -12, 0), (12, -12, 0), (12, 12, 0), (-12, 12, 0)], [], [(0, 1, 2, 3)])
    floor_mesh.materials.append(set_material)
    link(bpy.data.objects.new("Floor", floor_mesh))
    for wall in plan.walls:
        axis, at, _ = WALL_PLANES[wall]
        verts, faces = [], []
        for a, b, z0, z1 in _wall_quads(wall, plan.openings.get(wall)):
            corners = [(a, z0), (b, z0), (b, z1), (a, z1)]
            faces.append(tuple(range(len(verts), len(verts) + 4)))
            verts += [(at, u, z) if axis == "x" else (u, at, z) for u, z in corners]
        mesh = bpy.data.meshes.new(wall)
        mesh.from_pydata(verts, [], faces)
        mesh.materials.append(set_material)
        link(bpy.data.objects.new(wall, mesh))
    if plan.stairs is not None:
        x, y, heading = plan.stairs
        for step in range(4):
            depth = 0.35 * (4 - step)
            offset = (-math.sin(heading) * depth / 2, math.cos(heading) * depth / 2)
            mesh = _box_mesh(bpy, f"Step{step + 1}", (x + offset[0], y + offset[1], 0.125 + 0.25 * step),
                             (1.6, depth, 0.25), heading)
            mesh.materials.append(set_material)
            link(bpy.data.objects.new(f"Step{step + 1}", mesh))
    for i, (x, y, size) in enumerate(plan.clutter):
        mesh = _box_mesh(bpy, f"Clutter{i + 1}", (x, y, size / 2), (size, size * 1.3, size), x * y)
        mesh.materials.append(set_material)
        link(bpy.data.objects.new(f"Clutter{i + 1}", mesh))

    catalogue = {a.file: a for a in (*TRAIN_ASSETS, *HELDOUT_ASSETS)}
    frames = plan.frame_end - plan.frame_start + 1
    for spec in plan.objects:
        if spec.asset is not None:
            if asset_dir is None:
                raise FileNotFoundError(f"scene needs the asset {spec.asset} but no asset folder was given")
            parts, _root = import_asset(bpy, scene, asset_dir, catalogue[spec.asset], spec.name, spec.location[:2],
                                        spec.heading_rad, spec.size, plan.frame_start, frames)
            if spec.hue_shift:
                _shift_hues(bpy, parts, spec.hue_shift)
            for part in parts:
                part["cinepregen_reference"] = str(spec.reference_png)
            continue
        mesh = _primitive_mesh(bpy, spec.primitive, spec.name, spec.size)
        mesh.materials.append(_textured_material(bpy, f"{spec.name}Look", spec.texture_png or spec.reference_png))
        obj = link(bpy.data.objects.new(spec.name, mesh))
        obj.location = spec.location
        obj.rotation_euler = (0.0, 0.0, spec.heading_rad)
        obj["cinepregen_reference"] = str(spec.reference_png)
        if any(spec.velocity):
            for frame in (plan.frame_start, plan.frame_end):
                t = frame - plan.frame_start
                obj.location = tuple(c + v * t for c, v in zip(spec.location, spec.velocity, strict=True))
                obj.keyframe_insert("location", frame=frame)

    lights = plan.lights or [SceneLight("SUN", (0, 0, 10), plan.sun_rotation, plan.sun_energy)]
    for i, light in enumerate(lights):
        data = bpy.data.lights.new(f"Light{i + 1}", light.kind)
        data.energy, data.color = light.energy, light.colour
        if light.kind == "SUN":
            data.angle = light.size
        elif light.kind == "AREA":
            data.size = light.size
        else:
            data.shadow_soft_size = light.size
        obj = link(bpy.data.objects.new("Sun" if i == 0 and light.kind == "SUN" else f"Light{i + 1}", data))
        obj.location, obj.rotation_euler = light.location, light.rotation
    scene.world = bpy.data.worlds.new("World")
    if bpy.app.version < (5, 0):
        scene.world.use_nodes = True
    background = next(n for n in scene.world.node_tree.nodes if n.type == "BACKGROUND")
    background.inputs["Color"].default_value = (*plan.world_colour, 1.0)
    return scene


def render_reference_pictures(scene, plan: ProceduralScene, rng: np.random.Generator, size: int = 96) -> None:
    """Write a picture of each object that asks for one over its reference file: the object alone, in its look, from
    a three-quarter front view, evenly lit, on a plain or busy background (what concept art or a photo gives)."""
    import tempfile

    import bpy
    from mathutils import Vector
    from PIL import Image

    from backend.training.references import make_reference

    wanted = [o for o in plan.objects if o.picture_reference]
    if not wanted:
        return
    scene.frame_set(plan.frame_start)
    saved_camera = scene.camera
    data = bpy.data.cameras.new("ReferenceCamera")
    camera = bpy.data.objects.new("ReferenceCamera", data)
    scene.collection.objects.link(camera)
    key = bpy.data.objects.new("ReferenceKey", bpy.data.lights.new("ReferenceKey", "SUN"))
    key.data.energy = 3.0
    scene.collection.objects.link(key)
    lights = [o for o in scene.objects if o.type == "LIGHT" and o is not key]
    render = scene.render
    render.engine, scene.cycles.device, scene.cycles.samples = "CYCLES", "CPU", 8
    scene.cycles.use_denoising = True
    render.resolution_x = render.resolution_y = size
    render.resolution_percentage = 100
    render.film_transparent = True
    render.image_settings.file_format, render.image_settings.color_mode = "PNG", "RGBA"
    scene.view_settings.view_transform = "Standard"
    for spec in wanted:
        parts = [o for o in scene.objects
                 if o.type == "MESH" and o.get("cinepregen_reference") == str(spec.reference_png)]
        hidden = [o for o in scene.objects if o.type == "MESH" and o not in parts] + lights
        for obj in hidden:
            obj.hide_render = True
        corners = np.array([tuple(o.matrix_world @ Vector(c)) for o in parts for c in o.bound_box])
        low, high = corners.min(0), corners.max(0)
        centre, radius = (low + high) / 2, float(np.linalg.norm(high - low)) / 2
        facing = spec.heading_rad + float(rng.uniform(-0.9, 0.9))  # glTF fronts face -Y turned by the heading
        direction = np.array([math.sin(facing), -math.cos(facing), 0.35])
        direction /= np.linalg.norm(direction)
        data.lens = 50.0
        distance = radius / math.tan(math.atan(18.0 / 50.0)) * 1.1
        camera.location = tuple(centre + direction * distance)
        camera.rotation_euler = Vector(-direction).to_track_quat("-Z", "Y").to_euler()
        key.rotation_euler = Vector(direction + np.array([0.4, 0.0, 0.8])).to_track_quat("Z", "Y").to_euler()
        scene.camera = camera
        with tempfile.TemporaryDirectory(prefix="cinepregen-reference-") as tmp:
            render.filepath = str(Path(tmp) / "picture.png")
            bpy.ops.render.render(write_still=True)
            rgba = np.asarray(Image.open(render.filepath).convert("RGBA")).astype(np.float32) / 255.0
        if rng.uniform() < 0.5:
            backdrop = np.broadcast_to(rng.uniform(0.3, 0.95, 3), (size, size, 3))
        else:
            backdrop = np.asarray(Image.fromarray(make_reference(rng, 32)).resize((size, size))) / 255.0
        picture = rgba[..., :3] * rgba[..., 3:] + backdrop * (1 - rgba[..., 3:])
        Image.fromarray((picture * 255).round().astype(np.uint8)).save(spec.reference_png)
        for obj in hidden:
            obj.hide_render = False
    render.film_transparent = False
    render.image_settings.color_mode = "RGB"
    bpy.data.objects.remove(camera)
    bpy.data.objects.remove(key)
    scene.camera = saved_camera


def render_target_clip(scene, camera_name: str, frame_start: int, frame_end: int, resolution: tuple[int, int],
                       samples: int = 16, denoise: bool = True) -> np.ndarray:
    """The look the model must learn: a Cycles render of the textured scene, (F, H, W, 3) uint8."""
    import tempfile

    from PIL import Image

    render = scene.render
    scene.camera = scene.objects[camera_name]
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = denoise  # the model cannot predict Monte Carlo noise: keep it out of targets
    scene.cycles.denoiser = "OPENIMAGEDENOISE"
    scene.cycles.max_bounces = 2
    render.resolution_x, render.resolution_y = resolution
    render.resolution_percentage = 100
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGB"
    render.use_compositing = False
    scene.view_settings.view_transform = "Standard"
    render.use_persistent_data = True  # keep the synced scene between frames
    scene.frame_start, scene.frame_end = frame_start, frame_end
    with tempfile.TemporaryDirectory(prefix="cinepregen-target-") as tmp:
        render.filepath = str(Path(tmp) / "######")
        import bpy

        bpy.ops.render.render(animation=True)
        paths = [Path(render.frame_path(frame=f)) for f in range(frame_start, frame_end + 1)]
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
