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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from cinepregen_addon.core.camera_pose import CameraPose, euler_to_matrix

HELDOUT_SEED_OFFSET = 1_000_000
MOVE_KINDS = ("static", "dolly", "truck", "pedestal", "pan", "tilt", "orbit", "crane", "zoom", "dolly_zoom", "follow")
SHOT_SIZE_CHOICES = ("ELS", "LS", "LS", "FS", "FS", "MFS", "MFS", "MS", "MCU", "CU")  # repeats weight the choice
ANGLE_CHOICES = ("EYE_LEVEL", "EYE_LEVEL", "HIGH", "LOW", "OVERHEAD", "DUTCH")
LENS_RANGE_MM = (18.0, 135.0)  # drawn log-uniformly
MIN_CAMERA_HEIGHT_M = 0.15  # framing from below never puts the camera under the floor


@dataclass
class DatasetConfig:
    shots: int = 200
    heldout_shots: int = 16
    frames: int = 24
    resolution: tuple[int, int] = (256, 144)
    seed: int = 0
    target_samples: int = 8
    asset_share: float = 0.5  # share of scenes with a glTF character, vehicle or prop as the subject
    asset_dir: str | None = None  # the asset pack (default: backend.training.assets.default_asset_dir())


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


DOLLY_REACH = 0.6  # a dolly toward the subject travels at most this share of the way to it


def _stop_short_of(move: dict, pose: CameraPose, subject: Sequence[float]) -> None:
    """Shorten a dolly in toward ``subject`` to DOLLY_REACH of the subject's depth along the camera's view (what
    ``sample_move`` checks a dolly zoom against): the drawn distances suit wide shots, and a close-up framed 0.4 m
    away would dolly through the subject (a dolly zoom refuses to). Along the view, not straight at the subject: a
    close-up aims above the subject's middle, and from low down its depth is a third of its distance."""
    view = -euler_to_matrix(pose.rotation_euler)[:, 2]
    depth = float(np.dot(np.subtract(subject, pose.location), view))
    move["params"]["distance"] = min(move["params"]["distance"], DOLLY_REACH * depth)


def build_shot(out: Path, seed: int, config: DatasetConfig, heldout: bool = False) -> Path:
    """Plan, build and render one shot into ``out`` (bundle with clay pass + target clip); returns ``out``.

    Held-out shots draw their characters from ``HELDOUT_ASSETS``, which training shots never use."""
    import bpy

    from backend.training.assets import HELDOUT_ASSETS, TRAIN_ASSETS
    from backend.training.scene_plan import plan_scene
    from backend.training.scenes import build_scene, render_reference_pictures, render_target_clip
    from cinepregen_addon.core.camera_moves import MoveSpec, sample_move
    from cinepregen_addon.core.framing import frame_subject
    from cinepregen_addon.keyframes import write_camera_samples
    from cinepregen_addon.render_passes import ShotRenderSpec, render_shot_bundle

    rng = np.random.default_rng(seed)
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    asset_dir = Path(config.asset_dir) if config.asset_dir else None
    assets = (HELDOUT_ASSETS if heldout else TRAIN_ASSETS) if asset_dir is not None else ()
    plan = plan_scene(rng, work / "references", config.frames, assets=assets, asset_share=config.asset_share)
    scene = build_scene(plan, asset_dir)
    render_reference_pictures(scene, plan, rng)
    subject = next(o for o in plan.objects if o.name == plan.subject)
    moving = [o for o in plan.objects if any(o.velocity)]

    lens = float(np.exp(rng.uniform(*np.log(LENS_RANGE_MM))))
    shot_size = SHOT_SIZE_CHOICES[int(rng.integers(len(SHOT_SIZE_CHOICES)))]
    close = shot_size in ("MS", "MCU", "CU")  # centred on the upper body, as framing charts have it
    pose = frame_subject(
        (subject.location[0], subject.location[1], subject.size * (0.75 if close else 0.5)),
        subject.size * subject.extent,
        shot_size,
        ANGLE_CHOICES[int(rng.integers(len(ANGLE_CHOICES)))],
        lens,
        aspect=config.resolution[0] / config.resolution[1],
        heading_deg=float(rng.uniform(-50, 50)),
    )
    if pose.location[2] < MIN_CAMERA_HEIGHT_M:
        pose = replace(pose, location=(*pose.location[:2], MIN_CAMERA_HEIGHT_M))
    kinds = MOVE_KINDS if moving else MOVE_KINDS[:-1]
    kind = kinds[int(rng.integers(len(kinds)))]
    move = random_move(rng, kind)
    subject_point = [subject.location[0], subject.location[1], subject.size / 2]
    if kind in ("orbit", "crane", "dolly_zoom"):
        move["params"]["target"] = subject_point
    if kind in ("dolly", "dolly_zoom"):
        _stop_short_of(move, pose, subject_point)
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
    write_camera_samples(scene, camera, samples)

    spec = ShotRenderSpec(
        name=f"shot_{seed}",
        camera_name=camera.name,
        frame_start=plan.frame_start,
        frame_end=plan.frame_end,
        seed=seed,
        resolution=config.resolution,
        include_clay=True,
        shot={"move": move, "lens_mm": lens, "scene_seed": seed,
              "subject_asset": subject.asset, "lights": [light.kind for light in plan.lights]},
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
    if config.asset_dir is None:
        from backend.training.assets import default_asset_dir

        found = default_asset_dir()
        config = replace(config, asset_dir=str(found) if found else None)
    manifest = json.loads(json.dumps({"format": 2, **asdict(config)}))  # as stored: tuples become lists
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        for key in ("seed", "frames", "resolution", "asset_share"):
            if previous.get(key) != manifest[key]:
                raise ValueError(f"{out} holds a dataset built with {key}={previous.get(key)}, not {manifest[key]}")
    manifest_path.write_text(json.dumps(manifest, indent=2))
    jobs = [(out / "heldout" / f"shot_{i:05d}", config.seed + HELDOUT_SEED_OFFSET + i, True)
            for i in range(config.heldout_shots)]
    jobs += [(out / "train" / f"shot_{i:05d}", config.seed + i, False) for i in range(config.shots)]
    for done, (folder, seed, heldout) in enumerate(jobs, start=1):
        if not (folder / "target.npz").exists():
            build_shot(folder, seed, config, heldout)
        if progress is not None:
            progress(done, len(jobs))
    return manifest


def list_shots(data: Path, split: str) -> list[Path]:
    folders = sorted(p for p in (data / split).glob("shot_*") if (p / "target.npz").exists())
    if not folders:
        raise FileNotFoundError(f"no {split} shots in {data}: build them with `cinepregen dataset build --out {data}`")
    return folders
