"""Procedural training scenes: a set (floor and walls), 1-5 textured objects, some moving, random light.

Every object wears its reference image (box-projected texture), so the Cycles target render shows exactly
"each object in its reference's look, following the geometry" — what the model must learn to paint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PRIMITIVES = ("cube", "sphere", "cylinder", "cone", "ellipsoid", "monkey")
SET_COLOUR = (0.62, 0.60, 0.57)


@dataclass
class SceneObject:
    name: str
    primitive: str
    location: tuple[float, float, float]
    size: float
    reference_png: Path
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class ProceduralScene:
    objects: list[SceneObject]
    subject: str
    frame_start: int
    frame_end: int
    sun_rotation: tuple[float, float, float]
    sun_energy: float
    world_colour: tuple[float, float, float]
    walls: list[str] = field(default_factory=list)


def plan_scene(rng: np.random.Generator, reference_dir: Path, frames: int, max_objects: int = 5) -> ProceduralScene:
    """Decide everything about one scene from ``rng`` (no bpy), so data is reproducible from a seed."""
    from PIL import Image

    from backend.training.references import make_reference

    reference_dir.mkdir(parents=True, exist_ok=True)
    n_objects = int(rng.integers(1, max_objects + 1))
    objects, taken = [], []
    for i in range(n_objects):
        size = float(rng.uniform(0.6, 1.4))
        for _ in range(50):
            xy = rng.uniform(-3.0, 3.0, 2)
            if all(np.hypot(*(xy - t)) > 1.6 for t in taken):
                break
        taken.append(xy)
        png = reference_dir / f"look_{i}.png"
        Image.fromarray(make_reference(rng)).save(png)
        moving = rng.uniform() < 0.35
        velocity = tuple(float(v) for v in rng.uniform(-0.08, 0.08, 2)) + (0.0,) if moving else (0.0, 0.0, 0.0)
        objects.append(SceneObject(
            name=f"Prop{i + 1}", primitive=PRIMITIVES[int(rng.integers(len(PRIMITIVES)))],
            location=(float(xy[0]), float(xy[1]), size / 2), size=size, reference_png=png, velocity=velocity,
        ))
    walls = [w for w in ("WallBack", "WallLeft") if rng.uniform() < 0.7]
    return ProceduralScene(
        objects=objects, subject=objects[int(rng.integers(n_objects))].name, frame_start=1, frame_end=frames,
        sun_rotation=(float(rng.uniform(0.2, 0.9)), 0.0, float(rng.uniform(0, 2 * math.pi))),
        sun_energy=float(rng.uniform(2.0, 5.0)), world_colour=tuple(float(v) for v in rng.uniform(0.15, 0.4, 3)),
        walls=walls,
    )


def _textured_material(bpy, name: str, image_path: Path | None):
    mat = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0):  # node materials are the only kind from 5.0 on
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = 0.8
    if image_path is None:
        bsdf.inputs["Base Color"].default_value = (*SET_COLOUR, 1.0)
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


def build_scene(plan: ProceduralScene):
    """Build ``plan`` into a fresh Blender scene; returns the scene. Objects get their reference bound."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = plan.frame_start, plan.frame_end
    set_material = _textured_material(bpy, "Set", None)

    def link(obj):
        scene.collection.objects.link(obj)
        return obj

    floor_mesh = bpy.data.meshes.new("Floor")
    floor_mesh.from_pydata([(-12, -12, 0), (12, -12, 0), (12, 12, 0), (-12, 12, 0)], [], [(0, 1, 2, 3)])
    floor_mesh.materials.append(set_material)
    link(bpy.data.objects.new("Floor", floor_mesh))
    for wall in plan.walls:
        mesh = bpy.data.meshes.new(wall)
        if wall == "WallBack":
            mesh.from_pydata([(-12, 6, 0), (12, 6, 0), (12, 6, 6), (-12, 6, 6)], [], [(0, 1, 2, 3)])
        else:
            mesh.from_pydata([(-6, -12, 0), (-6, 12, 0), (-6, 12, 6), (-6, -12, 6)], [], [(0, 1, 2, 3)])
        mesh.materials.append(set_material)
        link(bpy.data.objects.new(wall, mesh))

    for spec in plan.objects:
        mesh = _primitive_mesh(bpy, spec.primitive, spec.name, spec.size)
        mesh.materials.append(_textured_material(bpy, f"{spec.name}Look", spec.reference_png))
        obj = link(bpy.data.objects.new(spec.name, mesh))
        obj.location = spec.location
        obj["cinepregen_reference"] = str(spec.reference_png)
        if any(spec.velocity):
            for frame in (plan.frame_start, plan.frame_end):
                t = frame - plan.frame_start
                obj.location = tuple(c + v * t for c, v in zip(spec.location, spec.velocity, strict=True))
                obj.keyframe_insert("location", frame=frame)

    sun = bpy.data.lights.new("Sun", "SUN")
    sun.energy = plan.sun_energy
    sun_obj = link(bpy.data.objects.new("Sun", sun))
    sun_obj.rotation_euler = plan.sun_rotation
    scene.world = bpy.data.worlds.new("World")
    if bpy.app.version < (5, 0):
        scene.world.use_nodes = True
    background = next(n for n in scene.world.node_tree.nodes if n.type == "BACKGROUND")
    background.inputs["Color"].default_value = (*plan.world_colour, 1.0)
    return scene


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
