"""Guidance-pass rendering: a shot's frame range rendered into a shot bundle.

Cycles on the CPU at 1 sample renders every frame of the shot into one multilayer 32-bit EXR (depth, normal, object
index, vector); a box pixel filter of width 0.01 makes every pixel a single ray through its centre, so depth,
normal and ID always come from the same surface and IDs are never blended at edges. Motion blur stays off because
Cycles drops the vector pass when it is on. The passes are converted into the bundle's conventions:

* ``depth``: Cycles' Depth pass is already planar (distance along the view axis, not along the ray); the no-hit
  value 1e10 becomes 0, the bundle's background marker.
* ``normal``: Cycles writes world-space normals; they are rotated into the OpenCV camera frame (x right, y down,
  z forward) and renormalised, so a surface facing the camera is (0, 0, -1).
* ``object_id``: the object's stable ID (``ensure_object_ids``), exact int32.
* ``vector``: Blender's vector pass as written, in pixels with Blender's bottom-up y: channels 0-1 are the motion
  towards the previous frame, channels 2-3 the negated motion towards the next frame. The forward flow in image
  coordinates (u right, v down) is therefore ``(-vector[..., 2], vector[..., 3])``.

The EXR is read by ``core.exr_reader`` (Blender 5.0's multi-part layout and 4.5's single part).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import mathutils
import numpy as np

from .core import bundle_checks, camera_geometry, shot_bundle
from .core.exr_reader import read_exr_passes
from .object_ids import (
    deforming_armature,
    ensure_object_ids,
    instanced_by,
    object_named,
    object_units,
    scene_objects,
    use_ids_as_pass_indices,
)
from .render_settings import Overrides, set_clay, set_common, set_cycles_passes

REFERENCE_PROPERTY = "cinepregen_reference"
DEFAULT_RESOLUTION = (128, 72)
NO_HIT_DEPTH = 1e9  # Cycles writes 1e10 where a ray hits nothing

@dataclass
class ShotRenderSpec:
    """What to render for one shot: camera, frame range, output size, and the storyboard data for shot.json."""

    name: str
    camera_name: str
    frame_start: int
    frame_end: int
    prompt: str = ""
    seed: int = 0
    shot: dict = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    resolution: tuple[int, int] = DEFAULT_RESOLUTION
    fps: float = 24.0
    include_clay: bool = False
    style: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.frame_end < self.frame_start:
            raise ValueError(f"shot {self.name!r}: frame_end ({self.frame_end}) is before frame_start "
                             f"({self.frame_start})")
        width, height = self.resolution
        if width < 1 or height < 1:
            raise ValueError(f"shot {self.name!r}: resolution must be positive, got {self.resolution}")
        if self.fps <= 0:
            raise ValueError(f"shot {self.name!r}: fps must be positive, got {self.fps}")


ProgressFn = Callable[[float, str], None]


def guidance_from_passes(raw: dict[str, np.ndarray], world_to_camera: np.ndarray,
                         metres_per_unit: float = 1.0) -> shot_bundle.FramePasses:
    """Convert Cycles' passes into the bundle's conventions (see the module docstring); depth in metres."""
    background = ~np.isfinite(raw["depth"]) | (raw["depth"] >= NO_HIT_DEPTH)
    depth = np.where(background, np.float32(0.0), raw["depth"] * np.float32(metres_per_unit)).astype(np.float32)
    rotation = np.asarray(world_to_camera, dtype=np.float32)[:3, :3]
    normal = raw["normal"] @ rotation.T
    length = np.sqrt(np.einsum("hwc,hwc->hw", normal, normal))
    empty = background | (length < 1e-6)
    normal /= np.where(empty, np.float32(1.0), length)[..., None]
    normal[empty] = 0.0
    object_id = np.rint(raw["object_id"]).astype(np.int32)
    object_id[background] = 0
    vector = raw["vector"].copy()
    vector[background] = 0.0
    return shot_bundle.FramePasses(depth=depth, normal=normal, object_id=object_id, vector=vector)


def untracked_share(passes: list[shot_bundle.FramePasses]) -> float:
    """Share of the shot's pixels that show geometry (depth) under no object ID: what Cycles renders without a
    pass index (grease pencil, instances of objects hidden from the render) reads as background to a model."""
    return float(np.mean([((p.depth > 0) & (p.object_id == 0)).mean() for p in passes])) if passes else 0.0


def frame_aspect(scene) -> float:
    """Width over height of the scene's frame as the camera shows it (pixel aspect included)."""
    render = scene.render
    return render.resolution_x * render.pixel_aspect_x / (render.resolution_y * render.pixel_aspect_y)


