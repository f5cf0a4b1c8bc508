"""glTF assets in training scenes: rigged, animated characters, vehicles and props from ``shared/assets``.

The catalogue is split by file: held-out scenes use characters the model never trains on, so the held-out figures
say how it does on a rig it has not seen. Each entry gives the clip to play (walk cycles for characters) and the
height to scale the model to (the Quaternius animals come at 2.5-3x life size). Credits for every file are in the
asset pack's README and in the model card.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Asset:
    file: str
    kind: str  # "character", "vehicle" or "prop"
    height_m: tuple[float, float]  # height range after scaling
    clip: str | None = None  # the animation to play (a name prefix; None: no animation)
    speed_m_per_frame: float = 0.0  # how fast it travels along its heading while the clip plays (at 24 fps)
    extent: float = 1.0  # its largest extent over its height: framing sizes a long body by its length


TRAIN_ASSETS = (
    Asset("farmer.glb", "character", (1.6, 1.9), "Walk", 0.05),
    Asset("robot_expressive.glb", "character", (1.4, 2.0), "Walking", 0.05),
    Asset("platformer_robot.glb", "character", (1.1, 1.6), "walk", 0.04),
    Asset("stag.glb", "character", (1.6, 2.2), "Walk", 0.05, 1.2),
    Asset("wolf.glb", "character", (0.8, 1.1), "Walk", 0.05, 2.0),
    Asset("cesium_milk_truck.glb", "vehicle", (2.2, 2.7), "Anim_0", 0.06, 1.9),
    Asset("motorcycle.glb", "vehicle", (1.1, 1.3), extent=1.9),
    Asset("plastic_monobloc_chair_01/plastic_monobloc_chair_01_1k.gltf", "prop", (0.8, 0.95)),
    Asset("lowpoly_lamp/lowpoly_lamp.gltf", "prop", (2.5, 3.5)),
)
HELDOUT_ASSETS = (
    Asset("cesium_man.glb", "character", (1.6, 1.8), "Anim_0", 0.05),
    Asset("mannequiny.glb", "character", (1.6, 1.9), "run", 0.08),
    Asset("horse.glb", "character", (1.6, 2.0), "Walk", 0.05, 1.2),
    Asset("platformer_enemy.glb", "character", (0.9, 1.2), "walk", 0.04, 1.7),
)


def default_asset_dir() -> Path | None:
    """``$CINEPREGEN_ASSETS``, else the shared asset pack beside the repository (``../shared/assets``)."""
    configured = os.environ.get("CINEPREGEN_ASSETS")
    if configured:
        return Path(configured)
    pack = Path(__file__).resolve().parents[3] / "shared" / "assets"
    return pack if (pack / "manifest.json").is_file() else None


def _find_action(bpy, prefix: str):
    """The action whose name is ``prefix`` or starts with it (glTF files add suffixes such as ``_root.001``)."""
    names = sorted(bpy.data.actions.keys(), key=len)
    for name in names:
        bare = name.split("|")[-1]
        if bare == prefix or bare.startswith(prefix):
            return bpy.data.actions[name]
    return None


def _play(bpy, obj, action) -> None:
    """Play ``action`` on ``obj`` alone: NLA tracks the importer made are muted, the action's first slot bound."""
    data = obj.animation_data or obj.animation_data_create()
    for track in data.nla_tracks:
        track.mute = True
    data.action = action
    if getattr(data, "action_slot", None) is None and getattr(action, "slots", None):
        data.action_slot = action.slots[0]
    data.action_extrapolation = "HOLD"


def import_asset(bpy, scene, asset_dir: Path, asset: Asset, name: str, location: tuple[float, float],
                 heading_rad: float, height_m: float, frame_start: int, frames: int):
    """Import ``asset`` into ``scene`` standing on the floor at ``location``, facing ``heading_rad``, scaled to
    ``height_m``; characters walk along their heading while their clip plays. Skinned parts of one armature are
    joined into one object named ``name`` (a character is one object of the ID pass); rigid parts parented to bones
    or animated empties stay separate. Returns ``(meshes, root)``: the mesh objects and the empty that carries them."""
    before = set(bpy.data.objects.keys())
    result = bpy.ops.import_scene.gltf(filepath=str(asset_dir / asset.file))
    if "FINISHED" not in result:
        raise RuntimeError(f"could not import {asset.file}")
    new = [bpy.data.objects[n] for n in sorted(set(bpy.data.objects.keys()) - before)]
    # bone display shapes (the importer's Icosphere) are not part of the model
    shapes = {b.custom_shape for o in new if o.type == "ARMATURE" for b in o.pose.bones if b.custom_shape}
    for obj in [o for o in new if o in shapes or (o.type == "MESH" and o.name.startswith("Icosphere"))]:
        new.remove(obj)
        bpy.data.objects.remove(obj)
    for obj in new:
        if obj.name not in scene.collection.all_objects:
            scene.collection.objects.link(obj)
    meshes = [o for o in new if o.type == "MESH"]
    if not meshes:
        raise RuntimeError(f"{asset.file} holds no mesh")
    skinned = [o for o in meshes if o.parent is not None and o.parent.type == "ARMATURE" and o.parent_type == "OBJECT"]
    if len(skinned) > 1 and len({o.parent.name for o in skinned}) == 1:
        names = [o.name for o in new if o not in skinned[1:]]  # the joined-in objects are removed by the join
        with bpy.context.temp_override(active_object=skinned[0], selected_editable_objects=skinned,
                                       selected_objects=skinned):
            bpy.ops.object.join()
        new = [bpy.data.objects[n] for n in names]
        meshes = [o for o in new if o.type == "MESH"]
    for i, mesh in enumerate(sorted(meshes, key=lambda o: -len(o.data.vertices))):
        mesh.name = name if i == 0 else f"{name}Part{i}"
    root = bpy.data.objects.new(f"{name}Root", None)
    scene.collection.objects.link(root)
    for obj in new:
        if obj.parent is None:
            obj.parent = root

    if asset.clip:
        for obj in (o for o in new if o.animation_data is not None):
            action = _find_action(bpy, asset.clip) if obj.type == "ARMATURE" else obj.animation_data.action
            if action is not None:
                _play(bpy, obj, action)
    scene.frame_set(frame_start)
    bpy.context.view_layer.update()
    corners = np.array([tuple(o.matrix_world @ v.co) for o in meshes for v in o.data.vertices])
    low, high = corners.min(0), corners.max(0)
    scale = height_m / max(high[2] - low[2], 1e-6)
    root.scale = (scale, scale, scale)
    root.rotation_euler = (0.0, 0.0, heading_rad)
    centre = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]]) * scale
    cos, sin = math.cos(heading_rad), math.sin(heading_rad)
    start = (location[0] - (cos * centre[0] - sin * centre[1]), location[1] - (sin * centre[0] + cos * centre[1]),
             -centre[2])
    # glTF models face glTF +Z, which is Blender's -Y: walking forward is -Y turned by the heading
    forward = (sin, -cos)
    travel = asset.speed_m_per_frame * (frames - 1)
    for frame, t in ((frame_start, 0.0), (frame_start + frames - 1, travel)):
        root.location = (start[0] + forward[0] * t, start[1] + forward[1] * t, start[2])
        root.keyframe_insert("location", frame=frame)
    return meshes, root
