"""Procedural training scenes, planned: every decision about one scene (objects and their looks, set pieces, light
rig) drawn from a seeded ``rng`` without bpy, so the dataset is reproducible from a seed and the plan can be tested
anywhere. ``scenes.build_scene`` turns a plan into a Blender scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PRIMITIVES = ("cube", "sphere", "cylinder", "cone", "ellipsoid", "monkey")
SET_COLOUR = (0.62, 0.60, 0.57)
LIGHT_RIGS = ("sun", "overcast", "area", "coloured", "night")


@dataclass
class SceneObject:
    name: str
    primitive: str  # a PRIMITIVES name, or "asset" (then ``asset`` names the catalogue file)
    location: tuple[float, float, float]
    size: float  # height in metres
    reference_png: Path
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    asset: str | None = None
    heading_rad: float = 0.0
    hue_shift: float = 0.0  # assets: base colours turned by this fraction of the hue circle
    picture_reference: bool = False  # the reference is a picture of the object (rendered after the scene is built)
    texture_png: Path | None = None  # primitives: the look they wear, when it is not the reference file itself
    extent: float = 1.0  # largest extent over height (framing sizes a long body by its length)


@dataclass
class SceneLight:
    kind: str  # Blender light type: SUN, AREA, POINT, SPOT
    location: tuple[float, float, float]
    rotation: tuple[float, float, float]
    energy: float
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    size: float = 1.0


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
    lights: list[SceneLight] = field(default_factory=list)  # empty: one sun from sun_rotation and sun_energy
    set_colour: tuple[float, float, float] = SET_COLOUR
    openings: dict[str, tuple[float, float]] = field(default_factory=dict)  # wall -> (centre, width) of a doorway
    stairs: tuple[float, float, float] | None = None  # (x, y, heading) of a flight of steps
    clutter: list[tuple[float, float, float]] = field(default_factory=list)  # (x, y, size) boxes in set colour


def plan_lights(rng: np.random.Generator) -> tuple[list[SceneLight], tuple[float, float, float]]:
    """One of LIGHT_RIGS: the lights and the world (sky) colour."""
    rig = LIGHT_RIGS[int(rng.integers(len(LIGHT_RIGS)))]
    sun_rotation = (float(rng.uniform(0.2, 0.9)), 0.0, float(rng.uniform(0, 2 * math.pi)))
    warm = tuple(float(v) for v in np.clip([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.7, 1.0)], 0, 1))

    def coloured() -> tuple[float, float, float]:
        from backend.training.references import hsv_to_rgb

        return tuple(float(v) for v in hsv_to_rgb(np.array([rng.uniform()]), np.array([rng.uniform(0.4, 0.9)]),
                                                  np.array([1.0]))[0])

    def point(energy: tuple[float, float], colour) -> SceneLight:
        xy = rng.uniform(-4, 4, 2)
        return SceneLight("POINT", (float(xy[0]), float(xy[1]), float(rng.uniform(1.5, 4))), (0, 0, 0),
                          float(rng.uniform(*energy)), colour, float(rng.uniform(0.1, 0.6)))

    if rig == "sun":
        return [SceneLight("SUN", (0, 0, 10), sun_rotation, float(rng.uniform(2.5, 5.0)), warm, 0.02)], \
            tuple(float(v) for v in rng.uniform(0.15, 0.4, 3))
    if rig == "overcast":
        grey = float(rng.uniform(0.5, 0.9))
        return [SceneLight("SUN", (0, 0, 10), sun_rotation, float(rng.uniform(0.3, 1.0)), warm, 0.3)], \
            (grey, grey * float(rng.uniform(0.95, 1.0)), grey * float(rng.uniform(0.95, 1.05)))
    if rig == "area":
        xy = rng.uniform(-2, 2, 2)
        return [SceneLight("AREA", (float(xy[0]), float(xy[1]), float(rng.uniform(3.5, 5.5))), (0, 0, 0),
                           float(rng.uniform(300, 900)), warm, float(rng.uniform(2, 5)))], \
            tuple(float(v) for v in rng.uniform(0.05, 0.2, 3))
    if rig == "coloured":
        return [SceneLight("SUN", (0, 0, 10), sun_rotation, float(rng.uniform(1.0, 3.0)), warm, 0.05),
                point((300, 900), coloured()), point((300, 900), coloured())], \
            tuple(float(v) for v in rng.uniform(0.05, 0.25, 3))
    return [point((400, 1500), coloured()) for _ in range(int(rng.integers(1, 3)))] + \
        [SceneLight("SUN", (0, 0, 10), sun_rotation, float(rng.uniform(0.05, 0.3)), (0.6, 0.7, 1.0), 0.05)], \
        tuple(float(v) for v in rng.uniform(0.005, 0.04, 3))


def plan_scene(rng: np.random.Generator, reference_dir: Path, frames: int, max_objects: int = 5,
               assets: tuple = (), asset_share: float = 0.0) -> ProceduralScene:
    """Decide everything about one scene from ``rng`` (no bpy), so data is reproducible from a seed.

    With probability ``asset_share`` the scene holds one object from ``assets`` (a ``backend.training.assets``
    catalogue), always the shot's subject; the other objects are primitives."""
    from PIL import Image

    from backend.training.references import make_reference

    reference_dir.mkdir(parents=True, exist_ok=True)
    n_objects = int(rng.integers(1, max_objects + 1))
    with_asset = bool(assets) and rng.uniform() < asset_share
    objects, taken = [], []
    for i in range(n_objects):
        asset = assets[int(rng.integers(len(assets)))] if with_asset and i == 0 else None
        size = float(rng.uniform(*asset.height_m)) if asset else float(rng.uniform(0.6, 1.4))
        for _ in range(50):
            xy = rng.uniform(-3.0, 3.0, 2)
            if all(np.hypot(*(xy - t)) > 1.6 for t in taken):
                break
        taken.append(xy)
        texture = reference_dir / f"look_{i}.png"
        look = make_reference(rng)
        if asset is None:
            Image.fromarray(look).save(texture)
        picture = asset is not None or rng.uniform() < 0.5
        heading = float(rng.uniform(0, 2 * math.pi))
        moving = rng.uniform() < 0.35
        velocity = tuple(float(v) for v in rng.uniform(-0.08, 0.08, 2)) + (0.0,) if moving else (0.0, 0.0, 0.0)
        if asset is not None:  # it walks (or drives) forward: glTF fronts face -Y turned by the heading
            velocity = (math.sin(heading) * asset.speed_m_per_frame, -math.cos(heading) * asset.speed_m_per_frame, 0.0)
        objects.append(SceneObject(
            name=f"Prop{i + 1}" if asset is None else "Character",
            primitive=PRIMITIVES[int(rng.integers(len(PRIMITIVES)))] if asset is None else "asset",
            location=(float(xy[0]), float(xy[1]), size / 2), size=size,
            reference_png=reference_dir / f"picture_{i}.png" if picture else texture,
            velocity=velocity, asset=asset.file if asset else None, heading_rad=heading,
            hue_shift=float(rng.uniform(0, 1)) if rng.uniform() < 0.5 else 0.0,
            picture_reference=picture, texture_png=texture if asset is None else None,
            extent=asset.extent if asset else 1.0,
        ))
    walls = [w for w, share in (("WallBack", 0.6), ("WallLeft", 0.5), ("WallRight", 0.25)) if rng.uniform() < share]
    openings = {w: (float(rng.uniform(-3, 3)), float(rng.uniform(1.0, 2.0))) for w in walls if rng.uniform() < 0.3}
    lights, world = plan_lights(rng)
    tint = rng.uniform(-0.08, 0.08, 3)
    stairs = (float(rng.uniform(-4, 4)), float(rng.uniform(3, 5)), float(rng.uniform(0, 2 * math.pi))) \
        if rng.uniform() < 0.25 else None
    clutter = []
    for _ in range(int(rng.integers(0, 4))):
        xy = rng.uniform(-5, 5, 2)
        if all(np.hypot(*(xy - t)) > 1.2 for t in taken):
            clutter.append((float(xy[0]), float(xy[1]), float(rng.uniform(0.2, 0.6))))
    return ProceduralScene(
        objects=objects, subject=objects[0 if with_asset else int(rng.integers(n_objects))].name,
        frame_start=1, frame_end=frames,
        sun_rotation=lights[0].rotation, sun_energy=lights[0].energy, world_colour=world, walls=walls,
        lights=lights, set_colour=tuple(float(np.clip(c + t, 0, 1)) for c, t in zip(SET_COLOUR, tint, strict=True)),
        openings=openings, stairs=stairs, clutter=clutter,
    )