def metres_per_unit(scene) -> float:
    """Metres in one Blender unit: the bundle is in metres, a set built in centimetres (unit scale 0.01) is not."""
    units = scene.unit_settings
    return float(units.scale_length) if units.system != "NONE" else 1.0


def frame_camera(scene, camera, frame: int, resolution: tuple[int, int]) -> shot_bundle.FrameCamera:
    """Exact intrinsics (square pixels, as the passes are rendered: ``set_common``) and world-to-camera extrinsics
    of ``camera`` at ``frame``, in metres."""
    if camera.type != "CAMERA" or camera.data.type != "PERSP":
        raise ValueError(f"camera {camera.name!r} must be a perspective camera")
    scene.frame_set(frame)
    data = camera.data
    K = camera_geometry.intrinsics_from_blender(
        data.lens, data.sensor_width, data.sensor_height, data.sensor_fit, resolution[0], resolution[1],
        shift_x=data.shift_x, shift_y=data.shift_y,
    )
    world_to_camera = camera_geometry.world_to_camera_from_matrix_world(np.array(camera.matrix_world))
    world_to_camera[:3, 3] *= metres_per_unit(scene)
    return shot_bundle.FrameCamera(frame=frame, K=K, world_to_camera=world_to_camera)


def read_image_rgb(path: Path) -> np.ndarray:
    """Any image file Blender reads (PNG, JPEG, ...) as (H, W, 3) uint8, top row first."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = image.size
        if width == 0 or height == 0:
            raise ValueError(f"{path}: could not be read as an image")
        pixels = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    rgba = pixels.reshape(height, width, 4)[::-1]
    return np.clip(np.rint(rgba[..., :3] * 255.0), 0, 255).astype(np.uint8)


def bundle_fingerprint(scene, spec: ShotRenderSpec) -> str:
    """A hash of everything a shot bundle is made from: the render spec (prompt, seed, move, frames, size, ...),
    the camera and lens at every frame, and every renderable object's ID, visibility, evaluated bounds at every
    frame (moves, rigs and shape keys change them) and mesh data, and each reference file's size and time. The same
    fingerprint means the bundle on disk is still the one these inputs would render."""
    objects = sorted(scene_objects(scene), key=lambda o: o.name_full)
    ids = ensure_object_ids(scene, objects)  # as the render will: IDs given now must not change the fingerprint
    digest = hashlib.sha256()
    fields = {k: v for k, v in vars(spec).items() if k != "references"}
    digest.update(json.dumps({**fields, "metres_per_unit": metres_per_unit(scene)}, sort_keys=True,
                             default=str).encode())
    camera = object_named(scene.objects, spec.camera_name)
    instancers = instanced_by(scene)
    references = {name: unit_reference(*unit, spec, instancers) for name, unit in object_units(objects).items()}
    for name, reference in sorted(references.items()):
        stat = Path(reference).stat() if reference and Path(reference).is_file() else None
        digest.update(f"{name}|{reference}|{stat.st_size if stat else ''}|{stat.st_mtime_ns if stat else ''}".encode())
    for obj in objects:
        digest.update(f"{obj.name_full}|{ids.get(obj.name_full)}|{obj.hide_render}".encode())
        if obj.type == "MESH":
            coordinates = np.empty(len(obj.data.vertices) * 3, np.float32)
            obj.data.vertices.foreach_get("co", coordinates)
            digest.update(coordinates.tobytes())
    frame_current = scene.frame_current
    try:
        for frame in range(spec.frame_start, spec.frame_end + 1):
            scene.frame_set(frame)
            if camera is not None:
                digest.update(np.array(camera.matrix_world, np.float64).tobytes())
                digest.update(np.array([camera.data.lens, camera.data.sensor_width, camera.data.shift_x,
                                        camera.data.shift_y], np.float64).tobytes())
            depsgraph = bpy.context.evaluated_depsgraph_get()
            for obj in objects:
                evaluated = obj.evaluated_get(depsgraph)
                digest.update(np.array([tuple(evaluated.matrix_world @ mathutils.Vector(c))
                                        for c in evaluated.bound_box], np.float64).tobytes())
    finally:
        scene.frame_set(frame_current)
    return digest.hexdigest()


def _reference_path(obj, spec: ShotRenderSpec) -> str | None:
    """The spec's reference for the object, else the one bound to it: the add-on's RNA property first (the one an
    override keeps), then its custom-property copy (set without the add-on registered, and on Blender 4.5)."""
    path = (spec.references.get(obj.name_full) or getattr(obj, REFERENCE_PROPERTY, "")
            or obj.get(REFERENCE_PROPERTY) or None)
    return bpy.path.abspath(str(path)) if path else None


def unit_reference(named_by, parts: list, spec: ShotRenderSpec, instancers: dict) -> str | None:
    """The reference of one unit of the ID pass (``object_ids.object_units``): its own, else (a character) the first
    of its meshes' by name; a lone skinned mesh takes its armature's too; last, the collection instance that brings
    it in (``object_ids.instanced_by``). So an artist may bind a character's picture to its rig, to whichever of its
    meshes they clicked, or to the empty a linked character arrives as."""
    candidates = [named_by, *sorted(parts, key=lambda o: o.name_full), deforming_armature(named_by),
                  instancers.get(named_by.name_full)]
    for obj in candidates:
        path = _reference_path(obj, spec) if obj is not None else None
        if path:
            return path
    return None


def render_shot_bundle(scene, spec: ShotRenderSpec, out_dir: str | Path, progress: ProgressFn | None = None,
                       overwrite: bool = False) -> Path:
    """Render the shot's guidance passes and write its shot bundle folder to ``out_dir``.

    ``progress(fraction, stage)`` is called as frames are rendered and converted. The scene's render settings,
    active camera and current frame are restored afterwards. An existing bundle there is replaced only with
    ``overwrite=True``.
    """
    return run_steps(render_shot_bundle_steps(scene, spec, out_dir, overwrite), progress)


def run_steps(steps: Generator[tuple[float, str], None, Path], progress: ProgressFn | None = None) -> Path:
    """Take every step of a step-wise render at once, reporting each to ``progress``; returns what it returns."""
    while True:
        try:
            fraction, stage = next(steps)
        except StopIteration as finished:
            return finished.value
        if progress is not None:
            progress(fraction, stage)


def render_shot_bundle_steps(scene, spec: ShotRenderSpec, out_dir: str | Path, overwrite: bool = False
                             ) -> Generator[tuple[float, str], None, Path]:
    """``render_shot_bundle`` one frame at a time: each step renders (or reads) one frame and yields
    ``(fraction, stage)``; the generator returns the bundle folder. A timer that takes one step per tick keeps
    Blender responsive while a shot renders; closing the generator stops it and puts the scene's settings back."""
    if not spec.camera_name:
        raise ValueError(f"shot {spec.name!r} has no camera: pick one in its Camera field")
    camera = object_named(scene.objects, spec.camera_name)
    if camera is None or camera.type != "CAMERA":
        raise ValueError(f"shot {spec.name!r}: {spec.camera_name!r} is not a camera object in scene {scene.name!r}")
    shown = {o.name_full: o for o in scene_objects(scene)}
    unknown = sorted(set(spec.references) - {o.name_full for o in scene.objects} - set(shown))
    if unknown:
        raise ValueError(f"shot {spec.name!r}: references name objects not in the scene: {', '.join(unknown)}")
    for name, path in spec.references.items():
        if not Path(bpy.path.abspath(path)).is_file():
            raise ValueError(f"shot {spec.name!r}: reference image for {name!r} not found: {path}")
    ids = ensure_object_ids(scene, list(shown.values()))
    frames = list(range(spec.frame_start, spec.frame_end + 1))
    stages = [("render", set_cycles_passes)] + ([("clay", set_clay)] if spec.include_clay else [])
    total = len(frames) * (len(stages) + 1)
    done = 0
    frame_current = scene.frame_current
    with tempfile.TemporaryDirectory(prefix="cinepregen-passes-") as tmp:
        work = Path(tmp)
        rendered: dict[str, tuple[list[Path], str]] = {}
        try:
            for stage, configure in stages:
                o = Overrides()
                try:
                    set_common(o, scene, spec, camera, str(work / stage))
                    use_ids_as_pass_indices(o, ids)
                    view_layer = configure(o, scene)
                    paths = []
                    for frame in frames:
                        scene.frame_set(frame)
                        name = f"{stage}_{frame:06d}"
                        scene.render.filepath = str(work / name)  # a still is written to its path as it is
                        bpy.ops.render.render(write_still=True, scene=scene.name)
                        written = sorted(work.glob(f"{name}.*"))
                        if not written:
                            raise RuntimeError(f"{stage}: Blender wrote no image for frame {frame}")
                        paths.append(written[0])
                        done += 1
                        yield done / total, stage
                    rendered[stage] = (paths, view_layer.name)
                finally:
                    o.restore()

            cameras, passes = [], []
            exr_paths, view_layer_name = rendered["render"]
            clay_paths = rendered["clay"][0] if "clay" in rendered else None
            for i, (frame, exr_path) in enumerate(zip(frames, exr_paths, strict=True)):
                cam = frame_camera(scene, camera, frame, spec.resolution)
                if i == 0:
                    lens_mm = camera.data.lens
                frame_passes = guidance_from_passes(read_exr_passes(exr_path, view_layer_name), cam.world_to_camera,
                                                    metres_per_unit(scene))
                if clay_paths is not None:
                    frame_passes.clay = read_image_rgb(clay_paths[i])
                cameras.append(cam)
                passes.append(frame_passes)
                done += 1
                yield done / total, "read"
        finally:
            scene.frame_set(frame_current)

    present = set(np.unique(np.concatenate([p.object_id.ravel() for p in passes])).tolist()) - {0}
    instancers = instanced_by(scene)
    units = {ids[parts[0].name_full]: (name, (named_by, parts))
             for name, (named_by, parts) in object_units(list(shown.values())).items()}
    objects, reference_images = [], {}
    for object_id in sorted(present):
        name, unit = units.get(object_id, (f"object {object_id}", None))  # a pass index set outside the scene
        reference = unit_reference(*unit, spec, instancers) if unit is not None else None
        if reference is not None:
            if not Path(reference).is_file():
                raise ValueError(f"shot {spec.name!r}: reference image for {name!r} not found: {reference}")
            reference_images[object_id] = read_image_rgb(Path(reference))
        objects.append(shot_bundle.BundleObject(id=object_id, name=bundle_checks.printable_name(name), reference=None))

    data = camera.data
    shot = {"camera_name": camera.name, "lens_mm": lens_mm,
            "sensor_mm": [data.sensor_width, data.sensor_height],
            "untracked_geometry": round(untracked_share(passes), 4), **spec.shot}
    bundle = shot_bundle.ShotBundle(
        name=spec.name, fps=spec.fps, width=spec.resolution[0], height=spec.resolution[1],
        frame_start=spec.frame_start, frame_end=spec.frame_end, cameras=cameras, passes=passes, objects=objects,
        prompt=spec.prompt, seed=spec.seed, style=dict(spec.style), shot=shot, reference_images=reference_images,
    )
    return shot_bundle.write_bundle(bundle, out_dir, overwrite=overwrite)


def storyboard_shot_specs(scene, resolution: tuple[int, int] | None = None,
                          include_clay: bool | None = None) -> list[ShotRenderSpec]:
    """The render specs of every shot of the scene's storyboard (``scene.cinepregen.shots``), at the board's pass
    resolution and with its clay setting unless given."""
    board = getattr(scene, "cinepregen", None)
    if board is None:
        raise ValueError("the scene has no CinePreGen storyboard (is the add-on registered?)")
    resolution = tuple(board.pass_resolution) if resolution is None else resolution
    include_clay = board.render_clay if include_clay is None else include_clay
    specs = []
    for shot in board.shots:  # a shot without a camera fails alone, when it is rendered
        specs.append(ShotRenderSpec(
            name=shot.name, camera_name=shot.camera.name_full if shot.camera is not None else "",
            frame_start=shot.frame_start, frame_end=shot.frame_end,
            prompt=shot.prompt, seed=shot.seed, resolution=resolution, include_clay=include_clay,
            fps=scene.render.fps / scene.render.fps_base,
            shot={"shot_size": shot.shot_size, "camera_angle": shot.camera_angle,
                  "subject": shot.subject.name if shot.subject is not None else None},
        ))
    return specs
