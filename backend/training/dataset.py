"""``cinepregen dataset build``: procedural shots rendered into bundles, each with its Cycles target clip.

Layout of a dataset folder::

    manifest.json                     seed, counts, resolution, frames
    train/shot_00000/bundle/          a shot bundle (the project's own pass renderer)
    train/shot_00000/target.npz       "frames": (F, H, W, 3) uint8, the textured Cycles render
    train/shot_00000/references/      the looks worn by the objects (bound into the bundle)
    heldout/shot_00000/...            the fixed held-out scenes, never trained on

Every scene is planned from ``seed + index`` (held-out scenes from a disjoint seed range), so any one shot can be
rebuilt on its own, and an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HELDOUT_SEED_OFFSET = 1_000_000
MOVE_KINDS = ("static", "dolly", "truck", "pedestal", "pan", "tilt", "orbit", "crane", "zoom", "dolly_zoom", "follow")
SHOT_SIZE_CHOICES = ("LS", "FS", "MFS")
ANGLE_CHOICES = ("EYE_LEVEL", "HIGH", "LOW")


@dataclass
class DatasetConfig:
    shots: int = 200
    heldout_shots: int = 16
    frames: int = 16
    resolution: tuple[int, int] = (128, 72)
    seed: int = 0
    target_samples: int = 8


def random_move(rng: np.random.Generator, kind: str) -> dict:
    """A move spec dict with parameters in a range that keeps the subject in frame."""
    params = {
        "static": {},
        "dolly": {"distance": float(rng.uniform(-2.0, 2.0))},
        "truck": {"distance": float(rng.uniform(-2.0, 2.0))},
        "pedestal": {"distance": float(rng.uniform(-1.0, 1.0))},
        "pan": {"angle_deg": float(rng.uniform(-25, 25))},
        "tilt": {"angle_deg": float(rng.uniform(-10, 10))},
        "orbit": {"angle_deg": float(rng.uniform(-60, 60))},
        "crane": {"rise": float(rng.uniform(0.5, 2.5))},
        "zoom": {"lens_end_mm": float(rng.uniform(20, 80))},
        "dolly_zoom": {"distance": float(rng.uniform(-1.5, 1.5))},
        "follow": {},
    }[kind]
    spec = {"kind": kind, "params": params, "easing": ("linear", "ease_in_out", "smooth")[int(rng.integers(3))]}
    if rng.uniform() < 0.2:
        spec["shake"] = {
            "amplitude_m": float(rng.uniform(0.005, 0.03)),
            "rotation_deg": float(rng.uniform(0.1, 0.6)),
            "seed": int(rng.integers(1 << 16)),
        }
    return spec


def build_shot(out: Path, seed: int, config: DatasetConfig) -> Path:
    """Plan, build and render one shot into ``out`` (bundle + target clip); returns ``out``."""
    import bpy

    from backend.training.scenes import build_scene, plan_scene, render_target_clip
    from cinepregen_addon.core.camera_moves import MoveSpec, sample_move
    from cinepregen_addon.core.framing import frame_subject
    from cinepregen_addon.operators import write_camera_samples
    from cinepregen_addon.render_passes import ShotRenderSpec, render_shot_bundle

    rng = np.random.default_rng(seed)
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    plan = plan_scene(rng, work / "references", config.frames)
    scene = build_scene(plan)
    subject = next(o for o in plan.objects if o.name == plan.subject)
    moving = [o for o in plan.objects if any(o.velocity)]

    lens = float(rng.uniform(24, 60))
    pose = frame_subject(
        subject.location,
        subject.size,
        SHOT_SIZE_CHOICES[int(rng.integers(len(SHOT_SIZE_CHOICES)))],
        ANGLE_CHOICES[int(rng.integers(len(ANGLE_CHOICES)))],
        lens,
        aspect=config.resolution[0] / config.resolution[1],
        heading_deg=float(rng.uniform(-50, 50)),
    )
    kinds = MOVE_KINDS if moving else MOVE_KINDS[:-1]
    kind = kinds[int(rng.integers(len(kinds)))]
    move = random_move(rng, kind)
    if kind in ("orbit", "crane", "dolly_zoom"):
        move["params"]["target"] = list(subject.location)
    target_path = None
    if kind == "follow":
        followed = moving[int(rng.integers(len(moving)))]
        target_path = [
            tuple(c + v * i for c, v in zip(followed.location, followed.velocity, strict=True))
            for i in range(config.frames)
        ]
    samples = sample_move(MoveSpec.from_dict(move), pose, plan.frame_start, plan.frame_end, target_path=target_path)

    camera_data = bpy.data.cameras.new("ShotCamera")
    camera = bpy.data.objects.new("ShotCamera", camera_data)
    scene.collection.objects.link(camera)
    write_camera_samples(camera, samples)

    spec = ShotRenderSpec(
        name=f"shot_{seed}",
        camera_name=camera.name,
        frame_start=plan.frame_start,
        frame_end=plan.frame_end,
        seed=seed,
        resolution=config.resolution,
        shot={"move": move, "lens_mm": lens, "scene_seed": seed},
    )
    render_shot_bundle(scene, spec, work / "bundle")
    target = render_target_clip(
        scene, camera.name, plan.frame_start, plan.frame_end, config.resolution, samples=config.target_samples
    )
    np.savez_compressed(work / "target.npz", frames=target)
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    return out


def build_dataset(out: Path, config: DatasetConfig, progress=None) -> dict:
    """Build (or finish building) the train and held-out splits; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(json.dumps({"format": 1, **asdict(config)}))  # as stored: tuples become lists
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        for key in ("seed", "frames", "resolution"):
            if previous.get(key) != manifest[key]:
                raise ValueError(f"{out} holds a dataset built with {key}={previous.get(key)}, not {manifest[key]}")
    manifest_path.write_text(json.dumps(manifest, indent=2))
    jobs = [
        (out / "heldout" / f"shot_{i:05d}", config.seed + HELDOUT_SEED_OFFSET + i) for i in range(config.heldout_shots)
    ]
    jobs += [(out / "train" / f"shot_{i:05d}", config.seed + i) for i in range(config.shots)]
    for done, (folder, seed) in enumerate(jobs, start=1):
        if not (folder / "target.npz").exists():
            build_shot(folder, seed, config)
        if progress is not None:
            progress(done, len(jobs))
    return manifest


def list_shots(data: Path, split: str) -> list[Path]:
    folders = sorted(p for p in (data / split).glob("shot_*") if (p / "target.npz").exists())
    if not folders:
        raise FileNotFoundError(f"no {split} shots in {data}: build them with `cinepregen dataset build --out {data}`")
    return folders
